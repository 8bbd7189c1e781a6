//! The files slot: each tenant's files rendered from `templates/`, with a mark of whose they are.

pub mod local;

//! The files slot: each tenant's files rendered from `templates/`, with a mark of whose they are.

pub mod local;

use crate::model::kind::KindFacts;
use crate::model::resource::Kind;

/// A file rendered for a tenant.
const FILE: KindFacts = KindFacts {
    resource_of: Some(|a| format!("file {}", a.str("path"))),
    live_name_of: Some(|a| format!("file {}", a.str("path"))),
    purge_turn: Some(1),
    generated: true,
    ..KindFacts::plain(Kind::FILE, "file")
};
inventory::submit!(FILE);

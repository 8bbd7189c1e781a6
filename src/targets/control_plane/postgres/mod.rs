//! The control plane in the admin schema of the Postgres server: registry, memberships, flags,
//! quotas and the outbox.

pub mod control;

pub use control::PgControl;

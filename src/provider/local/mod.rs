//! The local target: everything under one folder (`.tenant-reconcile/` by default), on
//! SQLite through sqlx, so the whole tool works with no server.
//!
//! ```text
//! .tenant-reconcile/
//!   control.sqlite        registry, owner memberships, flags, quotas, events outbox
//!   catalog.sqlite        login roles and data slices (what Postgres keeps in its catalog)
//!   data/<slug>.sqlite    each tenant's own database: migrations and seed data
//!   buckets/<slug>/       each tenant's bucket
//! ```
//!
//! SQLite has no schemas, logins or row-level security, so every isolation mode gets its own
//! database file here; the mode is recorded and a change of it is an update. The Postgres
//! target gives each mode its real meaning.

mod bucket;
mod control;
mod data;
mod outbox;
mod smoke;
pub mod sqlite;

pub use bucket::LocalBuckets;
pub use control::LocalControl;
pub use data::LocalData;

//! Each tenant's data on the Postgres server: a login role (password derived, sent as a SCRAM
//! verifier) and an isolated slice (rows under row-level security, a schema, or a database),
//! migrated and seeded, with a catalog in the admin schema that refresh reads in a constant
//! number of queries for the whole fleet. `reach` is what a tenant's role reaches beyond its
//! slice, read for the fleet in one query and taken back.
//!
//! Identifiers are built only from checked slugs and configured prefixes (plain names,
//! checked at validate time and quoted); every value is a bound parameter.

pub mod data;
pub mod reach;
pub mod smoke;

pub use data::PgData;

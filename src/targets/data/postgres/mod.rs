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

use crate::clients::postgres::PgServer;
use crate::model::tenant::Isolation;
use crate::slug::Slug;
use crate::targets::data::Naming;

/// The URL a tenant's role connects with: its own database, or the admin database with its
/// schema (or the shared schema) first on the search path.
pub fn tenant_url(
    server: &PgServer,
    naming: &Naming,
    slug: &Slug,
    isolation: Isolation,
    role: &str,
    password: &str,
) -> String {
    let (host, port, admin_db) = server.address();
    // Roles, passwords (hex) and names are plain identifiers: nothing needs escaping.
    let base = format!("postgresql://{role}:{password}@{host}:{port}");
    match isolation {
        Isolation::Database => format!("{base}/{}", naming.database(slug)),
        Isolation::Schema => format!(
            "{base}/{admin_db}?options=-csearch_path%3D{}",
            naming.schema(slug)
        ),
        Isolation::Shared => format!(
            "{base}/{admin_db}?options=-csearch_path%3D{}",
            naming.shared_schema
        ),
    }
}

//! The Postgres target: the control plane and the tenants' data on a PostgreSQL server.
//!
//! - `control`: registry, memberships, flags, quotas and the outbox in the admin schema.
//! - `data`: per tenant a login role (password derived, sent as a SCRAM verifier) and an
//!   isolated slice (rows under row-level security, a schema, or a database), migrated and
//!   seeded, with a catalog in the admin schema that refresh reads in a constant number of
//!   queries for the whole fleet.
//! - `reach`: what a tenant's role reaches beyond its slice (attributes, memberships, rights
//!   and ownerships anywhere on the server), read for the fleet in one query and taken back.
//! - `server`: connection options, the pool, identifier quoting, retries with backoff.
//!
//! Identifiers are built only from checked slugs and configured prefixes (plain names,
//! checked at validate time and quoted); every value is a bound parameter.

mod control;
mod control_together;
mod data;
mod outbox;
mod reach;
mod scram;
pub mod server;
mod smoke;

pub use control::PgControl;
pub use data::PgData;
pub use server::PgServer;

use sqlx::{Executor as _, PgConnection, PgPool};
use tokio::sync::OnceCell;

use crate::provider::ProviderError;

/// Serialises schema changes to tenant-reconcile's own tables across concurrent runs
/// (`CREATE TABLE IF NOT EXISTS` is not safe against a concurrent twin).
pub(crate) async fn lock_ddl(tx: &mut PgConnection) -> Result<(), ProviderError> {
    advisory_xact_lock(tx, "tenant-reconcile/ddl").await
}

/// Runs tenant-reconcile's own `ddl` (idempotent `CREATE … IF NOT EXISTS`) once per run,
/// `done` remembering that it ran. Twins racing here both run it, one after the other.
pub(crate) async fn ensure_once(
    pool: &PgPool,
    done: &OnceCell<()>,
    ddl: &str,
    what: &str,
) -> Result<(), ProviderError> {
    // One caller creates them; the tenants that start beside it wait for it, rather than
    // each running the same statements again behind the DDL lock.
    done.get_or_try_init(|| async {
        let mut tx = pool.begin().await.map_err(ProviderError::sql("begin"))?;
        lock_ddl(tx.as_mut()).await?;
        tx.as_mut()
            .execute(ddl)
            .await
            .map_err(ProviderError::sql(format!("create {what}")))?;
        tx.commit().await.map_err(ProviderError::sql("commit"))
    })
    .await
    .map(drop)
}

/// The relations of one schema, as a FROM clause naming the schema `n` and its relations
/// `c`, for queries that pick the schema by `n.nspname`. They are found through `pg_depend`,
/// by index: `pg_class` has no index on `relnamespace`, and the admin database holds every
/// schema-mode tenant's relations, so a per-tenant scan of `pg_class` costs the whole fleet.
pub(crate) const RELATIONS_OF_SCHEMA: &str = "pg_namespace n
    JOIN pg_depend dep ON dep.refclassid = 'pg_namespace'::regclass AND dep.refobjid = n.oid
      AND dep.classid = 'pg_class'::regclass AND dep.objsubid = 0 AND dep.deptype = 'n'
    JOIN pg_class c ON c.oid = dep.objid";

/// A transaction-scoped advisory lock on `name`, released at commit or rollback.
pub(crate) async fn advisory_xact_lock(
    tx: &mut PgConnection,
    name: &str,
) -> Result<(), ProviderError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(ProviderError::sql(format!("take the lock {name}")))?;
    Ok(())
}

//! The Postgres server the postgres targets and the postgres state backend share: the `postgres`
//! block that says where it is and how what is made on it is named, connections and retries
//! (`server`), SCRAM verifiers (`scram`), and the statements every user of the admin schema needs.

pub mod scram;
pub mod server;

pub use server::PgServer;

/// PostgreSQL's identifier limit (NAMEDATALEN - 1). Longer names are silently truncated by
/// the server, which could make two tenants share one role, so they are refused instead.
pub const MAX_IDENT_BYTES: usize = 63;

/// Whether `name` is a plain lower-case identifier: `[a-z_][a-z0-9_]*`, at most 63 bytes.
/// Only such names are ever put into SQL, and always double-quoted.
pub fn is_plain_ident(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && name.len() <= MAX_IDENT_BYTES
}

use serde::Deserialize;
use sqlx::{Executor as _, PgConnection, PgPool};
use tokio::sync::OnceCell;

use crate::clients::error::ProviderError;
use crate::clients::SettingProblem;

/// The `postgres` block: the server the postgres targets and state backend use.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// A connection URL. Better left out: `url_env` keeps credentials out of the repo.
    #[serde(default)]
    pub url: Option<String>,
    /// The environment variable holding the URL when `url` is not set.
    #[serde(default = "default_url_env")]
    pub url_env: String,
    /// The admin schema: control-plane tables, the data catalog and the state.
    #[serde(default = "default_pg_schema")]
    pub schema: String,
    /// Tenant login roles are `<role_prefix><slug>` (with `-` as `_`).
    #[serde(default = "default_tenant_prefix")]
    pub role_prefix: String,
    /// `isolation = schema` tenants get the schema `<schema_prefix><slug>`.
    #[serde(default = "default_tenant_prefix")]
    pub schema_prefix: String,
    /// `isolation = database` tenants get the database `<database_prefix><slug>`.
    #[serde(default = "default_tenant_prefix")]
    pub database_prefix: String,
    /// `isolation = shared` tenants' rows live in this schema under row-level security.
    #[serde(default = "default_shared_schema")]
    pub shared_schema: String,
    /// Connections to the server at most (apply's `--parallelism` is bounded by it too).
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// A tenant of at least this many rows (the planner's estimate) moves between servers by
    /// logical replication, writable while its data is copied, where both servers allow it;
    /// a smaller one by a copy under a fence, its writes paused for the copy.
    #[serde(default = "default_replicate_moves_from_rows")]
    pub replicate_moves_from_rows: u64,
}

impl PostgresConfig {
    /// What does not hold in the server's own settings; the names of tenants' slices are the
    /// data slot's to check (`targets::data::check_naming`).
    pub fn problems(&self) -> Vec<SettingProblem> {
        let mut problems = Vec::new();
        if self.max_connections == 0 {
            problems.push(SettingProblem {
                key: "max_connections",
                message: "max_connections must be at least 1".into(),
                hint: None,
            });
        }
        problems
    }
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: None,
            url_env: default_url_env(),
            schema: default_pg_schema(),
            role_prefix: default_tenant_prefix(),
            schema_prefix: default_tenant_prefix(),
            database_prefix: default_tenant_prefix(),
            shared_schema: default_shared_schema(),
            max_connections: default_max_connections(),
            replicate_moves_from_rows: default_replicate_moves_from_rows(),
        }
    }
}

fn default_url_env() -> String {
    "DATABASE_URL".into()
}

fn default_pg_schema() -> String {
    "tenant_reconcile".into()
}

fn default_tenant_prefix() -> String {
    "tenant_".into()
}

fn default_shared_schema() -> String {
    "tenants_shared".into()
}

fn default_max_connections() -> u32 {
    10
}

/// About a third of a second of writes paused for a copy under a fence.
fn default_replicate_moves_from_rows() -> u64 {
    100_000
}

/// Serialises schema changes to tenant-reconcile's own tables across concurrent runs
/// (`CREATE TABLE IF NOT EXISTS` is not safe against a concurrent twin).
pub(crate) async fn lock_ddl(tx: &mut PgConnection) -> Result<(), ProviderError> {
    advisory_xact_lock(tx, "tenant-reconcile/ddl").await
}

/// Runs tenant-reconcile's own `ddl` (idempotent `CREATE … IF NOT EXISTS`) once per run,
/// `done` remembering that it ran, and only when the admin schema `schema` (quoted) has not
/// had this very text run already: each text run is recorded there by its digest. Even an
/// `IF NOT EXISTS` statement takes its table's lock before it looks (`CREATE INDEX` a share
/// lock, `ALTER TABLE` an exclusive one), so running it on every start made each run wait
/// for any transaction writing those tables (another run's, a relay's) and, queued behind
/// an exclusive lock, made the product's own readers of the registry wait too. Twins racing
/// here both run it, one after the other.
pub(crate) async fn ensure_once(
    pool: &PgPool,
    done: &OnceCell<()>,
    schema: &str,
    ddl: &str,
    what: &str,
) -> Result<(), ProviderError> {
    use sha2::{Digest, Sha256};
    let digest = format!("{:x}", Sha256::digest(ddl.as_bytes()));
    // One caller creates them; the tenants that start beside it wait for it, rather than
    // each running the same statements again behind the DDL lock.
    done.get_or_try_init(|| async {
        let (known,): (bool,) = sqlx::query_as("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("{schema}.ddl_applied"))
            .fetch_one(pool)
            .await
            .map_err(ProviderError::sql(format!("look for {what}")))?;
        if known {
            // The schema is a checked, quoted identifier.
            let applied: Option<(i32,)> = sqlx::query_as(&format!(
                "SELECT 1 FROM {schema}.ddl_applied WHERE digest = $1"
            ))
            .bind(&digest)
            .fetch_optional(pool)
            .await
            .map_err(ProviderError::sql(format!("look for {what}")))?;
            if applied.is_some() {
                return Ok(());
            }
        }
        let mut tx = pool.begin().await.map_err(ProviderError::sql("begin"))?;
        lock_ddl(tx.as_mut()).await?;
        tx.as_mut()
            .execute(ddl)
            .await
            .map_err(ProviderError::sql(format!("create {what}")))?;
        tx.as_mut()
            .execute(
                format!(
                    "CREATE TABLE IF NOT EXISTS {schema}.ddl_applied (
                       digest text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                .as_str(),
            )
            .await
            .map_err(ProviderError::sql(format!("record {what}")))?;
        sqlx::query(&format!(
            "INSERT INTO {schema}.ddl_applied (digest) VALUES ($1) ON CONFLICT DO NOTHING"
        ))
        .bind(&digest)
        .execute(tx.as_mut())
        .await
        .map_err(ProviderError::sql(format!("record {what}")))?;
        tx.commit().await.map_err(ProviderError::sql("commit"))
    })
    .await
    .map(drop)
}

/// The joins from a schema `n` to its relations `c`, through `pg_depend`, by index:
/// `pg_class` has no index on `relnamespace`, and the admin database holds every
/// schema-mode tenant's relations, so a per-tenant scan of `pg_class` costs the whole fleet.
macro_rules! relations_of_n {
    () => {
        "JOIN pg_depend dep ON dep.refclassid = 'pg_namespace'::regclass AND dep.refobjid = n.oid
      AND dep.classid = 'pg_class'::regclass AND dep.objsubid = 0 AND dep.deptype = 'n'
    JOIN pg_class c ON c.oid = dep.objid"
    };
}

/// The relations of one schema, as a FROM clause naming the schema `n` and its relations
/// `c`, for queries that pick the schema by `n.nspname` (see [`RELATIONS_OF_N`]).
pub(crate) const RELATIONS_OF_SCHEMA: &str = concat!("pg_namespace n\n    ", relations_of_n!());

/// The joins to the relations `c` of a schema `n` the query names otherwise.
pub(crate) const RELATIONS_OF_N: &str = relations_of_n!();

/// That the schema `n` is not the system's (its catalogs, toast and temporary schemas).
pub(crate) const NOT_SYSTEM_SCHEMA: &str =
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'";

/// Transaction-scoped advisory locks on `names`, in one statement, taken in the order of
/// their names: two sessions whose sets overlap never wait on each other in a circle.
pub(crate) async fn advisory_xact_locks(
    tx: &mut PgConnection,
    names: &[String],
) -> Result<(), ProviderError> {
    sqlx::query(
        "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0)))
         FROM (SELECT k FROM unnest($1::text[]) AS k ORDER BY k) AS sorted",
    )
    .bind(names)
    .execute(&mut *tx)
    .await
    .map_err(ProviderError::sql(format!(
        "take the locks {}",
        names.join(", ")
    )))?;
    Ok(())
}

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

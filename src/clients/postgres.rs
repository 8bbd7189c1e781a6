//! The `postgres` block: where the Postgres server is, and how what is made on it is named.

use serde::Deserialize;

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

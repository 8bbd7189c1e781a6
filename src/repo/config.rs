//! `tenant-reconcile.hcl`: which state backend and which targets a repo uses.
//!
//! The file is optional. Without it everything goes to the local target under
//! `.tenant-reconcile/`, which needs no server.

use serde::Deserialize;

use super::hcl_file;
use crate::diagnostic::Diagnostic;
use crate::naming::is_plain_ident;

pub const CONFIG_FILE: &str = "tenant-reconcile.hcl";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub targets: TargetsConfig,
    #[serde(default)]
    pub local: LocalConfig,
    /// Where per-tenant rendered files are written (relative to the repo root).
    #[serde(default = "default_output_dir")]
    pub output_dir: String,
    /// A file holding the master key that tenant credentials are derived from.
    #[serde(default)]
    pub master_key_file: Option<String>,
    /// The folder of ordered SQL migrations applied to every tenant's data.
    #[serde(default = "default_migrations_dir")]
    pub migrations_dir: String,
    #[serde(default)]
    pub safety: SafetyConfig,
    #[serde(default)]
    pub postgres: PostgresConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state: StateConfig::default(),
            targets: TargetsConfig::default(),
            local: LocalConfig::default(),
            output_dir: default_output_dir(),
            master_key_file: None,
            migrations_dir: default_migrations_dir(),
            safety: SafetyConfig::default(),
            postgres: PostgresConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    #[serde(default = "default_local")]
    pub backend: String,
    /// For the local backend: the state file, relative to the repo root.
    #[serde(default)]
    pub path: Option<String>,
    /// For shared backends (postgres): which state this repo uses, so several repos or
    /// environments can keep theirs side by side. Each name has its own lock.
    #[serde(default = "default_state_name")]
    pub name: String,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            backend: default_local(),
            path: None,
            name: default_state_name(),
        }
    }
}

/// The `postgres` block: the server the postgres targets and state backend use.
#[derive(Debug, Clone, Deserialize)]
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

/// Which target serves each group of resources.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetsConfig {
    /// Registry, owner membership, flags, quotas and the events outbox.
    #[serde(default = "default_local")]
    pub control_plane: String,
    /// Each tenant's login role, data slice, migrations and seed data.
    #[serde(default = "default_local")]
    pub data: String,
    /// Each tenant's bucket.
    #[serde(default = "default_local")]
    pub buckets: String,
}

impl Default for TargetsConfig {
    fn default() -> Self {
        TargetsConfig {
            control_plane: default_local(),
            data: default_local(),
            buckets: default_local(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// The local target's folder, relative to the repo root.
    #[serde(default = "default_local_dir")]
    pub dir: String,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            dir: default_local_dir(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyConfig {
    /// Plan and apply refuse when more than this share of the recorded tenants have no
    /// file any more (and more than one is missing), unless told `--allow-missing-tenants`.
    #[serde(default = "default_max_missing_share")]
    pub max_missing_share: f64,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        SafetyConfig {
            max_missing_share: default_max_missing_share(),
        }
    }
}

fn default_local() -> String {
    "local".into()
}
fn default_state_name() -> String {
    "default".into()
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
fn default_local_dir() -> String {
    ".tenant-reconcile".into()
}
fn default_output_dir() -> String {
    ".tenant-reconcile/rendered".into()
}
fn default_migrations_dir() -> String {
    "migrations".into()
}
fn default_max_missing_share() -> f64 {
    0.2
}

pub fn parse(source: &str) -> Result<Config, Vec<Diagnostic>> {
    let config: Config = hcl_file::parse(CONFIG_FILE, source).map_err(|d| vec![d])?;
    let mut problems = Vec::new();
    for (field, value, known) in [
        (
            "state.backend",
            &config.state.backend,
            &["local", "postgres"][..],
        ),
        (
            "targets.control_plane",
            &config.targets.control_plane,
            &["local", "postgres"],
        ),
        ("targets.data", &config.targets.data, &["local", "postgres"]),
        ("targets.buckets", &config.targets.buckets, &["local"]),
    ] {
        if !known.contains(&value.as_str()) {
            let key = field.rsplit('.').next().unwrap_or(field);
            let (line, col) = hcl_file::locate_key(source, key).unwrap_or((1, 1));
            problems.push(
                Diagnostic::new(CONFIG_FILE, format!("unknown target {value:?}"))
                    .at(line, col)
                    .field(field)
                    .hint(format!("{field} can be: {}", known.join(", "))),
            );
        }
    }
    let pg = &config.postgres;
    for (key, value) in [
        ("schema", &pg.schema),
        ("role_prefix", &pg.role_prefix),
        ("schema_prefix", &pg.schema_prefix),
        ("database_prefix", &pg.database_prefix),
        ("shared_schema", &pg.shared_schema),
    ] {
        if !is_plain_ident(value) || value.starts_with("pg_") {
            let (line, col) = hcl_file::locate_key(source, key).unwrap_or((1, 1));
            problems.push(
                Diagnostic::new(CONFIG_FILE, format!("{value:?} is not a plain identifier"))
                    .at(line, col)
                    .field(format!("postgres.{key}"))
                    .hint("use lower-case letters, digits and _, starting with a letter or _, not pg_"),
            );
        }
    }
    if pg.schema == pg.shared_schema {
        let (line, col) = hcl_file::locate_key(source, "shared_schema").unwrap_or((1, 1));
        problems.push(
            Diagnostic::new(CONFIG_FILE, "shared_schema must differ from schema")
                .at(line, col)
                .field("postgres.shared_schema")
                .hint("the admin schema holds the registry; shared tenants' rows live apart"),
        );
    }
    if pg.max_connections == 0 {
        problems.push(
            Diagnostic::new(CONFIG_FILE, "max_connections must be at least 1")
                .field("postgres.max_connections"),
        );
    }
    if !(0.0..=1.0).contains(&config.safety.max_missing_share) {
        problems.push(
            Diagnostic::new(CONFIG_FILE, "max_missing_share must be between 0 and 1")
                .field("safety.max_missing_share"),
        );
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_means_local_everything() {
        let c = parse("").unwrap();
        assert_eq!(c.state.backend, "local");
        assert_eq!(c.local.dir, ".tenant-reconcile");
    }

    #[test]
    fn blocks_override_defaults() {
        let c =
            parse("local {\n  dir = \"x\"\n}\nsafety {\n  max_missing_share = 0.5\n}\n").unwrap();
        assert_eq!(c.local.dir, "x");
        assert_eq!(c.safety.max_missing_share, 0.5);
    }

    #[test]
    fn postgres_names_must_be_plain_and_distinct() {
        let e = parse(
            "postgres {\n  role_prefix = \"T; drop\"\n  shared_schema = \"tenant_reconcile\"\n}\n",
        )
        .unwrap_err();
        let fields: Vec<_> = e.iter().filter_map(|d| d.field.as_deref()).collect();
        assert_eq!(fields, ["postgres.role_prefix", "postgres.shared_schema"]);
        assert_eq!(e[0].line, 2);
    }

    #[test]
    fn unknown_target_is_an_error() {
        let e = parse("targets {\n  data = \"mongo\"\n}\n").unwrap_err();
        assert_eq!(e[0].field.as_deref(), Some("targets.data"));
        assert_eq!(e[0].line, 2);
    }
}

//! The database names a tenant's slice gets: its login role, its schema or database, and the
//! shared schema and group role of row-level-security tenants.
//!
//! Every name is a configured prefix plus the slug with `-` as `_`. Slugs are `[a-z0-9-]`,
//! start with a letter and never hold `--`, so a tenant name never contains `__`; the shared
//! group role (`<role_prefix>_shared`) uses that to stay clear of every tenant's role.

pub mod local;
pub mod postgres;
pub mod server_blocks;

use serde_json::{json, Value};

use std::path::Path;
use std::sync::Arc;

// The identifier rules are the Postgres client's; the names built from them are this slot's.
pub use crate::clients::postgres::{is_plain_ident, MAX_IDENT_BYTES};
use crate::clients::postgres::{PgServer, PostgresConfig};
use crate::diagnostic::Diagnostic;
use crate::model::attrs::{attrs, Attrs};
use crate::model::kind::{not_counted, KindFacts};
use crate::model::migration::Migration;
use crate::model::resource::Kind;
use crate::model::tenant::Isolation;
use crate::repo::hcl_file::Spans;
use crate::slug::Slug;
use crate::targets::provider::Provider;

/// A tenant's database login as the data target `target` spells it, with the password
/// `password` derives for its role: a connection URL to where its slice is as recorded on
/// Postgres (the file may already ask for another mode), `role=… password=…` on the local
/// target. As `credentials` prints it.
pub fn login(
    target: &str,
    server: &crate::clients::postgres::server::PgServer,
    naming: &Naming,
    slug: &Slug,
    recorded: &std::collections::BTreeMap<crate::model::resource::Key, Attrs>,
    password: &dyn Fn(&str) -> String,
) -> String {
    let role = naming.role(slug);
    let password = password(&role);
    if target != "postgres" {
        return format!("role={role} password={password}");
    }
    let isolation = recorded
        .get(&crate::model::resource::Key::new(Kind::DATABASE))
        .and_then(|a| a.get("isolation"))
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or(Isolation::Schema);
    postgres::tenant_url(server, naming, slug, isolation, &role, &password)
}

#[derive(Debug, Clone)]
pub struct Naming {
    pub role_prefix: String,
    pub schema_prefix: String,
    pub database_prefix: String,
    pub shared_schema: String,
}

impl Default for Naming {
    fn default() -> Self {
        Naming::from(&PostgresConfig::default())
    }
}

impl From<&PostgresConfig> for Naming {
    fn from(c: &PostgresConfig) -> Self {
        Naming {
            role_prefix: c.role_prefix.clone(),
            schema_prefix: c.schema_prefix.clone(),
            database_prefix: c.database_prefix.clone(),
            shared_schema: c.shared_schema.clone(),
        }
    }
}

impl Naming {
    pub fn role(&self, slug: &Slug) -> String {
        format!("{}{}", self.role_prefix, slug.ident())
    }

    pub fn schema(&self, slug: &Slug) -> String {
        format!("{}{}", self.schema_prefix, slug.ident())
    }

    pub fn database(&self, slug: &Slug) -> String {
        format!("{}{}", self.database_prefix, slug.ident())
    }

    /// Where a tenant's data lives: the shared schema, its own schema, or its own database.
    pub fn slice(&self, slug: &Slug, isolation: Isolation) -> String {
        match isolation {
            Isolation::Shared => self.shared_schema.clone(),
            Isolation::Schema => self.schema(slug),
            Isolation::Database => self.database(slug),
        }
    }

    /// The group role that holds the rights on the shared tables; shared tenants are members.
    pub fn shared_group(&self) -> String {
        format!("{}_shared", self.role_prefix)
    }

    /// Whether this tenant's own schema would be one of the fixed schemas.
    pub fn clashes(&self, slug: &Slug, fixed: &[&str]) -> Option<String> {
        let schema = self.schema(slug);
        fixed.contains(&schema.as_str()).then_some(schema)
    }

    /// Every name this tenant would get that is longer than PostgreSQL allows, with its kind.
    pub fn too_long(&self, slug: &Slug) -> Vec<(&'static str, String)> {
        [
            ("role", self.role(slug)),
            ("schema", self.schema(slug)),
            ("database", self.database(slug)),
        ]
        .into_iter()
        .filter(|(_, name)| name.len() > MAX_IDENT_BYTES)
        .collect()
    }
}

/// What `targets.data` can be set to; `local` is the default.
pub const IMPLEMENTATIONS: &[&str] = &["local", "postgres"];

/// The data target `implementation` names (one of [`IMPLEMENTATIONS`]), applying
/// `migrations`: on the Postgres server, or in the local target's folder.
/// With `servers` (the config's `postgres_server` blocks), tenants are placed on those.
pub fn target(
    implementation: &str,
    server: &Arc<PgServer>,
    servers: &[server_blocks::ServerConfig],
    local_dir: &Path,
    migrations: Vec<Migration>,
    naming: Naming,
) -> Arc<dyn Provider> {
    match implementation {
        "postgres" if !servers.is_empty() => Arc::new(postgres::PgServers::new(
            server.clone(),
            servers,
            migrations,
            naming,
        )),
        "postgres" => Arc::new(postgres::PgData::new(server.clone(), migrations, naming)),
        _ => Arc::new(local::LocalData::new(
            local_dir.to_path_buf(),
            migrations,
            naming,
        )),
    }
}

/// What is wrong with how the `postgres` block names the tenants' slices (`role_prefix`,
/// `schema_prefix`, `database_prefix`, `shared_schema`), each problem where it is written.
pub fn check_naming(spans: &Spans, pg: &PostgresConfig) -> Vec<Diagnostic> {
    [
        ("role_prefix", &pg.role_prefix),
        ("schema_prefix", &pg.schema_prefix),
        ("database_prefix", &pg.database_prefix),
        ("shared_schema", &pg.shared_schema),
    ]
    .into_iter()
    .flat_map(|(key, value)| check_identifier(spans, key, value))
    .collect()
}

/// A problem at `postgres.<key>` when `value` is not a plain identifier of ours.
pub fn check_identifier(spans: &Spans, key: &str, value: &str) -> Option<Diagnostic> {
    (!is_plain_ident(value) || value.starts_with("pg_")).then(|| {
        spans
            .problem(
                &format!("postgres.{key}"),
                format!("{value:?} is not a plain identifier"),
            )
            .hint("use lower-case letters, digits and _, starting with a letter or _, not pg_")
    })
}

/// A tenant's data slice as compiled and as every data target reads it back: one shape,
/// so a field named differently on one side could never read as drift forever.
pub fn database_attrs(name: &str, isolation: &str, schema_version: Value, granted: bool) -> Attrs {
    attrs([
        ("name", json!(name)),
        ("isolation", json!(isolation)),
        ("schema_version", schema_version),
        ("access", json!(if granted { "granted" } else { "missing" })),
    ])
}

/// A tenant whose seed data went in (it goes in once).
pub fn seed_attrs() -> Attrs {
    attrs([("applied", json!(true))])
}

/// A tenant's login role.
const ROLE: KindFacts = KindFacts {
    computed: &["password_fingerprint"],
    resource_of: Some(|a| format!("role {}", a.str("name"))),
    purge_turn: Some(6),
    used_through: true,
    ..KindFacts::plain(Kind::ROLE, "role")
};
inventory::submit!(ROLE);

/// The server a tenant's data lives on, when the config names several: decided once, when
/// it is first provisioned, and recorded in the placement catalog. Compared whole: refresh
/// reports a move's replication still running (`replicating_to`) where none is asked for, so
/// the plan stops it.
const PLACEMENT: KindFacts = KindFacts {
    resource_of: Some(|a| format!("placement on {}", a.str("server"))),
    whole_map: true,
    ..KindFacts::plain(Kind::PLACEMENT, "placement")
};
inventory::submit!(PLACEMENT);

/// A tenant's slice: rows in the shared schema, a schema, or a database.
const DATABASE: KindFacts = KindFacts {
    resource_of: Some(|a| match a.str("isolation") {
        "database" => format!("database {}", a.str("name")),
        "shared" => format!("the tenant's rows in the shared schema {}", a.str("name")),
        _ => format!("schema {}", a.str("name")),
    }),
    live_name_of: Some(|a| match a.str("isolation") {
        "database" => format!("database {}", a.str("name")),
        _ => format!("schema {}", a.str("name")),
    }),
    holds_of: Some(not_counted),
    purge_turn: Some(5),
    rebuilt_empty: true,
    used_through: true,
    located: true,
    ..KindFacts::plain(Kind::DATABASE, "database")
};
inventory::submit!(DATABASE);

/// A tenant's seed rows, which live in its slice and go with it.
const SEED: KindFacts = KindFacts {
    lives_in: Some(Kind::DATABASE),
    ..KindFacts::plain(Kind::SEED, "seed")
};
inventory::submit!(SEED);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefixes() {
        let n = Naming::default();
        let slug = Slug::parse("acme-corp").unwrap();
        assert_eq!(n.role(&slug), "tenant_acme_corp");
        assert_eq!(n.slice(&slug, Isolation::Schema), "tenant_acme_corp");
        assert_eq!(n.slice(&slug, Isolation::Shared), "tenants_shared");
        assert_eq!(n.shared_group(), "tenant__shared");
        assert!(n.too_long(&slug).is_empty());
    }

    #[test]
    fn long_prefixes_make_long_names() {
        let n = Naming {
            role_prefix: "r".repeat(30),
            ..Naming::default()
        };
        let slug = Slug::parse(&"a".repeat(40)).unwrap();
        let long = n.too_long(&slug);
        assert_eq!(long.len(), 1);
        assert_eq!(long[0].0, "role");
    }

    #[test]
    fn plain_identifiers_only() {
        assert!(is_plain_ident("tenant_acme"));
        assert!(!is_plain_ident("Tenant"));
        assert!(!is_plain_ident("a\"b"));
        assert!(!is_plain_ident("1abc"));
        assert!(!is_plain_ident(&"a".repeat(64)));
    }
}

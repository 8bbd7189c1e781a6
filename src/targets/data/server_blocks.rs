//! `postgres_server "name" { … }` blocks: the Postgres servers tenants are placed on, when
//! there are several.
//!
//! ```hcl
//! postgres_server "eu-1" {
//!   url_env   = "EU1_DATABASE_URL"       # where it is (or url = "…")
//!   region    = "eu-west-1"              # only tenants of this region go here
//!   cap       = 1000                     # tenants at most
//!   labels    = { tier = "standard" }    # what plans and tenants may ask for
//!   isolation = ["shared", "schema"]     # the modes it takes (all three when left out)
//! }
//! ```
//!
//! The `postgres` block stays the admin's: the control plane, the state and the placement
//! catalog live there, and its names (prefixes, admin schema) are every server's. A block
//! that names no URL is the `postgres` block's own server, which holds the tenants made
//! before the config named servers.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::clients::postgres::PostgresConfig;
use crate::diagnostic::Diagnostic;
use crate::model::tenant::Isolation;
use crate::placement::Server;
use crate::repo::hcl_file::Spans;

/// A server block as written. One without `url` and `url_env` is the `postgres` block's own
/// server.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// A connection URL. Better left out: `url_env` keeps credentials out of the repo.
    #[serde(default)]
    url: Option<String>,
    /// The environment variable holding the URL when `url` is not set.
    #[serde(default)]
    url_env: Option<String>,
    /// The region its data is in: only tenants of that region are placed on it.
    region: String,
    /// Tenants at most.
    cap: u32,
    /// What it offers, for plans and tenants that ask (`server_labels`).
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// The isolation modes it takes; all three when left out.
    #[serde(default)]
    isolation: Option<Vec<Isolation>>,
    /// Connections to it at most; the `postgres` block's when left out.
    #[serde(default)]
    max_connections: Option<u32>,
    /// Being emptied: no tenant is placed on it, and the plan moves its tenants off.
    #[serde(default)]
    draining: bool,
}

/// A server as the config sets it up: where placement may put tenants, and how to reach it.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub placement: Server,
    /// The `postgres` block with this server's connection: every other name is shared.
    pub connection: PostgresConfig,
    /// It is the `postgres` block's own server (its block names no URL): tenants made before
    /// the config named servers have their data there, and are recorded as placed on it.
    pub own_server: bool,
}

/// The servers of the config, or every problem with them (file, line, field). `postgres`
/// is the config's `postgres` block, whose names every server shares.
pub fn parse(
    spans: &Spans,
    raw: BTreeMap<String, RawServer>,
    postgres: &PostgresConfig,
) -> Result<Vec<ServerConfig>, Vec<Diagnostic>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut own: Option<String> = None;
    for (name, raw) in raw {
        let at = |field: &str| format!("postgres_server.{name}.{field}");
        let before = problems.len();
        if !valid_name(&name) {
            problems.push(
                spans
                    .problem(&at("name"), format!("{name:?} cannot name a server"))
                    .hint("use 1 to 32 lowercase letters, digits and `-`, like \"eu-1\""),
            );
        }
        if !crate::model::tenant::valid_region(&raw.region) {
            problems.push(
                spans
                    .problem(
                        &at("region"),
                        format!("{:?} is not a region name", raw.region),
                    )
                    .hint("a region as tenant files name theirs, like \"eu-west-1\""),
            );
        }
        if raw.cap == 0 {
            problems.push(
                spans
                    .problem(&at("cap"), "cap must be at least 1")
                    .hint("the most tenants this server may hold"),
            );
        }
        match (&raw.url, &raw.url_env) {
            (Some(_), Some(_)) => problems.push(
                spans
                    .problem(&at("url_env"), "set url or url_env, not both")
                    .hint("url_env keeps the server's credentials out of the repo"),
            ),
            // The postgres block's own server, where tenants made before the config named
            // servers are: one block at most may be it.
            (None, None) if own.is_some() => problems.push(
                spans
                    .problem(&at("url_env"), format!(
                        "the server has no connection, and {:?} is the postgres block's own server already",
                        own.as_deref().unwrap_or_default()
                    ))
                    .hint("name the environment variable holding its URL, like url_env = \"EU1_DATABASE_URL\""),
            ),
            (None, None) => own = Some(name.clone()),
            (None, Some(var)) if !valid_env_name(var) => problems.push(
                spans
                    .problem(&at("url_env"), format!("{var:?} is not an environment variable's name"))
                    .hint("use letters, digits and _, like \"EU1_DATABASE_URL\""),
            ),
            _ => {}
        }
        if raw.isolation.as_ref().is_some_and(Vec::is_empty) {
            problems.push(
                spans
                    .problem(&at("isolation"), "a server must take at least one isolation mode")
                    .hint("list some of \"shared\", \"schema\", \"database\", or leave it out for all three"),
            );
        }
        if raw.max_connections == Some(0) {
            problems.push(
                spans
                    .problem(&at("max_connections"), "max_connections must be at least 1")
                    .hint("leave it out for the postgres block's"),
            );
        }
        for key in raw.labels.keys().filter(|k| !valid_label(k)) {
            problems.push(
                spans
                    .problem(
                        &at(&format!("labels.{key}")),
                        format!("{key:?} cannot name a label"),
                    )
                    .hint("use lowercase letters, digits, `-` and `_`"),
            );
        }
        if problems.len() > before {
            continue;
        }
        let own_server = raw.url.is_none() && raw.url_env.is_none();
        let mut connection = postgres.clone();
        if !own_server {
            connection.url = raw.url;
            connection.url_env = raw.url_env.unwrap_or_default();
        }
        connection.max_connections = raw.max_connections.unwrap_or(postgres.max_connections);
        out.push(ServerConfig {
            own_server,
            placement: Server {
                name,
                region: raw.region,
                cap: raw.cap,
                labels: raw.labels,
                draining: raw.draining,
                isolation: raw.isolation.unwrap_or_else(|| {
                    vec![Isolation::Shared, Isolation::Schema, Isolation::Database]
                }),
            },
            connection,
        });
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn valid_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-'))
}

fn valid_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.chars()
            .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_'))
}

fn valid_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

//! `tenant-reconcile.hcl`: which state backend and which targets a repo uses.
//!
//! The file is optional. Without it everything goes to the local target under
//! `.tenant-reconcile/`, which needs no server.

use serde::Deserialize;

use super::hcl_file;
use crate::diagnostic::Diagnostic;

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
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            backend: default_local(),
            path: None,
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
    let known = ["local"];
    for (field, value) in [
        ("state.backend", &config.state.backend),
        ("targets.control_plane", &config.targets.control_plane),
        ("targets.data", &config.targets.data),
        ("targets.buckets", &config.targets.buckets),
    ] {
        if !known.contains(&value.as_str()) {
            let key = field.rsplit('.').next().unwrap_or(field);
            let (line, col) = hcl_file::locate_key(source, key).unwrap_or((1, 1));
            problems.push(
                Diagnostic::new(CONFIG_FILE, format!("unknown target {value:?}"))
                    .at(line, col)
                    .field(field)
                    .hint("this version provides: local"),
            );
        }
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
    fn unknown_target_is_an_error() {
        let e = parse("targets {\n  data = \"mongo\"\n}\n").unwrap_err();
        assert_eq!(e[0].field.as_deref(), Some("targets.data"));
        assert_eq!(e[0].line, 2);
    }
}

//! `tenant-reconcile.hcl`: which state backend and which targets a repo uses.
//!
//! The file is optional. Without it everything goes to the local target under
//! `.tenant-reconcile/`, which needs no server.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::hcl_file::{self, Spans};
use crate::clients::postgres::PostgresConfig;
use crate::clients::s3::S3Config;
use crate::clients::SettingProblem;
use crate::diagnostic::Diagnostic;
use crate::targets::buckets;

pub const CONFIG_FILE: &str = "tenant-reconcile.hcl";

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
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
    /// `postgres_server "name" { … }` blocks as written: the servers tenants are placed on.
    #[serde(default, rename = "postgres_server")]
    raw_servers: BTreeMap<String, crate::targets::data::server_blocks::RawServer>,
    /// The servers tenants are placed on; none when the `postgres` block's server holds
    /// every tenant.
    #[serde(skip)]
    pub servers: Vec<crate::targets::data::server_blocks::ServerConfig>,
    #[serde(default)]
    pub s3: S3Config,
    #[serde(default)]
    pub offboarding: OffboardingConfig,
    /// Tenants whose resources that exist but are not this state's are adopted, as
    /// `--import` adopts them, written down where a pull request shows it.
    #[serde(default)]
    pub import: Vec<String>,
    /// `check "name" { … }` blocks as written: smoke tests every tenant gets.
    #[serde(default, rename = "check")]
    raw_checks: BTreeMap<String, super::checks::RawCheck>,
    /// `hook "name" { … }` blocks as written.
    #[serde(default, rename = "hook")]
    raw_hooks: BTreeMap<String, super::hooks::RawHook>,
    /// `webhook "name" { … }` blocks as written: where the outbox's events go.
    #[serde(default, rename = "webhook")]
    raw_webhooks: BTreeMap<String, super::subscribers::RawWebhook>,
    #[serde(default)]
    pub events: super::subscribers::EventsConfig,
    /// The `rollout` block as written.
    #[serde(default, rename = "rollout")]
    raw_rollout: Option<super::rollout_policy::RawRollout>,
    /// How a change to the inputs tenants share goes out: in waves, when the config has a
    /// `rollout` block; to every tenant at once without one.
    #[serde(skip)]
    pub rollout: Option<super::rollout_policy::Policy>,
    #[serde(skip)]
    pub webhooks: Vec<super::subscribers::Webhook>,
    /// `bus "name" { … }` blocks as written: RabbitMQ exchanges the events go to.
    #[serde(default, rename = "bus")]
    raw_buses: BTreeMap<String, super::subscribers::RawBus>,
    #[serde(skip)]
    pub buses: Vec<super::subscribers::Bus>,
    /// The declared checks every tenant gets, besides its plan's.
    #[serde(skip)]
    pub checks: Vec<super::checks::CheckSpec>,
    /// Shared: every tenant's plan that runs a hook holds it.
    #[serde(skip)]
    pub hooks: Vec<std::sync::Arc<super::hooks::HookSpec>>,
    /// The slots that plug in (`targets::PLUGGED`) which this file sets to a target.
    #[serde(skip)]
    pub plugged: Vec<std::sync::Arc<dyn crate::targets::slot::Plugged>>,
}

impl Config {
    /// Every subscriber of the outbox, webhooks and buses, with whether it is given the
    /// events kept from before it was added (`history`).
    pub fn subscribers(&self) -> Vec<(String, bool)> {
        let webhooks = self.webhooks.iter().map(|w| (w.name.clone(), w.history));
        webhooks
            .chain(self.buses.iter().map(|b| (b.name.clone(), b.history)))
            .collect()
    }

    /// The folders whose files are the repo's inputs, relative to its root: `tenants`,
    /// `plans`, `templates` and the migrations folder (`./db/migrations` given is
    /// `db/migrations`). With the config file, this is everything a plan reads from the repo.
    pub fn input_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = ["tenants", "plans", "templates"]
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let migrations = self.migrations_path();
        if !dirs.contains(&migrations) {
            dirs.push(migrations);
        }
        dirs
    }

    /// The input folders tenants share: every one but `tenants`. A change to a file in them
    /// reaches tenants by what their files say, and goes out in waves under a rollout
    /// policy.
    pub fn shared_input_dirs(&self) -> Vec<PathBuf> {
        self.input_dirs()
            .into_iter()
            .filter(|d| d != Path::new("tenants"))
            .collect()
    }

    /// `migrations_dir` without `.` components; the config check refuses one that names no
    /// folder inside the repo.
    fn migrations_path(&self) -> PathBuf {
        Path::new(&self.migrations_dir)
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect()
    }
}

/// Whether the input `path` (relative to the repo root) is one tenants share: neither a
/// tenant's own file nor the config.
pub fn is_shared_input(path: &Path) -> bool {
    let tenant_file = path.starts_with("tenants")
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(super::slug_of_file_name)
            .is_some();
    !tenant_file && path != Path::new(CONFIG_FILE)
}

/// Whether `path` (relative to the repo root) is an input, given the input folders: the
/// config file, or a file under one of `dirs` that is not hidden (the loader skips those,
/// and editors' swap files are).
pub fn is_input_of(dirs: &[PathBuf], path: &Path) -> bool {
    if path
        .components()
        .any(|c| matches!(c, Component::Normal(n) if n.to_string_lossy().starts_with('.')))
    {
        return false;
    }
    path == Path::new(CONFIG_FILE) || dirs.iter().any(|d| path.starts_with(d))
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
            raw_servers: BTreeMap::new(),
            servers: Vec::new(),
            s3: S3Config::default(),
            offboarding: OffboardingConfig::default(),
            import: Vec::new(),
            raw_checks: BTreeMap::new(),
            raw_hooks: BTreeMap::new(),
            raw_webhooks: BTreeMap::new(),
            events: super::subscribers::EventsConfig::default(),
            raw_rollout: None,
            rollout: None,
            webhooks: Vec::new(),
            raw_buses: BTreeMap::new(),
            buses: Vec::new(),
            checks: Vec::new(),
            hooks: Vec::new(),
            plugged: Vec::new(),
        }
    }
}

/// The `offboarding` block: what happens as a tenant's file says `status: deprovisioned`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OffboardingConfig {
    /// Where a leaving tenant's data is exported (`<export_to>/<slug>/`): a folder, or an S3
    /// bucket and prefix (`s3://bucket/prefix`), reached with the s3 block's settings. A folder is
    /// relative to the repo root unless absolute.
    #[serde(default = "default_export_to")]
    pub export_to: String,
}

impl Default for OffboardingConfig {
    fn default() -> Self {
        OffboardingConfig {
            export_to: default_export_to(),
        }
    }
}

fn default_export_to() -> String {
    ".tenant-reconcile/exports".into()
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
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
    /// For the s3 backend: the bucket holding the state (it must exist).
    #[serde(default)]
    pub bucket: Option<String>,
    /// For the s3 backend: the key of the state's header; the tenants' records are
    /// `<key>.tenants/<slug>` and the lock is `<key>.lock`.
    /// Defaults to `tenant-reconcile/<name>.json`.
    #[serde(default)]
    pub key: Option<String>,
    /// For the s3 backend: how long the lock stands without its holder renewing it (which
    /// a run does three times a lease). A lock left unrenewed for two leases (a run killed,
    /// or cut off from the store) is taken over by the next run that waits for it.
    #[serde(default = "default_lock_lease")]
    pub lock_lease: String,
}

fn default_lock_lease() -> String {
    "1m".into()
}

impl StateConfig {
    /// `lock_lease` as a duration (checked when the file is loaded).
    pub fn lock_lease(&self) -> std::time::Duration {
        humantime::parse_duration(&self.lock_lease).unwrap_or(std::time::Duration::from_secs(60))
    }

    /// The object key of the state in the s3 backend.
    pub fn s3_key(&self) -> String {
        self.key
            .clone()
            .unwrap_or_else(|| format!("tenant-reconcile/{}.json", self.name))
    }
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            backend: default_local(),
            path: None,
            name: default_state_name(),
            bucket: None,
            key: None,
            lock_lease: default_lock_lease(),
        }
    }
}

/// Which target serves each group of resources.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
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

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
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

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SafetyConfig {
    /// Plan and apply refuse when more than this share of the recorded tenants have no
    /// file any more (and more than one is missing), unless told `--allow-missing-tenants`.
    #[serde(default = "default_max_missing_share")]
    pub max_missing_share: f64,
    /// Apply refuses a plan that purges more tenants than this (each a whole tenant's data,
    /// for good) unless told `--allow-mass-purge`.
    #[serde(default = "default_max_purges_per_run")]
    pub max_purges_per_run: usize,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        SafetyConfig {
            max_missing_share: default_max_missing_share(),
            max_purges_per_run: default_max_purges_per_run(),
        }
    }
}

fn default_local() -> String {
    "local".into()
}
fn default_state_name() -> String {
    "default".into()
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
fn default_max_purges_per_run() -> usize {
    10
}
fn default_max_missing_share() -> f64 {
    0.2
}

pub fn parse(source: &str) -> Result<Config, Vec<Diagnostic>> {
    let (mut value, spans) = hcl_file::parse_value(CONFIG_FILE, source)?;
    let spans = &spans;
    // The slots that plug in read their own settings; the rest is this file's.
    let (plugged, mut problems) = crate::targets::slot::plug(&mut value, spans);
    // A plugged slot's problems are reported with the rest of the file's; only what does
    // not read as the config stops the checks here.
    let (read, read_problems) = hcl_file::read_all::<Config>(value, spans);
    let Some(mut config) = read.filter(|_| read_problems.is_empty()) else {
        problems.extend(read_problems);
        return Err(problems);
    };
    config.plugged = plugged;
    match super::checks::parse(spans, std::mem::take(&mut config.raw_checks)) {
        Ok(c) => config.checks = c,
        Err(p) => problems.extend(p),
    }
    match super::hooks::parse(spans, std::mem::take(&mut config.raw_hooks)) {
        Ok(h) => config.hooks = h.into_iter().map(std::sync::Arc::new).collect(),
        Err(p) => problems.extend(p),
    }
    let webhooks = std::mem::take(&mut config.raw_webhooks);
    let webhook_names: Vec<String> = webhooks.keys().cloned().collect();
    match super::subscribers::parse(spans, webhooks, &config.events) {
        Ok(w) => config.webhooks = w,
        Err(p) => problems.extend(p),
    }
    let servers = std::mem::take(&mut config.raw_servers);
    if !servers.is_empty() && config.targets.data != "postgres" {
        problems.push(
            spans
                .problem(
                    "targets.data",
                    "postgres_server blocks place tenants' data on Postgres servers",
                )
                .hint("set targets.data = \"postgres\", or take the postgres_server blocks out"),
        );
    }
    match crate::targets::data::server_blocks::parse(spans, servers, &config.postgres) {
        Ok(s) => config.servers = s,
        Err(p) => problems.extend(p),
    }
    if let Some(raw) = config.raw_rollout.take() {
        match super::rollout_policy::parse(spans, raw) {
            Ok(p) => config.rollout = Some(p),
            Err(p) => problems.extend(p),
        }
    }
    let buses = std::mem::take(&mut config.raw_buses);
    match super::subscribers::parse_buses(spans, buses, &webhook_names) {
        Ok(b) => config.buses = b,
        Err(p) => problems.extend(p),
    }
    for (field, value, known) in [
        (
            "state.backend",
            &config.state.backend,
            &["local", "postgres", "s3"][..],
        ),
        (
            "targets.control_plane",
            &config.targets.control_plane,
            crate::targets::control_plane::IMPLEMENTATIONS,
        ),
        (
            "targets.data",
            &config.targets.data,
            crate::targets::data::IMPLEMENTATIONS,
        ),
        (
            "targets.buckets",
            &config.targets.buckets,
            buckets::IMPLEMENTATIONS,
        ),
    ] {
        if !known.contains(&value.as_str()) {
            problems.push(
                spans
                    .problem(field, format!("unknown target {value:?}"))
                    .hint(format!("{field} can be: {}", known.join(", "))),
            );
        }
    }
    // The state's name is written into the marks of ownership (comments, bucket tags), so
    // it is kept to characters every one of them takes as they are.
    let name = &config.state.name;
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        problems.push(
            spans
                .problem("state.name", format!("{name:?} is not a state name"))
                .hint("use up to 64 letters, digits, '-', '_' and '.', like \"production\""),
        );
    }
    for (i, slug) in config.import.iter().enumerate() {
        if let Err(e) = crate::slug::Slug::parse(slug) {
            problems.push(
                spans
                    .problem(
                        &format!("import[{i}]"),
                        format!("{slug:?} is not a tenant slug: {e}"),
                    )
                    .hint("list the slugs of tenant files, like import = [\"initech\"]"),
            );
        }
    }
    let pg = &config.postgres;
    // The admin schema is the control plane's and the state's; the names of the tenants'
    // slices are the data slot's.
    problems.extend(crate::targets::data::check_identifier(
        spans, "schema", &pg.schema,
    ));
    problems.extend(crate::targets::data::check_naming(spans, pg));
    if pg.schema == pg.shared_schema {
        problems.push(
            spans
                .problem(
                    "postgres.shared_schema",
                    "shared_schema must differ from schema",
                )
                .hint("the admin schema holds the registry; shared tenants' rows live apart"),
        );
    }
    problems.extend(setting_problems(spans, "postgres", pg.problems()));
    problems.extend(check_s3(spans, &config));
    let dir = Path::new(&config.migrations_dir);
    if dir.is_absolute()
        || dir
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        // `.` would make every file of the repo a migration.
        || config.migrations_path().as_os_str().is_empty()
    {
        problems.push(
            spans
                .problem(
                    "migrations_dir",
                    format!(
                        "{:?} is not a folder inside the repo",
                        config.migrations_dir
                    ),
                )
                .hint("name a folder relative to the repo root, like \"migrations\""),
        );
    }
    if let Some(rest) = config.offboarding.export_to.strip_prefix("s3://") {
        // Bucket names and the prefix reach S3 as they are: checked here, before any call.
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let problem = buckets::check_name(bucket)
            .err()
            .map(|e| format!("the bucket {bucket:?} {e}"))
            .or_else(|| {
            prefix
                .split('/')
                .any(|seg| {
                    seg == "."
                        || seg == ".."
                        || !seg.chars().all(|c| {
                            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
                        })
                })
                .then(|| format!("the prefix {prefix:?} must be plain segments of letters, digits, '-', '_' and '.'"))
        });
        if let Some(problem) = problem {
            problems.push(
                spans.problem("offboarding.export_to", problem).hint(
                    "a folder, or an S3 bucket and prefix like \"s3://acme-exports/tenants\"",
                ),
            );
        }
    }
    if !(0.0..=1.0).contains(&config.safety.max_missing_share) {
        problems.push(spans.problem(
            "safety.max_missing_share",
            "max_missing_share must be between 0 and 1",
        ));
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

/// A client's problems with its block's settings, each at its setting's line.
fn setting_problems<'a>(
    spans: &'a Spans,
    block: &str,
    found: Vec<SettingProblem>,
) -> impl Iterator<Item = Diagnostic> + 'a {
    let block = block.to_string();
    found.into_iter().map(move |p| {
        let problem = spans.problem(&format!("{block}.{}", p.key), p.message);
        match p.hint {
            Some(hint) => problem.hint(hint.to_string()),
            None => problem,
        }
    })
}

/// The `s3` block's checks: the buckets' names are the bucket slot's to check; the rest is
/// the S3 client's, which the state backend and exports use too.
fn check_s3(spans: &Spans, config: &Config) -> Vec<Diagnostic> {
    let s3 = &config.s3;
    let mut problems = buckets::check_naming(spans, s3);
    problems.extend(setting_problems(spans, "s3", s3.problems()));
    if config.state.backend == "s3" && config.state.bucket.is_none() {
        problems.push(
            spans
                .problem("state.backend", "the s3 state backend needs a bucket")
                .field("state.bucket")
                .hint("name an existing bucket: state { backend = \"s3\", bucket = \"...\" }"),
        );
    }
    if !humantime::parse_duration(&config.state.lock_lease).is_ok_and(|d| d.as_secs() >= 1) {
        problems.push(
            spans
                .problem(
                    "state.lock_lease",
                    format!(
                        "{:?} is not a duration of a second or more",
                        config.state.lock_lease
                    ),
                )
                .hint("write it like 1m or 30s"),
        );
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tenant::Isolation;

    #[test]
    fn inputs_follow_the_migrations_folder() {
        let c = parse("migrations_dir = \"./db/migrations\"\n").unwrap();
        assert_eq!(
            c.input_dirs(),
            ["tenants", "plans", "templates", "db/migrations"].map(PathBuf::from)
        );
        let dirs = c.input_dirs();
        assert!(is_input_of(&dirs, Path::new("db/migrations/0001_x.sql")));
        assert!(is_input_of(&dirs, Path::new(CONFIG_FILE)));
        assert!(!is_input_of(&dirs, Path::new("migrations/0001_x.sql")));
        assert!(!is_input_of(&dirs, Path::new("tenants/.acme.yaml.swp")));
        assert!(!is_input_of(&dirs, Path::new("README.md")));
        // A folder that is no folder inside the repo is refused, `.` included.
        for bad in [".", "./", "../sql", "/sql"] {
            assert!(
                parse(&format!("migrations_dir = {bad:?}\n")).is_err(),
                "{bad} is accepted"
            );
        }
    }

    #[test]
    fn an_s3_export_destination_is_checked_before_any_call() {
        for good in [
            "s3://acme-exports",
            "s3://acme-exports/tenants/eu",
            "exports",
        ] {
            let c = parse(&format!("offboarding {{\n  export_to = {good:?}\n}}\n"));
            assert!(c.is_ok(), "{good}: {:?}", c.err());
        }
        for bad in [
            "s3://Acme_Exports",
            "s3://ok-bucket/../up",
            "s3://ok-bucket/a b",
            "s3://",
        ] {
            let e = parse(&format!("offboarding {{\n  export_to = {bad:?}\n}}\n")).unwrap_err();
            let text = e[0].to_string();
            assert!(
                text.contains("tenant-reconcile.hcl:2:3") && text.contains("offboarding.export_to"),
                "{bad}: {text}"
            );
        }
    }

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
    fn s3_block_is_checked() {
        let e = parse("s3 {\n  bucket_name = \"{prefix}-{tenant}\"\n  encryption = \"aws:kms\"\n}\nstate {\n  backend = \"s3\"\n}\n").unwrap_err();
        let fields: Vec<_> = e.iter().filter_map(|d| d.field.as_deref()).collect();
        assert_eq!(fields, ["s3.bucket_name", "s3.encryption", "state.bucket"]);
        assert_eq!(e[0].line, 2);
        let e = parse("s3 {\n  bucket_name = \"{prefix}-{slug}\"\n}\n").unwrap_err();
        assert!(
            e[0].message.contains("must contain {region}"),
            "{}",
            e[0].message
        );
        parse("s3 {\n  bucket_name = \"{prefix}-{slug}\"\n  tenant_regions = false\n}\n").unwrap();
        let c = parse("s3 {\n  bucket_prefix = \"acme\"\n}\n").unwrap();
        assert_eq!(
            c.s3.bucket_for("globex", "eu-west-1"),
            "acme-globex-eu-west-1"
        );
    }

    #[test]
    fn the_clients_settings_are_said_at_their_lines() {
        let e = parse(
            "postgres {\n  max_connections = 0\n}\ns3 {\n  concurrency = 0\n  request_timeout = \"soon\"\n}\n",
        )
        .unwrap_err();
        let said: Vec<_> = e
            .iter()
            .map(|d| (d.field.as_deref().unwrap_or(""), d.line, d.hint.is_some()))
            .collect();
        assert_eq!(
            said,
            [
                ("postgres.max_connections", 2, false),
                ("s3.request_timeout", 6, true),
                ("s3.concurrency", 5, true)
            ]
        );
    }

    #[test]
    fn postgres_servers_are_read_and_each_problem_said_at_its_line() {
        let c = parse(
            "targets {\n  data = \"postgres\"\n}\npostgres {\n  role_prefix = \"t_\"\n  max_connections = 4\n}\n\
             postgres_server \"eu-1\" {\n  url_env = \"EU1_URL\"\n  region = \"eu-west-1\"\n  cap = 1000\n  labels = { tier = \"dedicated\" }\n  isolation = [\"schema\"]\n}\n",
        )
        .unwrap();
        let [eu1] = &c.servers[..] else {
            panic!("{:?}", c.servers)
        };
        assert_eq!(eu1.placement.name, "eu-1");
        assert_eq!(eu1.placement.cap, 1000);
        assert_eq!(eu1.placement.labels["tier"], "dedicated");
        assert_eq!(eu1.placement.isolation, [Isolation::Schema]);
        // Its own connection; the postgres block's names and limits.
        assert_eq!(eu1.connection.url_env, "EU1_URL");
        assert_eq!(eu1.connection.role_prefix, "t_");
        assert_eq!(eu1.connection.max_connections, 4);
        assert!(!eu1.own_server);
        let e = parse(
            "targets {\n  data = \"postgres\"\n}\n\
             postgres_server \"EU 1\" {\n  url_env = \"X\"\n  region = \"eu-west-1\"\n  cap = 1\n}\n\
             postgres_server \"eu-2\" {\n  region = \"Europe\"\n  cap = 0\n  isolation = []\n  labels = { Tier = \"x\" }\n}\n\
             postgres_server \"eu-3\" {\n  region = \"eu-west-1\"\n  cap = 1\n}\n",
        )
        .unwrap_err();
        let said: Vec<_> = e
            .iter()
            .map(|d| (d.field.as_deref().unwrap_or(""), d.line))
            .collect();
        assert_eq!(
            said,
            [
                ("postgres_server.EU 1.name", 4),
                ("postgres_server.eu-2.region", 10),
                ("postgres_server.eu-2.cap", 11),
                ("postgres_server.eu-2.isolation", 12),
                ("postgres_server.eu-2.labels.Tier", 13),
                // Without a URL, eu-2 is the postgres block's own server; eu-3 cannot be too.
                ("postgres_server.eu-3.url_env", 15),
            ]
        );
        assert!(e[5]
            .message
            .contains("\"eu-2\" is the postgres block's own server already"));
        let e = parse("postgres_server \"eu-1\" {\n  url_env = \"X\"\n  region = \"eu-west-1\"\n  cap = 1\n}\n")
            .unwrap_err();
        assert_eq!(e[0].field.as_deref(), Some("targets.data"));
    }

    #[test]
    fn unknown_target_is_an_error() {
        let e = parse("targets {\n  data = \"mongo\"\n}\n").unwrap_err();
        assert_eq!(e[0].field.as_deref(), Some("targets.data"));
        assert_eq!(e[0].line, 2);
    }
}

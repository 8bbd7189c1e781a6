//! `tenant-reconcile.hcl`: which state backend and which targets a repo uses.
//!
//! The file is optional. Without it everything goes to the local target under
//! `.tenant-reconcile/`, which needs no server.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::hcl_file;
use crate::diagnostic::Diagnostic;
use crate::naming::is_plain_ident;

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
    #[serde(default)]
    pub s3: S3Config,
    #[serde(default)]
    pub rabbitmq: RabbitmqConfig,
    #[serde(default)]
    pub route53: Route53Config,
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
    #[serde(skip)]
    pub hooks: Vec<super::hooks::HookSpec>,
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

    /// `migrations_dir` without `.` components; the config check refuses one that names no
    /// folder inside the repo.
    fn migrations_path(&self) -> PathBuf {
        Path::new(&self.migrations_dir)
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect()
    }
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
            s3: S3Config::default(),
            rabbitmq: RabbitmqConfig::default(),
            route53: Route53Config::default(),
            offboarding: OffboardingConfig::default(),
            import: Vec::new(),
            raw_checks: BTreeMap::new(),
            raw_hooks: BTreeMap::new(),
            raw_webhooks: BTreeMap::new(),
            events: super::subscribers::EventsConfig::default(),
            webhooks: Vec::new(),
            raw_buses: BTreeMap::new(),
            buses: Vec::new(),
            checks: Vec::new(),
            hooks: Vec::new(),
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
    /// For the s3 backend: the state object's key; the lock is `<key>.lock`.
    /// Defaults to `tenant-reconcile/<name>.json`.
    #[serde(default)]
    pub key: Option<String>,
}

impl StateConfig {
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
        }
    }
}

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

/// The `s3` block: the S3-compatible store tenant buckets (and the s3 state backend) use.
/// Credentials are never here: they come from the standard AWS chain (environment,
/// profile, instance role).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The endpoint URL; without it the standard AWS_ENDPOINT_URL, then AWS itself.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The region requests are signed for; without it AWS_REGION or the profile's.
    #[serde(default)]
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket`), which MinIO and most local stores need.
    #[serde(default)]
    pub force_path_style: bool,
    /// The bucket name pattern: `{prefix}`, `{slug}` and `{region}` are replaced.
    #[serde(default = "default_bucket_name")]
    pub bucket_name: String,
    /// What `{prefix}` stands for in `bucket_name`.
    #[serde(default = "default_bucket_prefix")]
    pub bucket_prefix: String,
    /// Create each bucket in its tenant's region (AWS). Off for stores with one region
    /// (MinIO, R2), where every bucket goes to `region`.
    #[serde(default = "default_true")]
    pub tenant_regions: bool,
    /// Default encryption: `AES256` (SSE-S3) or `aws:kms` (SSE-KMS, with `kms_key_id`).
    #[serde(default = "default_sse")]
    pub encryption: String,
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// Who a suspended tenant's bucket policy denies: the application's IAM principal
    /// (an ARN), or `*` for everyone (an explicit deny binds administrators too; only the
    /// account's root user can still change the policy).
    #[serde(default = "default_app_principal")]
    pub app_principal: String,
    /// Requests in flight at once while reading the fleet's buckets.
    #[serde(default = "default_s3_concurrency")]
    pub concurrency: usize,
    /// How long one attempt of a request may take before it is abandoned and tried again.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: String,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: None,
            region: None,
            force_path_style: false,
            bucket_name: default_bucket_name(),
            bucket_prefix: default_bucket_prefix(),
            tenant_regions: true,
            encryption: default_sse(),
            kms_key_id: None,
            app_principal: default_app_principal(),
            concurrency: default_s3_concurrency(),
            request_timeout: default_request_timeout(),
        }
    }
}

impl S3Config {
    /// `request_timeout` as a duration (checked when the file is loaded).
    pub fn request_timeout(&self) -> std::time::Duration {
        humantime::parse_duration(&self.request_timeout)
            .unwrap_or(std::time::Duration::from_secs(30))
    }

    /// The bucket a tenant gets from the name pattern (checked by `bucket::check_name`).
    pub fn bucket_for(&self, slug: &str, region: &str) -> String {
        self.bucket_name
            .replace("{prefix}", &self.bucket_prefix)
            .replace("{slug}", slug)
            .replace("{region}", region)
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
    /// Each tenant's message-broker vhost and user: `none`, or `rabbitmq`.
    #[serde(default = "default_none")]
    pub broker: String,
    /// Each tenant's DNS record: `none`, or `route53`.
    #[serde(default = "default_none")]
    pub dns: String,
}

impl Default for TargetsConfig {
    fn default() -> Self {
        TargetsConfig {
            control_plane: default_local(),
            data: default_local(),
            buckets: default_local(),
            broker: default_none(),
            dns: default_none(),
        }
    }
}

/// The `rabbitmq` block: how tenant vhosts and users are named and limited. Where the
/// management API is, and the administrator's credentials, come from the environment
/// (the variables named here), never from this file.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RabbitmqConfig {
    /// The variable holding the management API's URL (`http://127.0.0.1:15672`).
    #[serde(default = "default_rabbitmq_url_env")]
    pub api_url_env: String,
    /// The variables holding the administrator's user name and password.
    #[serde(default = "default_rabbitmq_user_env")]
    pub api_user_env: String,
    #[serde(default = "default_rabbitmq_password_env")]
    pub api_password_env: String,
    /// Where tenants' applications connect (`amqp://host:5672`, no credentials): the URL
    /// `credentials SLUG` prints and the smoke test connects to.
    #[serde(default = "default_amqp_url")]
    pub amqp_url: String,
    /// A tenant's vhost and user are this prefix and its slug (`tenant_acme`).
    #[serde(default = "default_tenant_prefix")]
    pub vhost_prefix: String,
    #[serde(default = "default_tenant_prefix")]
    pub user_prefix: String,
    /// The quotas of a tenant's plan (or file) that become its vhost's `max-connections`
    /// and `max-queues` limits; a tenant without the quota has no limit.
    #[serde(default = "default_connections_quota")]
    pub connections_quota: String,
    #[serde(default = "default_queues_quota")]
    pub queues_quota: String,
}

impl Default for RabbitmqConfig {
    fn default() -> Self {
        RabbitmqConfig {
            api_url_env: default_rabbitmq_url_env(),
            api_user_env: default_rabbitmq_user_env(),
            api_password_env: default_rabbitmq_password_env(),
            amqp_url: default_amqp_url(),
            vhost_prefix: default_tenant_prefix(),
            user_prefix: default_tenant_prefix(),
            connections_quota: default_connections_quota(),
            queues_quota: default_queues_quota(),
        }
    }
}

/// The `route53` block: the hosted zone tenant records go to and what they are.
/// Credentials come from the standard AWS chain, as for S3.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route53Config {
    /// The hosted zone's id (`Z0123456789ABCDEFGHIJ`).
    #[serde(default)]
    pub zone_id: String,
    /// The record's name: `{slug}` and `{region}` are replaced (`{slug}.app.example.com`).
    #[serde(default = "default_record_name")]
    pub record_name: String,
    /// What the CNAME points to: the shared ingress.
    #[serde(default)]
    pub target: String,
    #[serde(default = "default_record_ttl")]
    pub ttl: i64,
    /// The endpoint URL; without it AWS_ENDPOINT_URL_ROUTE_53, AWS_ENDPOINT_URL, then AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// How long an apply waits for a change to be `INSYNC` before the step fails (the
    /// next apply finds the record and waits again).
    #[serde(default = "default_propagation_timeout")]
    pub propagation_timeout: String,
}

impl Default for Route53Config {
    fn default() -> Self {
        Route53Config {
            zone_id: String::new(),
            record_name: default_record_name(),
            target: String::new(),
            ttl: default_record_ttl(),
            endpoint: None,
            propagation_timeout: default_propagation_timeout(),
        }
    }
}

impl Route53Config {
    /// The record a tenant gets from the name pattern (checked by `dns::check_name`).
    pub fn record_for(&self, slug: &str, region: &str) -> String {
        self.record_name
            .replace("{slug}", slug)
            .replace("{region}", region)
    }

    pub fn propagation_timeout(&self) -> std::time::Duration {
        humantime::parse_duration(&self.propagation_timeout)
            .unwrap_or(std::time::Duration::from_secs(300))
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
fn default_none() -> String {
    "none".into()
}
fn default_rabbitmq_url_env() -> String {
    "RABBITMQ_API_URL".into()
}
fn default_rabbitmq_user_env() -> String {
    "RABBITMQ_API_USER".into()
}
fn default_rabbitmq_password_env() -> String {
    "RABBITMQ_API_PASSWORD".into()
}
fn default_amqp_url() -> String {
    "amqp://127.0.0.1:5672".into()
}
fn default_connections_quota() -> String {
    "broker_connections".into()
}
fn default_queues_quota() -> String {
    "broker_queues".into()
}
fn default_record_name() -> String {
    "{slug}.app.example.com".into()
}
fn default_record_ttl() -> i64 {
    300
}
fn default_propagation_timeout() -> String {
    "5m".into()
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
fn default_true() -> bool {
    true
}
fn default_bucket_name() -> String {
    "{prefix}-{slug}-{region}".into()
}
fn default_bucket_prefix() -> String {
    "tenant".into()
}
fn default_sse() -> String {
    "AES256".into()
}
fn default_app_principal() -> String {
    "*".into()
}
fn default_s3_concurrency() -> usize {
    32
}
fn default_request_timeout() -> String {
    "30s".into()
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
    let (mut config, spans): (Config, _) = hcl_file::parse(CONFIG_FILE, source)?;
    let spans = &spans;
    let mut problems = Vec::new();
    // `aws route53 list-hosted-zones` and boto3 print a zone's id as `/hostedzone/Z…`;
    // the API's paths take the bare id.
    if let Some(id) = config.route53.zone_id.strip_prefix("/hostedzone/") {
        config.route53.zone_id = id.to_string();
    }
    match super::checks::parse(spans, std::mem::take(&mut config.raw_checks)) {
        Ok(c) => config.checks = c,
        Err(p) => problems.extend(p),
    }
    match super::hooks::parse(spans, std::mem::take(&mut config.raw_hooks)) {
        Ok(h) => config.hooks = h,
        Err(p) => problems.extend(p),
    }
    let webhooks = std::mem::take(&mut config.raw_webhooks);
    let webhook_names: Vec<String> = webhooks.keys().cloned().collect();
    match super::subscribers::parse(spans, webhooks, &config.events) {
        Ok(w) => config.webhooks = w,
        Err(p) => problems.extend(p),
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
            &["local", "postgres"],
        ),
        ("targets.data", &config.targets.data, &["local", "postgres"]),
        ("targets.buckets", &config.targets.buckets, &["local", "s3"]),
        (
            "targets.broker",
            &config.targets.broker,
            &["none", "rabbitmq"],
        ),
        ("targets.dns", &config.targets.dns, &["none", "route53"]),
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
    for (key, value) in [
        ("schema", &pg.schema),
        ("role_prefix", &pg.role_prefix),
        ("schema_prefix", &pg.schema_prefix),
        ("database_prefix", &pg.database_prefix),
        ("shared_schema", &pg.shared_schema),
    ] {
        if !is_plain_ident(value) || value.starts_with("pg_") {
            problems.push(
                spans
                    .problem(
                        &format!("postgres.{key}"),
                        format!("{value:?} is not a plain identifier"),
                    )
                    .hint("use lower-case letters, digits and _, starting with a letter or _, not pg_"),
            );
        }
    }
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
    if pg.max_connections == 0 {
        problems.push(spans.problem(
            "postgres.max_connections",
            "max_connections must be at least 1",
        ));
    }
    problems.extend(check_s3(spans, &config));
    problems.extend(check_rabbitmq(spans, &config));
    problems.extend(check_route53(spans, &config));
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
        let problem = crate::bucket::check_name(bucket)
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

/// A problem with `key` of the config's `block` (`s3`, `rabbitmq`, …), where it is written.
fn block_problem(
    spans: &hcl_file::Spans,
    block: &str,
    key: &str,
    message: String,
    hint: &str,
) -> Diagnostic {
    spans
        .problem(&format!("{block}.{key}"), message)
        .hint(hint.to_string())
}

/// The `rabbitmq` block's names reach the management API's paths and the broker's own
/// names, so they are kept to plain characters (and percent-encoded besides).
fn check_rabbitmq(spans: &hcl_file::Spans, config: &Config) -> Vec<Diagnostic> {
    let mq = &config.rabbitmq;
    let mut problems = Vec::new();
    let mut problem = |key: &str, message: String, hint: &str| {
        problems.push(block_problem(spans, "rabbitmq", key, message, hint));
    };
    let plain = |s: &str| {
        s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    for (key, value) in [
        ("vhost_prefix", &mq.vhost_prefix),
        ("user_prefix", &mq.user_prefix),
    ] {
        if !plain(value) {
            problem(
                key,
                format!("{value:?} is not a plain prefix"),
                "use up to 64 letters, digits, '_', '-' and '.', like \"tenant_\"",
            );
        }
    }
    for (key, value) in [
        ("connections_quota", &mq.connections_quota),
        ("queues_quota", &mq.queues_quota),
    ] {
        if !crate::slug::check_name(value) {
            problem(
                key,
                format!("{value:?} is not a quota name"),
                "name a quota of the plans, like \"broker_connections\"",
            );
        }
    }
    for (key, value) in [
        ("api_url_env", &mq.api_url_env),
        ("api_user_env", &mq.api_user_env),
        ("api_password_env", &mq.api_password_env),
    ] {
        if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            problem(
                key,
                format!("{value:?} is not an environment variable's name"),
                "name the variable that holds it, like \"RABBITMQ_API_URL\"",
            );
        }
    }
    match url::Url::parse(&mq.amqp_url) {
        Ok(u)
            if matches!(u.scheme(), "amqp" | "amqps")
                && u.host_str().is_some()
                && u.username().is_empty()
                && u.password().is_none()
                && matches!(u.path(), "" | "/")
                && u.query().is_none() => {}
        _ => problem(
            "amqp_url",
            format!("{:?} is not a broker address", mq.amqp_url),
            "give amqp:// or amqps://, the host and port only (each tenant's user and vhost are added to it)",
        ),
    }
    problems
}

/// The `route53` block, checked when the DNS target is route53: a record name from a
/// pattern with the slug in it, and a target and zone to put it in.
fn check_route53(spans: &hcl_file::Spans, config: &Config) -> Vec<Diagnostic> {
    let dns = &config.route53;
    let mut problems = Vec::new();
    if config.targets.dns != "route53" {
        return problems;
    }
    let mut problem = |key: &str, message: String, hint: &str| {
        problems.push(block_problem(spans, "route53", key, message, hint));
    };
    if dns.zone_id.is_empty() || !dns.zone_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        problem(
            "zone_id",
            format!("{:?} is not a hosted zone id", dns.zone_id),
            "give the zone's id as Route53 shows it, like \"Z0123456789ABCDEFGHIJ\"",
        );
    }
    let unknown: Vec<&str> = dns
        .record_name
        .split('{')
        .skip(1)
        .filter_map(|p| p.split_once('}').map(|(name, _)| name))
        .filter(|name| !["slug", "region"].contains(name))
        .collect();
    if let Some(name) = unknown.first() {
        problem(
            "record_name",
            format!("unknown placeholder {{{name}}} in the record name"),
            "record_name can use {slug} and {region}",
        );
    } else if !dns.record_name.contains("{slug}") {
        problem(
            "record_name",
            "the record name must contain {slug}".into(),
            "without the slug every tenant would get the same record",
        );
    }
    if let Err(why) = crate::dns::check_name(&dns.target) {
        problem(
            "target",
            format!("the target {:?} {why}", dns.target),
            "name the shared ingress the records point to, like \"ingress.example.com\"",
        );
    }
    if !(0..=2_147_483_647).contains(&dns.ttl) {
        problem(
            "ttl",
            format!("{} is not a TTL", dns.ttl),
            "give seconds, from 0 to 2147483647",
        );
    }
    if humantime::parse_duration(&dns.propagation_timeout).is_err() {
        problem(
            "propagation_timeout",
            format!("{:?} is not a duration", dns.propagation_timeout),
            "like \"5m\" or \"90s\"",
        );
    }
    problems
}

fn check_s3(spans: &hcl_file::Spans, config: &Config) -> Vec<Diagnostic> {
    let s3 = &config.s3;
    let mut problems = Vec::new();
    let mut problem = |key: &str, message: String, hint: &str| {
        problems.push(block_problem(spans, "s3", key, message, hint));
    };
    let unknown: Vec<&str> = s3
        .bucket_name
        .split('{')
        .skip(1)
        .filter_map(|p| p.split_once('}').map(|(name, _)| name))
        .filter(|name| !["prefix", "slug", "region"].contains(name))
        .collect();
    if !unknown.is_empty() {
        problem(
            "bucket_name",
            format!("unknown placeholder {{{}}} in the bucket name", unknown[0]),
            "bucket_name can use {prefix}, {slug} and {region}",
        );
    } else if !s3.bucket_name.contains("{slug}") {
        problem(
            "bucket_name",
            "the bucket name must contain {slug}".into(),
            "without the slug every tenant would get the same bucket",
        );
    } else if s3.tenant_regions && !s3.bucket_name.contains("{region}") {
        problem(
            "bucket_name",
            "with tenant_regions = true the bucket name must contain {region}".into(),
            "a bucket cannot move: a tenant moving region gets a new bucket, which needs a new name (or set tenant_regions = false)",
        );
    }
    if s3
        .bucket_prefix
        .chars()
        .any(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '.'))
    {
        problem(
            "bucket_prefix",
            format!("{:?} cannot be part of a bucket name", s3.bucket_prefix),
            "use lower-case letters, digits, `-` and `.`",
        );
    }
    if !["AES256", "aws:kms"].contains(&s3.encryption.as_str()) {
        problem(
            "encryption",
            format!("unknown encryption {:?}", s3.encryption),
            "encryption can be: AES256, aws:kms",
        );
    }
    if s3.encryption == "aws:kms" && s3.kms_key_id.is_none() {
        problem(
            "encryption",
            "aws:kms encryption needs kms_key_id".into(),
            "set kms_key_id to the key's ARN or alias",
        );
    }
    if !humantime::parse_duration(&s3.request_timeout).is_ok_and(|d| !d.is_zero()) {
        problem(
            "request_timeout",
            format!("{:?} is not a duration", s3.request_timeout),
            "write it like 30s or 2m",
        );
    }
    if s3.concurrency == 0 {
        problem(
            "concurrency",
            "concurrency must be at least 1".into(),
            "it bounds the requests in flight while reading buckets",
        );
    }
    if config.state.backend == "s3" && config.state.bucket.is_none() {
        problems.push(
            spans
                .problem("state.backend", "the s3 state backend needs a bucket")
                .field("state.bucket")
                .hint("name an existing bucket: state { backend = \"s3\", bucket = \"...\" }"),
        );
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn unknown_target_is_an_error() {
        let e = parse("targets {\n  data = \"mongo\"\n}\n").unwrap_err();
        assert_eq!(e[0].field.as_deref(), Some("targets.data"));
        assert_eq!(e[0].line, 2);
    }
}

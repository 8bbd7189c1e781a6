//! Loading a tenant repo: `tenants/`, `plans/`, `templates/`, `migrations/` and the
//! optional `tenant-reconcile.hcl`, each file checked on its own and then against the others.
//!
//! Every problem in every file is collected before loading fails, so one `validate` shows
//! them all. Nothing here writes anything.

pub mod checks;
pub mod config;
pub mod files;
pub mod hcl_file;
pub mod hooks;
pub mod migrations;
pub mod plan_file;
pub mod rollout_policy;
pub mod subscribers;
pub mod templates;
pub mod tenant_file;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::targets::data::{Naming, MAX_IDENT_BYTES};

pub use crate::model::tenant::{Isolation, Offboarding, Status, TenantSpec};
pub use config::Config;
pub use files::Files;
pub use migrations::Migration;
pub use plan_file::TierPlan;
pub use templates::Templates;

use crate::diagnostic::{display_path, Diagnostic, Diagnostics};

/// Plan, template and migration files are operator-written, but still bounded.
const MAX_OTHER_FILE_BYTES: u64 = 1024 * 1024;

#[derive(Debug)]
pub struct TenantRepo {
    pub root: PathBuf,
    pub config: Config,
    pub plans: BTreeMap<String, TierPlan>,
    /// Sorted by slug.
    pub tenants: Vec<TenantSpec>,
    pub templates: Templates,
    pub migrations: Vec<Migration>,
    /// Loaded for some tenants only (a plan of some tenants): `tenants` holds their files,
    /// no other tenant file was read, and this holds the slug of every tenant file in
    /// `tenants/` by its name, read or not.
    pub listed: Option<BTreeSet<String>>,
}

/// The slug a tenant file's name gives (`acme.yaml` and the refused `acme.yml` are acme's),
/// found without reading the file.
pub fn slug_of_file_name(name: &str) -> Option<&str> {
    name.strip_suffix(".yaml")
        .or_else(|| name.strip_suffix(".yml"))
}

impl TenantRepo {
    /// Whether `slug` has a tenant file: loaded, or (in a repo loaded for some tenants)
    /// listed beside them.
    pub fn has_file(&self, slug: &str) -> bool {
        match &self.listed {
            Some(listed) => listed.contains(slug),
            None => self.tenants.iter().any(|t| t.slug.as_str() == slug),
        }
    }

    /// How many tenant files the repo has, loaded or not.
    pub fn tenant_files(&self) -> usize {
        match &self.listed {
            Some(listed) => listed.len(),
            None => self.tenants.len(),
        }
    }

    /// Tenants that share an owner, each said once: a copied file whose owner was not
    /// changed gives the new tenant's owner access to someone else's. Not an error: one
    /// person may own several tenants.
    pub fn shared_owners(&self) -> Vec<String> {
        let mut by_owner: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for t in self
            .tenants
            .iter()
            .filter(|t| t.status != Status::Deprovisioned)
        {
            by_owner
                .entry(t.owner_email.as_str())
                .or_default()
                .push(t.slug.as_str());
        }
        by_owner
            .into_iter()
            .filter(|(_, slugs)| slugs.len() > 1)
            .map(|(email, slugs)| {
                format!(
                    "{} share the owner {email}: if a file was copied, set its owner (one person may own several tenants)",
                    slugs.join(" and ")
                )
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error("{path} has no tenants/ folder: is it a tenant repo? (use -C DIR to point at one)")]
    NotATenantRepo { path: PathBuf },
    #[error("cannot read the tenant repo at {rev}: {message}")]
    Git { rev: String, message: String },
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Loads the tenant repo in the working tree at `root`.
pub fn load(root: &Path) -> Result<TenantRepo, LoadError> {
    load_from(root, &Files::WorkingTree)
}

/// Loads the tenant repo at `root` from `files`: the working tree, or a commit.
pub fn load_from(root: &Path, files: &Files) -> Result<TenantRepo, LoadError> {
    let config = load_config(root, files)?;
    load_with_config(root, files, config)
}

/// The config a repo is loaded with, and its problems (reported with the others by
/// [`load_with_config`]; until then it is the default config).
pub struct LoadedConfig {
    pub config: Config,
    problems: Diagnostics,
}

impl LoadedConfig {
    /// A config read already, without problems.
    pub fn of(config: Config) -> LoadedConfig {
        LoadedConfig {
            config,
            problems: Diagnostics::default(),
        }
    }

    /// Whether the config file had problems (then `config` is the default, or partly so).
    pub fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }
}

/// The first step of [`load_from`]: `tenant-reconcile.hcl`, which says where the rest is
/// (and where the state is, so a plan can read it meanwhile).
pub fn load_config(root: &Path, files: &Files) -> Result<LoadedConfig, LoadError> {
    if !files.is_dir(&root.join("tenants")) {
        return Err(LoadError::NotATenantRepo {
            path: root.to_path_buf(),
        });
    }
    let mut problems = Diagnostics::default();
    let config = match files.read_optional(root, &root.join(config::CONFIG_FILE))? {
        Some(source) => config::parse(&source).unwrap_or_else(|d| {
            problems.extend(d);
            Config::default()
        }),
        None => Config::default(),
    };
    Ok(LoadedConfig { config, problems })
}

/// The rest of [`load_from`]: plans, tenants, templates and migrations, checked against
/// each other and the config.
pub fn load_with_config(
    root: &Path,
    files: &Files,
    loaded: LoadedConfig,
) -> Result<TenantRepo, LoadError> {
    load_some(root, files, loaded, None)
}

/// [`load_with_config`], reading with `only` the files of those tenants and no other tenant
/// file: the checks between tenants (a slug twice, a bucket name twice) then see those
/// tenants only.
pub fn load_some(
    root: &Path,
    files: &Files,
    loaded: LoadedConfig,
    only: Option<&BTreeSet<String>>,
) -> Result<TenantRepo, LoadError> {
    let LoadedConfig {
        config,
        mut problems,
    } = loaded;
    let tenants_dir = root.join("tenants");

    let mut plans = BTreeMap::new();
    // Plans whose file exists but did not load: their tenants are not also reported as
    // naming an unknown plan, which would bury the real problem.
    let mut broken_plans = HashSet::new();
    for path in files.list(root, &root.join("plans"), &mut problems)? {
        let file = display_path(root, &path);
        let Some(stem) = file_stem(&path, ".hcl") else {
            continue;
        };
        let Some(source) = files.read_bounded(root, &path, MAX_OTHER_FILE_BYTES, &mut problems)
        else {
            continue;
        };
        match plan_file::parse(&file, &stem, &source) {
            Ok(p) => {
                plans.insert(stem, p);
            }
            Err(d) => {
                problems.extend(d);
                broken_plans.insert(stem);
            }
        }
    }

    let mut tenant_paths = files.list(root, &tenants_dir, &mut problems)?;
    fn slug(p: &Path) -> Option<&str> {
        p.file_name()?.to_str().and_then(slug_of_file_name)
    }
    // By the name alone: a file that is not read is not parsed. Each name is read once (a
    // large fleet lists 100,000 of them).
    let listed = only.map(|only| {
        let mut listed = Vec::with_capacity(tenant_paths.len());
        tenant_paths.retain(|p| match slug(p) {
            Some(s) => {
                listed.push(s.to_string());
                only.contains(s)
            }
            None => false,
        });
        listed.into_iter().collect()
    });
    let parsed: Vec<Result<TenantSpec, Vec<Diagnostic>>> = tenant_paths
        .par_iter()
        .filter_map(|path| load_tenant(root, files, path))
        .collect();
    let mut tenants = Vec::with_capacity(parsed.len());
    for p in parsed {
        match p {
            Ok(t) => tenants.push(t),
            Err(d) => problems.extend(d),
        }
    }
    tenants.sort_by(|a, b| a.slug.cmp(&b.slug).then_with(|| a.file.cmp(&b.file)));
    problems.extend(duplicate_slugs(&tenants));
    for t in tenants.iter().filter(|t| !broken_plans.contains(&t.plan)) {
        problems.extend(check_against_plan(t, plans.get(&t.plan), &plans));
    }
    problems.extend(tenants.iter().filter_map(|t| unknown_server(t, &config)));
    let naming = Naming::from(&config.postgres);
    let fixed = [
        config.postgres.schema.as_str(),
        config.postgres.shared_schema.as_str(),
    ];
    for t in &tenants {
        if let Some(schema) = naming.clashes(&t.slug, &fixed) {
            problems.push(
                Diagnostic::new(
                    &t.file,
                    format!("the schema name {schema:?} is taken by tenant-reconcile's own schema"),
                )
                .locate(&t.source, "slug")
                .hint("choose another slug, or another schema_prefix in the postgres block of tenant-reconcile.hcl"),
            );
        }
        for (what, name) in naming.too_long(&t.slug) {
            problems.push(
                Diagnostic::new(
                    &t.file,
                    format!(
                        "the {what} name {name:?} is {} bytes; PostgreSQL allows {MAX_IDENT_BYTES} and would cut it short",
                        name.len()
                    ),
                )
                .locate(&t.source, "slug")
                .hint("shorten the slug, or the prefix in the postgres block of tenant-reconcile.hcl"),
            );
        }
    }

    problems.extend(crate::targets::buckets::check_tenants(
        &config.targets.buckets,
        &config.s3,
        &tenants,
    ));
    problems.extend(check_target_names(&config, &tenants));

    let mut template_sources = Vec::new();
    let templates_dir = root.join("templates");
    for path in files.list(root, &templates_dir, &mut problems)? {
        if let Some(source) = files.read_bounded(root, &path, MAX_OTHER_FILE_BYTES, &mut problems) {
            let name = display_path(&templates_dir, &path);
            template_sources.push((name, source));
        }
    }
    let templates = Templates::build(template_sources).unwrap_or_else(|d| {
        problems.extend(d);
        Templates::empty()
    });

    let mut migrations = Vec::new();
    let migrations_dir = root.join(&config.migrations_dir);
    for path in files.list(root, &migrations_dir, &mut problems)? {
        let file = display_path(root, &path);
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if !name.ends_with(".sql") {
            continue;
        }
        if let Some(sql) = files.read_bounded(root, &path, MAX_OTHER_FILE_BYTES, &mut problems) {
            match migrations::parse(&file, &name, sql) {
                Ok(m) => migrations.push(m),
                Err(d) => problems.push(d),
            }
        }
    }
    migrations.sort_by(|a, b| a.version.cmp(&b.version));
    for pair in migrations.windows(2) {
        if pair[0].version == pair[1].version {
            problems.push(Diagnostic::new(
                format!("{}/{}.sql", config.migrations_dir, pair[1].id()),
                format!("migration version {} is used twice", pair[1].version),
            ));
        }
    }

    if !problems.is_empty() {
        problems.sort();
        return Err(LoadError::Invalid(problems));
    }
    Ok(TenantRepo {
        root: root.to_path_buf(),
        config,
        plans,
        tenants,
        templates,
        migrations,
        listed,
    })
}

fn load_tenant(
    root: &Path,
    files: &Files,
    path: &Path,
) -> Option<Result<TenantSpec, Vec<Diagnostic>>> {
    let file = display_path(root, path);
    let name = path.file_name()?.to_string_lossy().to_string();
    if name.ends_with(".yml") {
        return Some(Err(vec![Diagnostic::new(
            &file,
            "tenant files end in .yaml",
        )
        .hint(format!("rename it to {}", name.replace(".yml", ".yaml")))]));
    }
    let stem = file_stem(path, ".yaml")?;
    let mut problems = Diagnostics::default();
    let source = files.read_bounded(
        root,
        path,
        tenant_file::MAX_TENANT_FILE_BYTES,
        &mut problems,
    );
    Some(match source {
        Some(source) => tenant_file::parse(&file, &stem, &source),
        None => Err(problems.0),
    })
}

/// The names of the slots that plug in (a vhost's, a DNS record's) come from prefixes or a
/// pattern and a slug, so they are checked before any call, as bucket names are.
fn check_target_names(config: &Config, tenants: &[TenantSpec]) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    for plugged in &config.plugged {
        problems.extend(plugged.check_tenants(tenants));
    }
    problems
}

fn duplicate_slugs(tenants: &[TenantSpec]) -> Vec<Diagnostic> {
    let mut first: HashMap<&str, &str> = HashMap::new();
    let mut out = Vec::new();
    for t in tenants {
        if let Some(other) = first.insert(t.slug.as_str(), &t.file) {
            out.push(
                Diagnostic::new(
                    &t.file,
                    format!(
                        "duplicate slug {:?}: also defined in {other}",
                        t.slug.as_str()
                    ),
                )
                .locate(&t.source, "slug")
                .hint("each tenant has exactly one file; remove or rename one of them"),
            );
            first.insert(t.slug.as_str(), other);
        }
    }
    out
}

/// A tenant file naming a Postgres server the config does not have, or one in another
/// region than its own. Its load and cap are placement's to weigh when it is planned.
fn unknown_server(t: &TenantSpec, config: &Config) -> Option<Diagnostic> {
    let name = t.server.as_deref()?;
    if let Some(server) = config.servers.iter().find(|s| s.placement.name == name) {
        let region = &server.placement.region;
        return (*region != t.region).then(|| {
            Diagnostic::new(
                &t.file,
                format!(
                    "the Postgres server {name:?} is in {region}, and the tenant's region is {}: a tenant's data stays in its region",
                    t.region
                ),
            )
            .locate(&t.source, "server")
            .hint("name a server of its region, or leave `server` out for placement to choose")
        });
    }
    let known: Vec<&str> = config
        .servers
        .iter()
        .map(|s| s.placement.name.as_str())
        .collect();
    Some(
        Diagnostic::new(&t.file, format!("no Postgres server is called {name:?}"))
            .locate(&t.source, "server")
            .hint(match known.is_empty() {
                true => {
                    "the config names no postgres_server blocks: leave `server` out".to_string()
                }
                false => format!("servers in tenant-reconcile.hcl: {}", known.join(", ")),
            }),
    )
}

fn check_against_plan(
    t: &TenantSpec,
    plan: Option<&TierPlan>,
    plans: &BTreeMap<String, TierPlan>,
) -> Vec<Diagnostic> {
    let Some(plan) = plan else {
        let known: Vec<&str> = plans.keys().map(String::as_str).collect();
        return vec![
            Diagnostic::new(&t.file, format!("unknown plan {:?}", t.plan))
                .locate(&t.source, "plan")
                .hint(
                    match crate::diagnostic::did_you_mean(&t.plan, known.iter().copied()) {
                        Some(close) => format!(
                            "did you mean {close:?}? plans in plans/: {}",
                            known.join(", ")
                        ),
                        None => format!("plans in plans/: {}", known.join(", ")),
                    },
                ),
        ];
    };
    let mut out = Vec::new();
    for flag in t.features.keys() {
        if !plan.features.contains_key(flag) {
            out.push(
                Diagnostic::new(
                    &t.file,
                    format!("plan {} declares no feature flag {flag:?}", plan.name),
                )
                .locate(&t.source, &format!("features.{flag}"))
                .hint(declared_hint(flag, &plan.file, &plan.features)),
            );
        }
    }
    out.extend(beyond_limits(t, plan));
    for quota in t.quotas.keys() {
        if !plan.quotas.contains_key(quota) {
            out.push(
                Diagnostic::new(
                    &t.file,
                    format!("plan {} declares no quota {quota:?}", plan.name),
                )
                .locate(&t.source, &format!("quotas.{quota}"))
                .hint(declared_hint(quota, &plan.file, &plan.quotas)),
            );
        }
    }
    out
}

/// What a tenant's file asks for beyond its plan's `limits`.
fn beyond_limits(t: &TenantSpec, plan: &TierPlan) -> Vec<Diagnostic> {
    let limits = &plan.limits;
    let refused = |field: String, asked: String, max: String| {
        Diagnostic::new(
            &t.file,
            format!(
                "{asked} is beyond what plan {} allows its tenants ({max}: the limits in {})",
                plan.name, plan.file
            ),
        )
        .locate(&t.source, &field)
        .hint("put the tenant on a plan that gives it, or raise the plan's limit in a change of its own")
    };
    let mut out = Vec::new();
    if let (Some(asked), Some(max)) = (t.isolation, limits.isolation) {
        if asked > max {
            out.push(refused(
                "isolation".into(),
                asked.as_str().into(),
                format!("at most {}", max.as_str()),
            ));
        }
    }
    for (quota, asked) in &t.quotas {
        if let Some(max) = limits.quotas.get(quota).filter(|max| asked > *max) {
            out.push(refused(
                format!("quotas.{quota}"),
                asked.to_string(),
                format!("at most {max}"),
            ));
        }
    }
    for (flag, on) in &t.features {
        if *on && limits.features.get(flag) == Some(&false) {
            out.push(refused(
                format!("features.{flag}"),
                "true".into(),
                "it may not be turned on".into(),
            ));
        }
    }
    out
}

/// What a plan declares, with the one `name` was likely meant as first.
fn declared_hint<V>(name: &str, file: &str, declared: &BTreeMap<String, V>) -> String {
    let close = crate::diagnostic::did_you_mean(name, declared.keys().map(String::as_str));
    match close {
        Some(close) => format!(
            "did you mean {close:?}? {file} declares: {}",
            keys(declared)
        ),
        None => format!("{file} declares: {}", keys(declared)),
    }
}

fn keys<V>(m: &BTreeMap<String, V>) -> String {
    if m.is_empty() {
        return "nothing".into();
    }
    m.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
}

fn file_stem(path: &Path, ext: &str) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(ext).map(str::to_string)
}

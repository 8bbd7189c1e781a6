//! Command-line arguments (clap). Each command lives in its own module and calls one
//! operation of the library.

mod apply;
mod audit;
mod check;
pub mod closed_pipe;
mod credentials;
mod events;
mod export;
mod force_unlock;
mod generate;
mod interrupt;
pub mod log;
mod plan;
mod print_lines;
mod rollout;
mod scaffold;
mod show;
mod uncommitted;
mod validate;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tenant_reconcile::diagnostic::Diagnostics;
use tenant_reconcile::repo::LoadError;

#[derive(Debug, Parser)]
#[command(
    name = "tenant-reconcile",
    version,
    about = "Provision the tenants of a multi-tenant SaaS from files in a git repository: plan, then apply.",
    propagate_version = true
)]
pub struct Cli {
    /// Run as if started in DIR.
    #[arg(short = 'C', value_name = "DIR", global = true)]
    pub dir: Option<PathBuf>,
    /// When to colour output.
    #[arg(long, value_enum, default_value_t = ColorWhen::Auto, global = true)]
    pub color: ColorWhen,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a new tenant repo (one plan, one tenant, a template, a migration, a config) that
    /// validates and applies at once on the local target.
    Init(scaffold::InitArgs),
    /// Write a new tenant file, refused as validate would refuse it.
    NewTenant(scaffold::NewTenantArgs),
    /// Check every tenant, plan and template file; report every problem.
    Validate(validate::ValidateArgs),
    /// Show what apply would create, change or destroy.
    Plan(plan::PlanArgs),
    /// Carry out a plan, in idempotent, checkpointed steps.
    Apply(apply::ApplyArgs),
    /// Show the recorded state.
    Show(show::ShowArgs),
    /// Inspect the recorded state.
    #[command(subcommand)]
    State(show::StateCommand),
    /// Print a tenant's database login (a connection URL on Postgres). It is a secret.
    Credentials(credentials::CredentialsArgs),
    /// Export a tenant's data: each table as CSV, its bucket's objects, and a manifest with
    /// every file's sha256.
    Export(export::ExportArgs),
    /// Print presigned download links to a tenant's offboarding export kept in S3 (a secret).
    ExportUrl(export::ExportUrlArgs),
    /// Run the smoke tests of active tenants and print their health (exit 0 healthy, 2
    /// unhealthy, 1 error): for cron and alerting.
    Check(check::CheckArgs),
    /// Deliver the outbox's events to the config's subscribers.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Print the deletion audit: every purged resource, what it held, when, by which run and
    /// after which export.
    Audit(audit::AuditArgs),
    /// A change to plans, templates or migrations going out in waves: its status, or pause,
    /// resume or abort it.
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// Remove a state lock left by a run that is gone (s3 state backend), given its id.
    ForceUnlock(force_unlock::ForceUnlockArgs),
    /// Validate and plan again on every save of a tenant, plan, template or migration file.
    Watch(watch::WatchArgs),
    /// Print the JSON Schema of tenant files (with this repo's plans) or of the config.
    Schema(generate::SchemaArgs),
    /// Print shell completions: `tenant-reconcile completions bash > /etc/bash_completion.d/tenant-reconcile`.
    Completions(generate::CompletionsArgs),
    /// Print the man page (roff): `tenant-reconcile man > tenant-reconcile.1`; with `--dir`,
    /// write it and a page for each subcommand (`tenant-reconcile-plan.1`, which it refers to).
    Man(generate::ManArgs),
}

/// Flags shared by plan and apply.
#[derive(Debug, Default, Args)]
pub struct SelectArgs {
    /// Read live resources to notice drift (the default).
    #[arg(long, overrides_with = "no_refresh")]
    pub refresh: bool,
    /// Compare with the recorded state only.
    #[arg(long = "no-refresh")]
    pub no_refresh: bool,
    /// Only this tenant (repeatable).
    #[arg(long = "tenant", value_name = "SLUG")]
    pub tenants: Vec<String>,
    /// Go on although many recorded tenants have no file any more. They are never destroyed.
    #[arg(long)]
    pub allow_missing_tenants: bool,
    /// Give this tenant's database role a new password (repeatable): its credentials
    /// version goes up by one, and the password derived from it replaces the old one.
    #[arg(long = "rotate-credentials", value_name = "SLUG")]
    pub rotate_credentials: Vec<String>,
    /// Let apply replace resources: a tenant moving to another isolation mode gets a new
    /// slice, and the old one is kept with its data.
    #[arg(long)]
    pub allow_replace: bool,
    /// The master key has changed on purpose: plan re-keys every tenant's role with a
    /// password derived from the new key, and the state records the new key. Without it, a
    /// key other than the recorded one is refused.
    #[arg(long)]
    pub rotate_master_key: bool,
    /// Adopt this tenant's resources that exist but are not this state's (repeatable): made
    /// by hand, by another tool or by another state. The plan shows each one to be imported
    /// with the fields apply would change; apply marks them as this state's.
    #[arg(long = "import", value_name = "SLUG")]
    pub import: Vec<String>,
    /// Let apply purge more tenants than `safety.max_purges_per_run` in one run.
    #[arg(long)]
    pub allow_mass_purge: bool,
}

impl SelectArgs {
    pub fn options(&self) -> anyhow::Result<tenant_reconcile::ops::PlanOptions> {
        let slugs = |flag: &str, values: &[String]| {
            values
                .iter()
                .map(|s| {
                    tenant_reconcile::slug::Slug::parse(s)
                        .map_err(|e| anyhow::anyhow!("{flag} {s:?}: {e}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()
        };
        Ok(tenant_reconcile::ops::PlanOptions {
            refresh: !self.no_refresh,
            tenants: if self.tenants.is_empty() {
                None
            } else {
                Some(slugs("--tenant", &self.tenants)?)
            },
            allow_missing_tenants: self.allow_missing_tenants,
            rotate_credentials: slugs("--rotate-credentials", &self.rotate_credentials)?,
            allow_replace: self.allow_replace,
            rotate_master_key: self.rotate_master_key,
            import: slugs("--import", &self.import)?,
            allow_mass_purge: self.allow_mass_purge,
            reach_of_changes: false,
        })
    }
}

/// A hint for arguments spelled as another tool spells them: terraform's single-dash long
/// flags (`-out=plan.bin`, `-auto-approve`), which clap reads as a row of short flags.
pub fn spelling_hint(args: impl Iterator<Item = String>) -> Option<String> {
    for arg in args {
        let Some(flag) = arg.strip_prefix('-').filter(|f| !f.starts_with('-')) else {
            continue;
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        if name.len() > 1 && name.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
            let long = match value {
                Some(v) => format!("--{name} {v}"),
                None => format!("--{name}"),
            };
            return Some(format!(
                "long options take two dashes here: `{long}`, not `{arg}` (terraform's spelling)"
            ));
        }
    }
    None
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (try 30s, 5m)"))
}

/// What a command asks the process to exit with.
pub type ExitCode = i32;

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.color {
        ColorWhen::Auto => {}
        ColorWhen::Always => anstream::ColorChoice::Always.write_global(),
        ColorWhen::Never => anstream::ColorChoice::Never.write_global(),
    }
    // As if started in DIR (like git -C): relative paths such as `plan --out FILE` or a
    // plan file to apply are relative to it too.
    if let Some(dir) = &cli.dir {
        std::env::set_current_dir(dir)
            .map_err(|e| anyhow::anyhow!("cannot work in {} (-C): {e}", dir.display()))?;
    }
    let cwd = std::env::current_dir()?;
    let root = repo_root(&cwd);
    match cli.command {
        Command::Init(args) => scaffold::init(&cwd, args),
        Command::NewTenant(args) => scaffold::new_tenant(&root, args),
        Command::Schema(args) => generate::schema(&root, args),
        Command::Completions(args) => generate::completions(args),
        Command::Man(args) => generate::man(args),
        Command::Validate(args) => validate::run(&root, args),
        Command::Plan(args) => plan::run(&root, args).await,
        Command::Apply(args) => apply::run(&root, args, interrupt::listen(interrupt::APPLY)?).await,
        Command::Show(args) => show::show(&root, args).await,
        Command::State(cmd) => show::state(&root, cmd).await,
        Command::Credentials(args) => credentials::run(&root, args).await,
        Command::Export(args) => export::run(&root, args).await,
        Command::Audit(args) => audit::run(&root, args).await,
        Command::Check(args) => check::run(&root, args).await,
        Command::Events(cmd) => events::run(&root, cmd).await,
        Command::ExportUrl(args) => export::url(&root, args).await,
        Command::ForceUnlock(args) => force_unlock::run(&root, args).await,
        Command::Rollout(cmd) => rollout::run(&root, cmd).await,
        Command::Watch(args) => watch::run(&root, args).await,
    }
}

/// The tenant repo `dir` is in, found as git finds its repository: within the git
/// repository `dir` is in, the nearest folder up from `dir` with a `tenants/` folder or a
/// `tenant-reconcile.hcl`. Outside git, or without one, `dir` itself (whose error then says
/// what is missing): the search never leaves the repository, so a stray `tenants/` folder
/// higher up is never taken for the repo. Inside a repo's `tenants/` folder (`-C
/// tenants/eu`), git or not, the folder holding it.
fn repo_root(dir: &std::path::Path) -> PathBuf {
    let Some(top) = dir.ancestors().find(|a| a.join(".git").exists()) else {
        let holding_tenants = dir
            .ancestors()
            .skip(1)
            .find(|a| dir.starts_with(a.join("tenants")) && a.join("plans").is_dir());
        return holding_tenants.unwrap_or(dir).to_path_buf();
    };
    for candidate in dir.ancestors() {
        if candidate.join("tenants").is_dir()
            || candidate
                .join(tenant_reconcile::repo::config::CONFIG_FILE)
                .is_file()
        {
            return candidate.to_path_buf();
        }
        if candidate == top {
            break;
        }
    }
    dir.to_path_buf()
}

/// Prints an error as the binary does on exit: each problem of the input files with its
/// place, or the error and its causes.
pub fn report(e: &anyhow::Error) {
    let style = anstyle::AnsiColor::Red.on_default().bold();
    match diagnostics(e) {
        Some(d) => {
            for problem in &d.0 {
                anstream::eprintln!("{style}error:{style:#} {problem}");
            }
            let n = d.len();
            anstream::eprintln!("{n} problem{} found", if n == 1 { "" } else { "s" });
        }
        None => anstream::eprintln!("{style}error:{style:#} {}", chain(e)),
    }
}

/// The problems in the input files, when that is what the error is.
fn diagnostics(e: &anyhow::Error) -> Option<&Diagnostics> {
    match e.downcast_ref::<tenant_reconcile::Error>() {
        Some(tenant_reconcile::Error::Invalid(d)) => Some(d),
        Some(tenant_reconcile::Error::Load(LoadError::Invalid(d))) => Some(d),
        _ => match e.downcast_ref::<LoadError>() {
            Some(LoadError::Invalid(d)) => Some(d),
            _ => e.downcast_ref::<Diagnostics>(),
        },
    }
}

/// The error and its causes, each said once.
fn chain(e: &anyhow::Error) -> String {
    tenant_reconcile::causes::chain(e.as_ref() as &dyn std::error::Error)
}

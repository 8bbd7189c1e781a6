//! Command-line arguments (clap). Each command lives in its own module and calls one
//! operation of the library.

mod apply;
mod credentials;
mod plan;
mod show;
mod validate;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Check every tenant, plan and template file; report every problem.
    Validate,
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
}

/// Flags shared by plan and apply.
#[derive(Debug, Args)]
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
            tenants: slugs("--tenant", &self.tenants)?,
            allow_missing_tenants: self.allow_missing_tenants,
            rotate_credentials: slugs("--rotate-credentials", &self.rotate_credentials)?,
            allow_replace: self.allow_replace,
        })
    }
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
    let root = match &cli.dir {
        Some(d) => d.clone(),
        None => std::env::current_dir()?,
    };
    match cli.command {
        Command::Validate => validate::run(&root),
        Command::Plan(args) => plan::run(&root, args).await,
        Command::Apply(args) => apply::run(&root, args).await,
        Command::Show(args) => show::show(&root, args).await,
        Command::State(cmd) => show::state(&root, cmd).await,
        Command::Credentials(args) => credentials::run(&root, args).await,
    }
}

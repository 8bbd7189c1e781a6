use std::path::Path;

use clap::{Args, Subcommand};
use tenant_reconcile::repo;
use tenant_reconcile::state::local::LocalBackend;
use tenant_reconcile::state::{State, StateBackend};
use tenant_reconcile::workspace::Workspace;

use super::ExitCode;

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Print the state as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// List every recorded resource address.
    List,
    /// Show one tenant: lifecycle, current step and resources.
    Show {
        /// The tenant's slug.
        slug: String,
    },
}

/// Reads the state. Showing it needs the config (where the state is), but not valid tenant
/// files: an operator looking at the state while a tenant file is broken still sees it.
async fn load(root: &Path) -> anyhow::Result<State> {
    let backend: Box<dyn StateBackend> = match Workspace::open(root) {
        Ok(ws) => ws.backend(),
        Err(tenant_reconcile::Error::Load(repo::LoadError::Invalid(_))) => {
            Box::new(LocalBackend::new(root.join(".tenant-reconcile/state.json")))
        }
        Err(e) => return Err(e.into()),
    };
    Ok(backend.load().await?)
}

pub async fn show(root: &Path, args: ShowArgs) -> anyhow::Result<ExitCode> {
    let state = load(root).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&state)?);
        return Ok(0);
    }
    if state.is_new() {
        println!("No state yet: nothing has been applied.");
        return Ok(0);
    }
    println!("State serial {}, lineage {}", state.serial, state.lineage);
    if let Some(c) = &state.git_commit {
        println!("Last applied from commit {c}");
    }
    println!();
    let width = state
        .tenants
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(6)
        .max(6);
    println!(
        "{:width$}  {:14}  {:10}  STEP",
        "TENANT", "LIFECYCLE", "PLAN"
    );
    for (slug, t) in &state.tenants {
        let plan = t
            .resources
            .get(&tenant_reconcile::desired::Key::new(
                tenant_reconcile::desired::Kind::Registry,
            ))
            .and_then(|a| a.get("plan"))
            .and_then(|p| p.as_str())
            .unwrap_or("-");
        println!(
            "{slug:width$}  {:14}  {plan:10}  {}",
            t.lifecycle.as_str(),
            t.step.as_deref().unwrap_or("-")
        );
    }
    Ok(0)
}

pub async fn state(root: &Path, cmd: StateCommand) -> anyhow::Result<ExitCode> {
    let state = load(root).await?;
    match cmd {
        StateCommand::List => {
            for (slug, t) in &state.tenants {
                for key in t.resources.keys() {
                    println!("{slug}/{key}");
                }
            }
            Ok(0)
        }
        StateCommand::Show { slug } => {
            let Some(t) = state.tenants.get(&slug) else {
                anyhow::bail!("no tenant {slug:?} in the state\n  hint: `tenant-reconcile state list` lists what is recorded");
            };
            println!("{slug}");
            println!("  lifecycle:           {}", t.lifecycle);
            println!(
                "  step:                {}",
                t.step.as_deref().unwrap_or("-")
            );
            println!(
                "  tenant id:           {}",
                t.tenant_id.as_deref().unwrap_or("-")
            );
            println!("  credentials version: {}", t.credentials_version);
            println!(
                "  applied from commit: {}",
                t.applied_commit.as_deref().unwrap_or("-")
            );
            println!("  updated at:          {}", t.updated_at);
            for (key, attrs) in &t.resources {
                println!("\n  {slug}/{key}");
                let width = attrs.keys().map(str::len).max().unwrap_or(0);
                for (k, v) in attrs {
                    println!("      {k:width$} = {v}");
                }
            }
            Ok(0)
        }
    }
}

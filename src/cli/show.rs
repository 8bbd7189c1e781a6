use std::path::Path;

use clap::{Args, Subcommand};
use tenant_reconcile::repo;
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
    /// Forget tenants whose files are gone, without touching anything they have: their
    /// role, data, bucket and files stay as they are, and they leave every plan.
    Rm {
        /// The tenants' slugs.
        #[arg(required = true, value_name = "SLUG")]
        slugs: Vec<String>,
        /// How long to wait for the state lock (e.g. 30s, 5m).
        #[arg(long, value_parser = super::parse_duration, default_value = "0s", value_name = "DURATION")]
        lock_timeout: std::time::Duration,
    },
}

/// Reads the state. Showing it needs the config (where the state is), but not valid tenant
/// files: an operator looking at the state while a tenant file is broken still sees it.
async fn load(root: &Path) -> anyhow::Result<State> {
    let backend: Box<dyn StateBackend> = match Workspace::open(root) {
        Ok(ws) => ws.backend(),
        Err(e @ tenant_reconcile::Error::Load(repo::LoadError::Invalid(_))) => {
            match Workspace::config_backend(root)? {
                Some(backend) => backend,
                None => return Err(e.into()),
            }
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
        "{:width$}  {:14}  {:10}  {:24}  {:28}  LAST APPLY",
        "TENANT", "LIFECYCLE", "PLAN", "STEP", "HEALTH"
    );
    let mut failures = Vec::new();
    for (slug, t) in &state.tenants {
        let plan = t
            .resources
            .get(&tenant_reconcile::desired::Key::new(
                tenant_reconcile::desired::Kind::REGISTRY,
            ))
            .and_then(|a| a.get("plan"))
            .and_then(|p| p.as_str())
            .unwrap_or("-");
        let outcome = match &t.last_failure {
            Some(f) => {
                failures.push((slug, f));
                format!("FAILED at {} ({})", f.step, attempts(f.attempts))
            }
            // A step recorded and no failure: the apply that took it did not finish (it
            // was stopped, or is running now), which is not `ok`.
            None => match &t.step {
                Some(step) => format!("not finished (at {step})"),
                None => "ok".to_string(),
            },
        };
        println!(
            "{slug:width$}  {:14}  {plan:10}  {:24}  {:28}  {outcome}",
            t.lifecycle.as_str(),
            t.step.as_deref().unwrap_or("-"),
            health_cell(t)
        );
    }
    let owed: Vec<_> = state
        .tenants
        .iter()
        .flat_map(|(slug, t)| {
            t.hooks
                .iter()
                .filter(|r| r.done_at.is_none())
                .map(move |r| (slug, r))
        })
        .collect();
    if !owed.is_empty() {
        println!("\nHooks owed (retried by later applies):");
        for (slug, r) in owed {
            println!(
                "  {slug}/hook/{} ({}): failed {} tr{}{}",
                r.hook,
                r.moment,
                r.attempts,
                if r.attempts == 1 { "y" } else { "ies" },
                r.last_error
                    .as_deref()
                    .map(|e| format!(", last: {}", e.lines().next().unwrap_or_default()))
                    .unwrap_or_default()
            );
        }
    }
    if !failures.is_empty() {
        println!();
    }
    for (slug, f) in &failures {
        println!("{slug} failed at {} on {}: {}", f.step, f.at, f.error);
    }
    let leaving = offboarding_lines(root, &state);
    if !leaving.is_empty() {
        println!("\nOffboarding:");
        for line in leaving {
            println!("  {line}");
        }
    }
    let retired: Vec<_> = state
        .tenants
        .iter()
        .flat_map(|(slug, t)| {
            t.retired
                .iter()
                .filter(|r| !r.is_recorded(&t.resources))
                .map(move |r| (slug, r))
        })
        .collect();
    if !retired.is_empty() {
        println!("\nLeft behind by replaces (kept with their data; exported and purged with their tenant):");
        for (slug, r) in retired {
            println!(
                "  {slug}/{}  {}, since {}",
                r.address_key(),
                r.resource,
                r.retired_at
            );
        }
    }
    if !state.released.is_empty() {
        println!("\nReleased (forgotten with `state rm`, their resources left as they were):");
        for r in &state.released {
            println!("  {} by {} at {}", r.slug, r.by, r.at);
        }
    }
    Ok(0)
}

/// Where each leaving tenant is: held until when (its plan's retention, from the repo when
/// its files load), being purged, or a tombstone since when.
fn offboarding_lines(root: &Path, state: &State) -> Vec<String> {
    use tenant_reconcile::state::Lifecycle;
    let ws = Workspace::open(root).ok();
    let retention = |slug: &str| {
        let ws = ws.as_ref()?;
        let spec = ws.repo.tenants.iter().find(|t| t.slug.as_str() == slug)?;
        Some(ws.repo.plans.get(&spec.plan)?.retention_days)
    };
    let export = tenant_reconcile::desired::Key::new(tenant_reconcile::desired::Kind::EXPORT);
    let mut out = Vec::new();
    for (slug, t) in &state.tenants {
        let location = t
            .resources
            .get(&export)
            .map(|e| e.str("location").to_string());
        match (t.lifecycle, &t.purge) {
            (Lifecycle::Deprovisioned, p) => out.push(format!(
                "{slug} deprovisioned on {}: a tombstone; `tenant-reconcile audit {slug}` lists what was purged{}",
                p.as_ref()
                    .and_then(|p| p.finished_at.as_deref())
                    .unwrap_or(&t.updated_at),
                erasure_export(p.as_ref(), location.as_deref()),
            )),
            (_, Some(p)) => out.push(format!(
                "{slug} is being purged (since {}); the next apply finishes it",
                p.started_at
            )),
            (Lifecycle::Deprovisioning, None) => {
                let held = retention(slug)
                    .and_then(|days| tenant_reconcile::offboarding::hold_until(t, days));
                out.push(match (held, location) {
                    (Some(until), Some(at)) => format!(
                        "{slug} held until {}, then purged (its export: {at})",
                        tenant_reconcile::offboarding::day(until)
                    ),
                    (None, Some(at)) => format!("{slug} exported to {at} and held"),
                    (_, None) => format!("{slug} revoked; its export is still to be made"),
                });
            }
            _ => {}
        }
    }
    out
}

/// What is left of an erased tenant's data: its export until its end, or nothing.
fn erasure_export(
    purge: Option<&tenant_reconcile::state::Purge>,
    location: Option<&str>,
) -> String {
    match (purge, location) {
        (Some(p), Some(at)) if p.erasure => match p.export_until.as_deref() {
            Some(until) => format!(
                "; its erasure export {at} is kept until {}, then removed",
                &until[..until.len().min(10)]
            ),
            None => format!("; its export {at} is kept"),
        },
        (Some(p), None) if p.erasure => match p.export_removed_at.as_deref() {
            Some(at) => format!(
                "; its erasure export was removed on {}",
                &at[..at.len().min(10)]
            ),
            None => "; its export was waived".into(),
        },
        _ => String::new(),
    }
}

fn attempts(n: u32) -> String {
    if n == 1 {
        "1 attempt".to_string()
    } else {
        format!("{n} attempts in a row")
    }
}

pub async fn state(root: &Path, cmd: StateCommand) -> anyhow::Result<ExitCode> {
    if let StateCommand::Rm {
        slugs,
        lock_timeout,
    } = &cmd
    {
        return rm(root, slugs, *lock_timeout).await;
    }
    let state = load(root).await?;
    match cmd {
        StateCommand::List => {
            for (slug, t) in &state.tenants {
                for key in t.resources.keys() {
                    println!("{slug}/{key}");
                }
                for r in t.retired.iter().filter(|r| !r.is_recorded(&t.resources)) {
                    println!("{slug}/{}", r.address_key());
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
            if let Some(inputs) = tenant_reconcile::rollout::inputs_of(&state, &slug) {
                println!("  shared inputs:       {inputs}");
            }
            println!("  updated at:          {}", t.updated_at);
            match &t.last_failure {
                Some(f) => println!(
                    "  last apply:          FAILED at {} on {} ({}): {}",
                    f.step,
                    f.at,
                    attempts(f.attempts),
                    f.error
                ),
                None => println!("  last apply:          ok"),
            }
            println!("  health:              {}", health_cell(t));
            if !t.outputs.is_empty() {
                println!("  outputs:");
                for (k, v) in &t.outputs {
                    println!("      {k} = {v:?}");
                }
            }
            for run in t.hooks.iter().filter(|r| r.done_at.is_none()) {
                println!(
                    "  hook {} owed ({}): {} tr{}, key {}{}",
                    run.hook,
                    run.moment,
                    run.attempts,
                    if run.attempts == 1 { "y" } else { "ies" },
                    run.idempotency_key,
                    run.next_try_at
                        .as_deref()
                        .map(|at| format!(", next try after {at}"))
                        .unwrap_or_default()
                );
            }
            for (hook, done) in &t.hooks_done {
                println!(
                    "  hook {hook} done ({}) at {}, key {}",
                    done.moment, done.at, done.idempotency_key
                );
            }
            if let Some(h) = &t.health {
                println!(
                    "\n  checks at {}: {} passed{}",
                    h.at,
                    h.passed,
                    if h.failed.is_empty() { "" } else { "; failed:" }
                );
                let width = h.failed.iter().map(|c| c.name.len()).max().unwrap_or(0);
                for c in &h.failed {
                    println!(
                        "      {:width$}  {:9}  {:>5} ms  {}",
                        c.name,
                        check_word(c),
                        c.latency_ms,
                        c.message
                    );
                }
            }
            for (key, attrs) in &t.resources {
                println!("\n  {slug}/{key}");
                let width = attrs.keys().map(str::len).max().unwrap_or(0);
                for (k, v) in attrs {
                    println!("      {k:width$} = {v}");
                }
            }
            for r in &t.retired {
                let kept = match r.is_move_leftover() {
                    true => format!("kept, without a login, for its plan's hold (retention_days), then removed by an apply, audited; or with {slug}'s purge"),
                    false => format!("kept with its data until {slug} is purged, and exported with it"),
                };
                println!(
                    "\n  {slug}/{}  # {}, {}: {kept}",
                    r.address_key(),
                    r.resource,
                    r.how_left(),
                );
                let width = r.attrs.keys().map(str::len).max().unwrap_or(0);
                for (k, v) in &r.attrs {
                    println!("      {k:width$} = {v}");
                }
            }
            Ok(0)
        }
        StateCommand::Rm { .. } => unreachable!("handled above"),
    }
}

/// `healthy at 2026-12-01 20:34`, `UNHEALTHY: login, app`, or `-` when never checked.
fn health_cell(t: &tenant_reconcile::state::TenantState) -> String {
    // A tombstone has nothing left to be healthy: its last check's outcome is history.
    let Some(h) = t
        .health
        .as_ref()
        .filter(|_| t.lifecycle != tenant_reconcile::state::Lifecycle::Deprovisioned)
    else {
        return "-".into();
    };
    let at = h.at.get(..16).unwrap_or(&h.at).replace('T', " ");
    if h.healthy() {
        format!("healthy at {at}")
    } else {
        let failed: Vec<&str> = h
            .failed
            .iter()
            .filter(|c| c.gates())
            .map(|c| c.name.as_str())
            .collect();
        format!("UNHEALTHY: {}", failed.join(", "))
    }
}

fn check_word(c: &tenant_reconcile::model::health::CheckOutcome) -> &'static str {
    match (c.ok, c.advisory) {
        (true, _) => "ok",
        (false, true) => "advisory",
        (false, false) => "FAILED",
    }
}

async fn rm(
    root: &Path,
    slugs: &[String],
    lock_timeout: std::time::Duration,
) -> anyhow::Result<ExitCode> {
    let slugs = slugs
        .iter()
        .map(|s| tenant_reconcile::slug::Slug::parse(s).map_err(|e| anyhow::anyhow!("{s:?}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ws = Workspace::open(root)?;
    for r in tenant_reconcile::ops::state_rm(&ws, &slugs, lock_timeout).await? {
        println!(
            "Released {} from the state (recorded as released by {} at {}); nothing of it was changed:",
            r.slug, r.by, r.at
        );
        for address in &r.resources {
            println!("  {address}  left as it is");
        }
    }
    Ok(0)
}

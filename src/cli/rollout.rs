//! `rollout status | pause | resume | abort`.

use std::path::Path;

use clap::Subcommand;
use tenant_reconcile::model::count::counted;
use tenant_reconcile::model::rollout::{Rollout, Status};
use tenant_reconcile::ops::rollout::{act, Act};
use tenant_reconcile::rollout::short;
use tenant_reconcile::state::State;
use tenant_reconcile::workspace::Workspace;

use super::ExitCode;

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// The rollout in flight (or the last one): each wave, its failures, and the next step.
    Status {
        /// Print it as JSON, with each reached tenant's attempts (started, ended, outcome).
        #[arg(long)]
        json: bool,
    },
    /// Stop taking tenants further; those mid-change finish. `resume` goes on.
    Pause(ActArgs),
    /// Go on with a paused or halted rollout: its wave's failures are counted anew.
    Resume(ActArgs),
    /// Call it off: the next apply returns the tenants it reached to the inputs they ran on
    /// before (a migration is never undone: those tenants keep it, and it is recorded).
    Abort(ActArgs),
}

#[derive(Debug, clap::Args)]
pub struct ActArgs {
    /// The rollout's id (`r3`); the one in flight when left out.
    id: Option<String>,
    /// How long to wait for the state lock (e.g. 30s, 5m).
    #[arg(long, value_parser = super::parse_duration, default_value = "0s", value_name = "DURATION")]
    lock_timeout: std::time::Duration,
}

pub async fn run(root: &Path, cmd: RolloutCommand) -> anyhow::Result<ExitCode> {
    let ws = Workspace::open(root)?;
    let (args, what) = match cmd {
        RolloutCommand::Status { json } => {
            let state = ws.backend().load().await?;
            return status(&state, json);
        }
        RolloutCommand::Pause(a) => (a, Act::Pause),
        RolloutCommand::Resume(a) => (a, Act::Resume),
        RolloutCommand::Abort(a) => (a, Act::Abort),
    };
    let r = act(&ws, args.id.as_deref(), what, args.lock_timeout).await?;
    match what {
        Act::Pause => println!(
            "Rollout {} is paused: no tenant is taken further until `tenant-reconcile rollout resume`.",
            r.id
        ),
        Act::Resume => println!(
            "Rollout {} is running again at wave {} of {} ({}): the next apply goes on with it.",
            r.id,
            r.wave + 1,
            r.waves.len(),
            r.waves[r.wave].name
        ),
        Act::Abort => {
            let reached: usize = r.waves[..=r.wave].iter().map(|w| w.tenants.len()).sum();
            println!(
                "Rollout {} is aborted: the next apply returns the {} it reached to the shared inputs of {}.",
                r.id,
                counted(reached, "tenant", "tenants"),
                short(&r.from)
            );
            if !r.kept_migrations.is_empty() {
                println!(
                    "A migration cannot be undone: {} keep{} the schema of {} (recorded in the state).",
                    r.kept_migrations.join(", "),
                    if r.kept_migrations.len() == 1 { "s" } else { "" },
                    short(&r.to)
                );
            }
        }
    }
    Ok(0)
}

fn status(state: &State, json: bool) -> anyhow::Result<ExitCode> {
    let Some(r) = &state.rollout else {
        if json {
            println!("null");
        } else {
            println!("No rollout: a change to plans, templates or migrations starts one when the config has a rollout block.");
        }
        return Ok(0);
    };
    if json {
        let tenants: serde_json::Map<String, serde_json::Value> = r
            .waves
            .iter()
            .flat_map(|w| &w.tenants)
            .filter_map(|slug| {
                let part = state.tenants.get(slug)?.rollout.as_ref()?;
                (part.id == r.id).then(|| (slug.clone(), serde_json::json!(part)))
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "rollout": r,
                "inputs_rev": state.inputs_rev,
                "tenants": tenants,
            }))?
        );
        return Ok(0);
    }
    print!("{}", describe(state, r));
    Ok(0)
}

/// The rollout as `rollout status` prints it.
fn describe(state: &State, r: &Rollout) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "Rollout {}: {}", r.id, r.status.as_str());
    let _ = writeln!(
        out,
        "  from {} to {}: {}",
        short(&r.from),
        short(&r.to),
        r.files.join(", ")
    );
    let _ = writeln!(
        out,
        "  started {}, last moved {}",
        r.started_at, r.updated_at
    );
    let width = r.waves.iter().map(|w| w.name.len()).max().unwrap_or(0);
    for (i, w) in r.waves.iter().enumerate() {
        let applied = w
            .tenants
            .iter()
            .filter(|s| {
                state
                    .tenants
                    .get(s.as_str())
                    .and_then(|t| t.rollout.as_ref())
                    .is_some_and(|p| p.applied(&r.id, &r.to))
            })
            .count();
        let at = match (i.cmp(&r.wave), &w.done_at) {
            (std::cmp::Ordering::Greater, _) => "waiting".to_string(),
            (_, Some(done)) => format!("done {done}"),
            (_, None) => format!("reached {}", w.reached_at.as_deref().unwrap_or("-")),
        };
        let failed = match w.failed.len() {
            0 => String::new(),
            n => format!(", {n} failed"),
        };
        let _ = writeln!(
            out,
            "  wave {} of {}  {:width$}  {:>5} tenant{}  {at}: {applied} applied{failed}; at most {} at a time, bake {}",
            i + 1,
            r.waves.len(),
            w.name,
            w.tenants.len(),
            if w.tenants.len() == 1 { " " } else { "s" },
            w.max_parallel,
            humantime::format_duration(w.bake()),
        );
    }
    if let Some(why) = &r.halted {
        let _ = writeln!(out, "  halted: {why}");
    }
    for f in r.waves.iter().flat_map(|w| &w.failed) {
        let _ = writeln!(out, "  failed: {}: {}", f.slug, f.error);
    }
    if !r.kept_migrations.is_empty() {
        let _ = writeln!(
            out,
            "  kept the schema of {} (a migration is never undone): {}",
            short(&r.to),
            r.kept_migrations.join(", ")
        );
    }
    let next = match r.status {
        Status::Running => match &r.waves[r.wave].done_at {
            Some(done) if r.wave + 1 < r.waves.len() => {
                let until = humantime::parse_rfc3339(done)
                    .map(|t| t + r.waves[r.wave].bake())
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                    .unwrap_or_else(|_| done.clone());
                format!(
                    "wave {} ({}) starts with the first apply after {until}, once wave {} has baked",
                    r.wave + 2,
                    r.waves[r.wave + 1].name,
                    r.wave + 1
                )
            }
            _ => format!(
                "the next apply goes on with wave {} ({})",
                r.wave + 1,
                r.waves[r.wave].name
            ),
        },
        Status::Paused => "`tenant-reconcile rollout resume` goes on; `rollout abort` calls it off".to_string(),
        Status::Halted => "mend the cause (a commit to the shared inputs goes to the waves reached), then `tenant-reconcile rollout resume`; or `rollout abort`".to_string(),
        Status::Aborted => format!(
            "tenants plan from {} again; revert the change, or commit another to start a new rollout",
            short(&r.from)
        ),
        Status::Completed => format!("none: the fleet runs on {}", short(&r.to)),
    };
    let _ = writeln!(out, "  next: {next}");
    out
}

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use tenant_reconcile::apply::progress::Progress;
use tenant_reconcile::ops::{self, ApplyOptions, ApplyOutcome};
use tenant_reconcile::plan::Plan;
use tenant_reconcile::workspace::Workspace;
use tokio_util::sync::CancellationToken;

use super::uncommitted::{self, Source};
use super::{parse_duration, ExitCode, SelectArgs};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan saved with `plan --out`, applied exactly as it is (no question asked).
    planfile: Option<PathBuf>,
    /// Apply without asking.
    #[arg(long)]
    auto_approve: bool,
    /// How many tenants are worked on at once. Tenants purged together go in waves of up
    /// to 32 whose writes to Postgres are batched; their calls to S3, RabbitMQ and Route53
    /// still go N at a time.
    #[arg(long, default_value_t = 10, value_name = "N")]
    parallelism: usize,
    /// Apply the files as committed at this commit, branch or tag (read from git's objects,
    /// no checkout) instead of the working tree; the state records that commit.
    #[arg(long, value_name = "REV", conflicts_with = "planfile")]
    rev: Option<String>,
    /// Refuse to apply when tenant, plan, template or migration files (or the config) have
    /// changes git has not committed: what CI applying from main should use.
    #[arg(long)]
    require_clean: bool,
    /// How long to wait for the state lock (e.g. 30s, 5m).
    #[arg(long, value_parser = parse_duration, default_value = "0s", value_name = "DURATION")]
    lock_timeout: Duration,
    /// Apply only this runner's share of the tenants, the Kth of N (1 ≤ K ≤ N): N runners
    /// given 1/N … N/N apply every tenant once, side by side. A tenant's share depends on
    /// its slug alone. In a Kubernetes Indexed Job it is read from JOB_COMPLETION_INDEX and
    /// JOB_COMPLETIONS when not given.
    #[arg(long, value_name = "K/N", value_parser = ops::Shard::parse, conflicts_with = "planfile")]
    shard: Option<ops::Shard>,
    /// Apply the saved plan beside other runners given the same plan: each claims a few of
    /// its tenants at a time from the state and applies them, until none is left; a runner
    /// that dies leaves its tenants to the others. Needs a state kept on Postgres (or
    /// locally, for runners on one machine).
    #[arg(long, requires = "planfile", conflicts_with = "shard")]
    claim: bool,
    /// Then deliver the outbox's events that are due (this run's among them) to the
    /// config's webhooks, as `events deliver` does.
    #[arg(long)]
    deliver: bool,
    #[command(flatten)]
    select: SelectArgs,
}

impl ApplyArgs {
    /// `apply --auto-approve` with every other flag at its default.
    pub fn auto() -> ApplyArgs {
        ApplyArgs {
            planfile: None,
            auto_approve: true,
            parallelism: 10,
            rev: None,
            require_clean: false,
            lock_timeout: Duration::ZERO,
            shard: None,
            claim: false,
            deliver: false,
            select: SelectArgs::default(),
        }
    }
}

/// Runs the apply; `stop` interrupts it (see `interrupt`).
pub async fn run(
    root: &Path,
    args: ApplyArgs,
    stop: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let deliver = args.deliver;
    let code = apply(root, args, &stop).await?;
    if deliver && !stop.is_cancelled() {
        // The apply's outcome stands whatever delivery meets: its events wait in the outbox.
        let ws = Workspace::open(root)?;
        match tenant_reconcile::delivery::deliver(&ws).await {
            Ok(report) => println!("{}", super::events::summary(&report)),
            Err(e) => anstream::eprintln!(
                "Warning: the events were not delivered: {}",
                tenant_reconcile::causes::chain(&e)
            ),
        }
    }
    Ok(code)
}

async fn apply(root: &Path, args: ApplyArgs, stop: &CancellationToken) -> anyhow::Result<ExitCode> {
    // Without a terminal to ask on (a script, a CI step, an editor's task runner) the plan
    // is still worth showing: the person learns what the apply would do, then how to let it.
    let no_terminal =
        args.planfile.is_none() && !args.auto_approve && !std::io::stdin().is_terminal();
    let ws = Workspace::open_at(root, args.rev.as_deref())?;
    let saved = match &args.planfile {
        Some(p) => Some(ops::read_plan_file(p)?),
        None => None,
    };
    // The state will record a commit, which should hold what was applied. A revision is
    // committed by definition; a saved plan says what was uncommitted when it was made;
    // otherwise the working tree is asked now.
    match &saved {
        Some(plan) => uncommitted::check(
            Source::SavedPlan,
            &plan.uncommitted,
            plan.git_commit.as_deref().or(ws.git_commit.as_deref()),
            args.require_clean,
        )?,
        None if args.rev.is_none() => uncommitted::check(
            Source::WorkingTree,
            &ws.uncommitted_inputs(),
            ws.git_commit.as_deref(),
            args.require_clean,
        )?,
        None => {}
    }
    if args.claim {
        let plan = saved.expect("--claim requires a plan file");
        let file = args
            .planfile
            .as_deref()
            .expect("--claim requires a plan file");
        let plan_id = ops::plan_file_digest(file)?;
        let opts = ApplyOptions {
            shard: None,
            plan: args.select.options()?,
            parallelism: args.parallelism,
            lock_timeout: args.lock_timeout,
            stop: stop.clone(),
        };
        return claim(&ws, plan, &plan_id, &opts).await;
    }
    let shard = match args.shard {
        Some(shard) => {
            // Said first, so that a "No changes" after it reads as this share's.
            anstream::eprintln!("Applying shard {shard}: the tenants of this share only.");
            Some(shard)
        }
        None if args.planfile.is_none() => match ops::Shard::from_env() {
            Some(Ok(shard)) => {
                anstream::eprintln!(
                    "Applying shard {shard} (from JOB_COMPLETION_INDEX and JOB_COMPLETIONS)."
                );
                Some(shard)
            }
            Some(Err(e)) => anyhow::bail!("{e}"),
            None => None,
        },
        None => None,
    };
    let opts = ApplyOptions {
        shard,
        plan: args.select.options()?,
        parallelism: args.parallelism,
        lock_timeout: args.lock_timeout,
        stop: stop.clone(),
    };
    let auto = args.auto_approve;
    let confirm = |plan: &Plan| {
        super::print_lines::plan(plan);
        if auto {
            return true;
        }
        if no_terminal {
            return false;
        }
        if stop.is_cancelled() {
            return false;
        }
        print!("\nDo you want to perform these actions?\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: ");
        let _ = std::io::stdout().flush();
        answer(stop).is_some_and(|a| a.trim() == "yes")
    };
    let progress = Progress::new(false);
    match ops::apply(&ws, saved, &opts, confirm, &progress).await? {
        ApplyOutcome::NoChanges(plan) => {
            super::print_lines::plan(&plan);
            Ok(0)
        }
        ApplyOutcome::Declined if no_terminal => {
            anstream::eprintln!(
                "\nNothing was applied: apply asks before it changes anything, and there is no terminal to ask on.\n  hint: to carry out the plan above, run `tenant-reconcile apply --auto-approve`; or save it with `plan --out FILE` and apply exactly that with `apply FILE`"
            );
            Ok(1)
        }
        ApplyOutcome::Declined => {
            println!("\nApply cancelled.");
            Ok(1)
        }
        ApplyOutcome::Applied { report, .. } if report.stopped().is_some() => {
            let stopped = report.stopped().expect("checked");
            if let Some(said) = &report.rollout {
                anstream::eprintln!("\n{said}");
            }
            for f in report.failed() {
                anstream::eprintln!("  {}: {}", f.slug, f.error.as_deref().unwrap_or_default());
            }
            anstream::eprintln!(
                "\nstopped: {stopped}.\nRun apply again to carry on: finished steps are not repeated, and the hooks stopped run again under the same keys."
            );
            Ok(1)
        }
        ApplyOutcome::Applied { plan, report } => {
            let failed: Vec<_> = report.failed().collect();
            let s = &plan.summary;
            for o in &report.outcomes {
                for w in &o.warnings {
                    anstream::eprintln!("Warning: {}: {w}", o.slug);
                }
            }
            if let Some(said) = &report.rollout {
                let held = match report.halted() {
                    0 => String::new(),
                    n => format!(
                        "\n{} of the wave not started: they stay on the inputs they run on",
                        tenant_reconcile::model::count::counted(n, "tenant", "tenants"),
                    ),
                };
                anstream::println!("\n{said}{held}");
            }
            if failed.is_empty() {
                anstream::println!(
                    "\nApply complete! {} tenant{} reconciled: {}{} added, {} changed, {}{} destroyed.",
                    report.outcomes.len(),
                    if report.outcomes.len() == 1 { "" } else { "s" },
                    if s.import > 0 {
                        format!("{} imported, ", s.import)
                    } else {
                        String::new()
                    },
                    s.add,
                    s.change,
                    if s.replace > 0 {
                        format!("{} replaced, ", s.replace)
                    } else {
                        String::new()
                    },
                    s.destroy
                );
                Ok(0)
            } else {
                anstream::eprintln!(
                    "\nApply finished with errors: {}.",
                    failed_summary(failed.len(), report.outcomes.len())
                );
                for f in failed {
                    anstream::eprintln!("  {}: {}", f.slug, f.error.as_deref().unwrap_or_default());
                }
                anstream::eprintln!(
                    "Run apply again once the cause is fixed: finished steps are not repeated."
                );
                Ok(1)
            }
        }
    }
}

/// `apply PLAN --claim`: this runner's share of the plan, as it claimed it.
async fn claim(
    ws: &Workspace,
    plan: Plan,
    plan_id: &str,
    opts: &ApplyOptions,
) -> anyhow::Result<ExitCode> {
    anstream::eprintln!(
        "Claiming tenants of the saved plan ({} to apply) beside any other runner given it.",
        plan.tenants.len()
    );
    let progress = Progress::new(false);
    let claimed = ops::claim(ws, plan, plan_id, opts, &progress).await?;
    let report = &claimed.report;
    for o in &report.outcomes {
        for w in &o.warnings {
            anstream::eprintln!("Warning: {}: {w}", o.slug);
        }
    }
    let failed: Vec<_> = report.failed().collect();
    let applied = report.outcomes.iter().filter(|o| o.error.is_none()).count();
    anstream::println!(
        "\nThis runner applied {applied} tenant{}{}.",
        if applied == 1 { "" } else { "s" },
        match failed.len() {
            0 => String::new(),
            n => format!("; {n} failed"),
        }
    );
    for f in &failed {
        anstream::eprintln!("  {}: {}", f.slug, f.error.as_deref().unwrap_or_default());
    }
    if !claimed.stale.is_empty() {
        let tenants: Vec<String> = claimed
            .stale
            .iter()
            .map(|s| format!("--tenant {s}"))
            .collect();
        anstream::eprintln!(
            "\nLeft for a fresh plan: {}. A runner that is gone had started them, so the saved plan's steps for them are stale, and this runner's files are not those the plan was made from (another commit, or changes git has not committed), so it did not plan them again.\n  hint: finish them with `tenant-reconcile apply {}`",
            claimed.stale.join(", "),
            tenants.join(" ")
        );
    }
    let t = &claimed.tally;
    let mut parts = vec![format!("{} applied", t.applied)];
    if t.failed > 0 {
        parts.push(format!("{} failed", t.failed));
    }
    if t.stale > 0 {
        parts.push(format!("{} left for a fresh plan", t.stale));
    }
    if t.open() > 0 {
        parts.push(format!("{} not done yet", t.open()));
    }
    anstream::println!(
        "The plan: {} tenant{}, {}, by {} runner{}.",
        t.tenants,
        if t.tenants == 1 { "" } else { "s" },
        parts.join(", "),
        t.runners,
        if t.runners == 1 { "" } else { "s" },
    );
    if let Some(stopped) = report.stopped() {
        anstream::eprintln!(
            "\nstopped: {stopped}.\nRun the same command again to carry on: its tenants not finished went back to the plan's other runners."
        );
        return Ok(1);
    }
    Ok(if failed.is_empty() && claimed.stale.is_empty() {
        0
    } else {
        1
    })
}

/// The line typed at the question, or `None` once the apply is interrupted while it waits
/// (stdin is read on a thread of its own, which a signal does not wake).
fn answer(stop: &CancellationToken) -> Option<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        let _ = tx.send(line);
    });
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => return Some(line),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !stop.is_cancelled() => {}
            Err(_) => return None,
        }
    }
}

/// How many tenants failed, in plain words.
fn failed_summary(failed: usize, total: usize) -> String {
    match (failed, total) {
        (1, 1) => "the tenant failed".to_string(),
        (f, t) if f == t => format!("all {t} tenants failed"),
        (f, t) => {
            let applied = t - f;
            format!(
                "{f} of {t} tenants failed; the other {} applied",
                if applied == 1 {
                    "one was".to_string()
                } else {
                    format!("{applied} were")
                }
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn failures_are_counted_in_plain_words() {
        assert_eq!(super::failed_summary(1, 1), "the tenant failed");
        assert_eq!(super::failed_summary(5, 5), "all 5 tenants failed");
        assert_eq!(
            super::failed_summary(1, 2),
            "1 of 2 tenants failed; the other one was applied"
        );
        assert_eq!(
            super::failed_summary(2, 5),
            "2 of 5 tenants failed; the other 3 were applied"
        );
    }
}

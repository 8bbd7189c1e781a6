//! `apply PLAN --claim`: one of several runners draining a saved plan together. Each claims
//! a few of the plan's tenants at a time from the state (`state/claims.rs`), applies them
//! under a lease on each, and marks them done, until no tenant is left; a runner that dies
//! leaves its claims to the others. Every tenant is applied once, by whichever runner
//! claimed it, and the runners' tallies add up to the plan.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use super::apply::{check_plan_key, check_purges, check_replacements, ApplyOptions};
use super::plan::{make_plan, KeyUse, PlanOptions};
use crate::apply::Executor;
use crate::apply::{progress::Progress, ApplyReport, TenantOutcome};
use crate::plan::{Action, Plan, TenantAction, TenantPlan};
use crate::state::backend::{Ended, PlanClaims, Tally};
use crate::state::{LockInfo, State, StateBackend, StateError, StateLock, Wait};
use crate::workspace::Workspace;
use crate::Error;

/// What one claiming runner did, and where the plan stands as it leaves.
pub struct Claimed {
    /// This runner's tenants, as any apply reports them.
    pub report: ApplyReport,
    /// Tenants this runner found started by a runner that is gone (their records moved since
    /// the plan was made, so its steps for them are stale) and could not plan again: its
    /// files are not those the plan was made from. A fresh plan finishes them.
    pub stale: Vec<String>,
    /// The plan's tenants, by how they ended, over every runner.
    pub tally: Tally,
}

/// What names a saved plan among others: a digest of its file, the same for every runner
/// given the same file (whatever build reads it).
pub fn plan_file_digest(path: &std::path::Path) -> Result<String, Error> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).map_err(|e| Error::BadPlanFile {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(hex::encode(&Sha256::digest(&bytes)[..16]))
}

/// How long a runner with nothing left to claim waits between looks at the others' claims.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// Applies the tenants of the saved `plan` this runner claims, beside other runners doing
/// the same, until every tenant of the plan is done.
pub async fn claim(
    ws: &Workspace,
    plan: Plan,
    plan_id: &str,
    opts: &ApplyOptions,
    progress: &Progress,
) -> Result<Claimed, Error> {
    if plan.rotates_master_key {
        return Err(Error::Usage(
            "--claim with a plan that rotates the master key: a rotation re-keys every tenant, so one runner carries it out for the whole state\n  hint: apply the plan without --claim".into(),
        ));
    }
    if plan.tenants.iter().any(|t| t.in_rollout) {
        return Err(Error::Refused(
            "the plan takes tenants of a rollout's wave on, whose limit of tenants at once is counted by one runner; nothing was applied\n  hint: apply this plan without --claim (`tenant-reconcile apply FILE`)".into(),
        ));
    }
    if plan.state.lineage.is_empty() {
        return Err(Error::Refused(
            "the plan was made before the state was first written, and runners claim tenants only from a state written once already (its first write is the whole state's); nothing was applied\n  hint: apply this plan without --claim (`tenant-reconcile apply FILE`), or apply one tenant first (`apply --tenant SLUG`) and make the plan again".into(),
        ));
    }
    if plan.state.records.is_none() {
        return Err(Error::Refused(
            "the plan does not say which state record each of its tenants was planned from: it was made from a state kept as one document (by an older tenant-reconcile, or before the state was converted to records). Runners cannot check its tenants one by one, so nothing was applied\n  hint: claiming needs a state kept on Postgres or locally, and a plan made from it with `plan --out FILE`".into(),
        ));
    }
    check_replacements(&plan, opts.plan.allow_replace)?;
    // Every runner weighs the whole plan, so all of them refuse it or none.
    check_purges(
        &plan,
        ws.repo.config.safety.max_purges_per_run,
        opts.plan.allow_mass_purge,
    )?;
    let backend = ws.backend();
    let header = backend.load_tenants(&BTreeSet::new()).await?;
    let key = check_plan_key(&plan, &header, ws.key()?)?;
    let wait = Wait {
        timeout: opts.lock_timeout,
        stop: opts.stop.clone(),
    };
    let info = LockInfo::new("apply --claim");
    let run_by = info.who.clone();
    let slugs: Vec<String> = plan.tenants.iter().map(|t| t.slug.to_string()).collect();
    // Where each tenant's plan is: a batch finds its own without walking the plan.
    let at: HashMap<&str, usize> = slugs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let claims = backend.claims(info, &wait, plan_id, &slugs).await?;
    // What the state records beside its tenants (migrations, released slugs) is checked as
    // a plain apply checks it, while nothing of the plan is done: after that, the runners'
    // own runs move it.
    let unmoved = match claims.tally().await {
        Ok(t) if t.applied + t.failed + t.stale == 0 => {
            plan.state.lineage == header.lineage
                && plan
                    .state
                    .records
                    .as_ref()
                    .is_none_or(|r| r.header == header.header_digest())
        }
        Ok(_) => true,
        Err(e) => {
            let _ = claims.close().await;
            return Err(e.into());
        }
    };
    if !unmoved {
        let _ = claims.close().await;
        return Err(Error::StaleRecords {
            moved: vec![
                "what the state records beside its tenants (migrations, key, released slugs)"
                    .into(),
            ],
        });
    }
    let targets = Arc::new(ws.targets(plan.migrations.clone()));
    let subscribers = ws.repo.config.subscribers();
    let drained = async {
        targets
            .control
            .register_subscribers(&subscribers)
            .await
            .map_err(|e| Error::failed("recording the event subscribers", e))?;
        let executor = super::apply::executor(ws, &plan, opts, targets.clone(), key, run_by);
        let mut report = ApplyReport::default();
        let mut stale = Vec::new();
        // A batch as large as the tenants applied at once: each batch costs a few
        // statements, and a runner killed mid-batch leaves no more than that to the others.
        let batch_size = opts.parallelism.max(1);
        progress.start(plan.tenants.len());
        let mut same_files = None;
        let mut waiting_for = None;
        // Claims pass by tenants held already, so a lease is taken at once or not at all.
        let no_wait = Wait {
            timeout: Duration::ZERO,
            stop: opts.stop.clone(),
        };
        while !opts.stop.is_cancelled() {
            let batch = claims.claim(batch_size).await?;
            if batch.is_empty() {
                let open = claims.tally().await?.open();
                if open == 0 {
                    break;
                }
                // The rest are in other runs' hands: wait, to take over any that die. Said
                // when the count moves, so a runner that does not end says why.
                if waiting_for != Some(open) {
                    waiting_for = Some(open);
                    progress.note(&format!(
                        "waiting for {open} tenant{} of the plan that other runs hold (taken over if those runs end without them)",
                        if open == 1 { "" } else { "s" }
                    ));
                }
                tokio::select! {
                    () = tokio::time::sleep(IDLE_POLL) => {}
                    () = opts.stop.cancelled() => {}
                }
                continue;
            }
            let held: BTreeSet<String> = batch.iter().cloned().collect();
            let mut lock = match claims.lock(&held, &no_wait).await {
                Ok(lock) => lock,
                // Another run took one of them between the claim and the lease (claims pass
                // by tenants held already): given back, for whoever comes once it is let go.
                Err(StateError::Locked { holder }) => {
                    debug!(%holder, "a claimed tenant is held by another run");
                    claims.give_back().await?;
                    tokio::select! {
                        () = tokio::time::sleep(IDLE_POLL) => {}
                        () = opts.stop.cancelled() => {}
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let batch = Batch {
                backend: &*backend,
                plan: &plan,
                at: &at,
                ws,
                opts,
                executor: &executor,
                progress,
            };
            let ran = batch
                .apply(&held, &*claims, lock.as_mut(), &mut same_files)
                .await;
            // Its rows were marked before the leases go: a runner dying in between leaves
            // nothing done unmarked.
            let unlocked = lock.unlock().await;
            let (outcomes, left) = ran?;
            unlocked?;
            stale.extend(left);
            report.outcomes.extend(outcomes);
        }
        Ok::<_, Error>((report, stale))
    }
    .await;
    let tally = match &drained {
        Ok(_) => claims.tally().await.ok(),
        Err(_) => None,
    };
    // What this runner did not finish goes back to the others, whatever happened.
    let closed = claims.close().await;
    let (report, stale) = drained?;
    closed?;
    Ok(Claimed {
        report,
        stale,
        tally: tally.unwrap_or_default(),
    })
}

/// What a runner needs to apply a batch of the tenants it claimed.
struct Batch<'a> {
    backend: &'a dyn StateBackend,
    plan: &'a Plan,
    /// Where each tenant's plan is in `plan`.
    at: &'a HashMap<&'a str, usize>,
    ws: &'a Workspace,
    opts: &'a ApplyOptions,
    executor: &'a Executor,
    progress: &'a Progress,
}

impl Batch<'_> {
    /// Applies `held` (claimed, and leased through `lock`) and marks each row as it ended:
    /// the outcomes, and the tenants left stale.
    async fn apply(
        &self,
        held: &BTreeSet<String>,
        claims: &dyn PlanClaims,
        lock: &mut dyn StateLock,
        same_files: &mut Option<bool>,
    ) -> Result<(Vec<TenantOutcome>, Vec<String>), Error> {
        let mut state = self.backend.load_tenants(held).await?;
        state.held_by_this_run();
        let batch: Vec<String> = held.iter().cloned().collect();
        let moved = self
            .plan
            .state
            .moved_among(&state, &batch)
            .unwrap_or_default();
        let taken = take_over(self, &state, moved, same_files).await;
        // The saved steps of the tenants that did not move; the fresh ones of the others.
        let go: Vec<&String> = held
            .iter()
            .filter(|s| !taken.replanned.contains(s) && !taken.stale.contains(s))
            .collect();
        let mut tenants: Vec<TenantPlan> = go
            .iter()
            .map(|s| self.plan.tenants[self.at[s.as_str()]].clone())
            .collect();
        tenants.extend(taken.fresh);
        let outcomes = match tenants.is_empty() {
            true => Vec::new(),
            false => {
                debug!(tenants = tenants.len(), "applying claimed tenants");
                self.executor
                    .run(self.plan, tenants, state, lock, self.progress)
                    .await?
                    .outcomes
            }
        };
        claims.done(&taken.stale, Ended::Stale).await?;
        let failed: Vec<String> = outcomes
            .iter()
            .filter(|o| finished(o) && o.error.is_some())
            .map(|o| o.slug.clone())
            .collect();
        let cut_short: BTreeSet<&str> = outcomes
            .iter()
            .filter(|o| !finished(o))
            .map(|o| o.slug.as_str())
            .collect();
        // A tenant planned again with nothing left to do was finished by the runner that
        // started it: it is done too.
        let applied: Vec<String> = go
            .into_iter()
            .chain(&taken.replanned)
            .filter(|s| !failed.contains(s) && !cut_short.contains(s.as_str()))
            .cloned()
            .collect();
        claims.done(&applied, Ended::Applied).await?;
        claims.done(&failed, Ended::Failed).await?;
        Ok((outcomes, taken.stale))
    }
}

/// What becomes of claimed tenants whose records moved since the plan was made.
#[derive(Default)]
struct TakenOver {
    /// Planned again: their slugs, and the plans of those with anything left to do.
    replanned: Vec<String>,
    fresh: Vec<TenantPlan>,
    /// Left for a fresh plan.
    stale: Vec<String>,
}

/// Claimed tenants whose records moved since the plan was made were started by a runner
/// that is gone: the saved steps no longer hold. A plan made now from the same files does,
/// as a rerun would make it, when this runner's files are the plan's and the run that moved
/// the record applied the plan's own commit (one of another commit, a newer apply, would be
/// undone by it). The others are left stale.
async fn take_over(
    batch: &Batch<'_>,
    state: &State,
    moved: Vec<String>,
    same_files: &mut Option<bool>,
) -> TakenOver {
    let (ws, plan) = (batch.ws, batch.plan);
    if moved.is_empty() {
        return TakenOver::default();
    }
    if !*same_files.get_or_insert_with(|| made_from_these_files(ws, plan)) {
        return TakenOver {
            stale: moved,
            ..TakenOver::default()
        };
    }
    let saved = |slug: &str| &plan.tenants[batch.at[slug]];
    // A tenant the plan imports is planned with `--import`, which this runner may not be
    // given: it is left to a fresh plan made as the saved one was.
    let (ours, mut stale): (Vec<String>, Vec<String>) = moved.into_iter().partition(|s| {
        let imports = saved(s).changes.iter().any(|c| c.action == Action::Import);
        !imports && last_commit(state, s) == plan.git_commit.as_deref()
    });
    if ours.is_empty() {
        return TakenOver {
            stale,
            ..TakenOver::default()
        };
    }
    match replan(ws, state, batch.opts, &ours).await {
        Ok(fresh) => {
            // A purge the saved plan did not have is not this plan's to carry out.
            let (fresh, purges): (Vec<TenantPlan>, Vec<TenantPlan>) =
                fresh.into_iter().partition(|t| {
                    t.action != TenantAction::Purge
                        || saved(t.slug.as_str()).action == TenantAction::Purge
                });
            let purges: Vec<String> = purges.into_iter().map(|t| t.slug.to_string()).collect();
            debug!(
                tenants = ours.len(),
                "planned again what a gone runner started"
            );
            stale.extend(purges.iter().cloned());
            TakenOver {
                replanned: ours.into_iter().filter(|s| !purges.contains(s)).collect(),
                fresh,
                stale,
            }
        }
        Err(e) => {
            debug!(error = %crate::causes::chain(&e), "the tenants could not be planned again");
            stale.extend(ours);
            TakenOver {
                stale,
                ..TakenOver::default()
            }
        }
    }
}

/// Whether this runner's files are those `plan` was made from: the same commit, and
/// nothing git has not committed.
fn made_from_these_files(ws: &Workspace, plan: &Plan) -> bool {
    plan.git_commit.is_some()
        && plan.git_commit == ws.git_commit
        && plan.uncommitted.is_empty()
        && ws.uncommitted_inputs().is_empty()
}

/// The plan, made now, of `slugs` (claimed and held by this runner, their records read into
/// `state`): what a rerun would apply to them.
async fn replan(
    ws: &Workspace,
    state: &State,
    opts: &ApplyOptions,
    slugs: &[String],
) -> Result<Vec<TenantPlan>, Error> {
    let tenants = slugs
        .iter()
        .map(|s| crate::slug::Slug::parse(s).map_err(|e| Error::Usage(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let only = PlanOptions {
        tenants: Some(tenants),
        ..opts.plan.clone()
    };
    let fresh = make_plan(ws, state, &only, KeyUse::Needed).await?;
    check_replacements(&fresh, opts.plan.allow_replace)?;
    Ok(fresh.tenants)
}

/// The commit the run that last wrote `slug`'s record applied: the one applying it still,
/// or the one that finished it.
fn last_commit<'a>(state: &'a State, slug: &str) -> Option<&'a str> {
    let ts = state.tenants.get(slug)?;
    ts.applying_commit
        .as_deref()
        .or(ts.applied_commit.as_deref())
}

/// Whether a tenant's run ended (applied or failed), rather than being cut short: one cut
/// short is left claimed, for this runner's claims to be freed when it stops.
fn finished(o: &TenantOutcome) -> bool {
    !o.skipped && !o.interrupted
}

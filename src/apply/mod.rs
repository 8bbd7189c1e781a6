//! Carrying out a [`Plan`]: tenants in parallel (bounded), each tenant's steps in
//! dependency order, every step checkpointed to the state the moment it succeeds.
//!
//! # Guarantees
//! - Killed anywhere, a rerun converges: every step is idempotent (providers check before
//!   they create) and the state never records a step that did not complete.
//! - One tenant's failure never stops the others; the report lists every tenant's outcome.
//! - A tenant's lifecycle moves (with its events) only after all of its other steps.
//! - Interrupted (the `stop` token), no tenant starts and no step after the ones under way:
//!   each of those reaches its checkpoint, and the hooks running are killed, still owed.

mod export;
mod pipeline;
pub mod progress;
mod purge;
mod resource_step;
mod steps;
mod wave;

use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use serde_json::json;
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::causes::chain;
use crate::clients::group_commit::TENANTS_PER_BATCH;
use crate::configured::Targets;
use crate::credentials::MasterKey;
use crate::desired::{Key, Kind};
use crate::plan::{Action, Plan, ResourceChange, TenantAction, TenantPlan};
use crate::state::{now, Failure, Lifecycle, State, StateError, StateLock, TenantState};
use crate::targets::provider::{Mark, ProviderError, StepContext};
use progress::Progress;

/// Purge waves under way at once: while one waits on its drops' commit, the other sends its
/// own drops, or checks its exports and writes its audit rows (`bench/purge.sh`: 1.8 s
/// against 2.0 s with one, before the drops of two waves went at once).
/// Their drops may meet on a shared object; a deadlock between them is retried.
const WAVES_AT_ONCE: usize = 2;
use steps::{Checkpoint, Step};

/// The outcome of one tenant.
#[derive(Debug)]
pub struct TenantOutcome {
    pub slug: String,
    pub steps: usize,
    pub error: Option<String>,
    /// Not started: the run had lost the state, or was interrupted, by the time its turn
    /// came.
    pub skipped: bool,
    /// Started, and stopped between two steps because the run was interrupted: what it did
    /// is recorded, and the next apply carries on from there.
    pub interrupted: bool,
    /// What went wrong without holding the tenant back: a hook that runs apart failed and
    /// is retried by a later apply.
    pub warnings: Vec<String>,
    /// Not started because the rollout its change belongs to halted: it stays on the
    /// inputs it runs on, and is no failure of its own.
    pub halted: bool,
}

impl TenantOutcome {
    /// A tenant not started, and why; `halted` when a halted rollout held it back.
    fn not_started(slug: String, why: String, halted: bool) -> TenantOutcome {
        TenantOutcome {
            slug,
            steps: 0,
            error: Some(why),
            skipped: true,
            interrupted: false,
            warnings: Vec::new(),
            halted,
        }
    }
}

#[derive(Debug, Default)]
pub struct ApplyReport {
    pub outcomes: Vec<TenantOutcome>,
    /// Where the rollout this run took on stands now, and why, when it took one on.
    pub rollout: Option<String>,
}

impl ApplyReport {
    pub fn failed(&self) -> impl Iterator<Item = &TenantOutcome> {
        self.outcomes
            .iter()
            .filter(|o| o.error.is_some() && !o.skipped && !o.interrupted)
    }

    /// The tenants a halted rollout did not start.
    pub fn halted(&self) -> usize {
        self.outcomes.iter().filter(|o| o.halted).count()
    }

    /// How far an interrupted run got, or `None` when it was not interrupted.
    pub fn stopped(&self) -> Option<Stopped> {
        let count = |f: fn(&TenantOutcome) -> bool| self.outcomes.iter().filter(|o| f(o)).count();
        let interrupted = count(|o| o.interrupted);
        let not_started = count(|o| o.skipped && !o.halted);
        (interrupted + not_started > 0).then(|| Stopped {
            applied: count(|o| o.error.is_none()),
            interrupted,
            not_started,
            failed: self.failed().count(),
        })
    }
}

/// The tenants of an interrupted run, by how far each got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    pub applied: usize,
    pub interrupted: usize,
    pub not_started: usize,
    pub failed: usize,
}

impl std::fmt::Display for Stopped {
    /// `12 applied, 3 interrupted, 19 not started` (and how many failed, if any did).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} applied, {} interrupted, {} not started",
            self.applied, self.interrupted, self.not_started
        )?;
        if self.failed > 0 {
            write!(f, ", {} failed", self.failed)?;
        }
        Ok(())
    }
}

/// Why a tenant's steps ended before its last.
#[derive(Debug)]
enum StepError {
    /// A step failed; the tenant records it.
    Failed(StepFailure),
    /// The run was interrupted: the steps done are recorded, nothing failed. Says where.
    Interrupted(&'static str),
}

/// Why a step failed, kept as it came until the tenant records it: its text (with every
/// cause, each once) is made there, and nowhere before.
#[derive(Debug, thiserror::Error)]
enum StepFailure {
    /// A target's call failed.
    #[error(transparent)]
    Target(ProviderError),
    /// The tenant's state could not be written.
    #[error("recording the state")]
    State(#[source] StateError),
    /// The engine's own reason.
    #[error("{0}")]
    Said(String),
}

// `?` on what a step meets makes it the step's failure, as it is.
impl From<ProviderError> for StepError {
    fn from(e: ProviderError) -> StepError {
        StepError::Failed(StepFailure::Target(e))
    }
}

impl From<StateError> for StepError {
    fn from(e: StateError) -> StepError {
        StepError::Failed(StepFailure::State(e))
    }
}

impl From<String> for StepError {
    fn from(e: String) -> StepError {
        StepError::Failed(StepFailure::Said(e))
    }
}

impl From<&str> for StepError {
    fn from(e: &str) -> StepError {
        StepError::Failed(StepFailure::Said(e.to_string()))
    }
}

/// What the tenant tasks share: the state in memory, and the lock to write through.
struct Shared<'a> {
    state: Mutex<State>,
    lock: &'a dyn StateLock,
    /// Why the state could not be written, once it could not: no tenant starts after that,
    /// since nothing it did could be recorded (and a lock held by a lost connection is
    /// gone, so another run may hold it now).
    lost: OnceLock<String>,
}

/// What every step of one tenant's apply reads: its plan, the whole plan, the state it is
/// recorded in, and this state's mark for it.
struct Run<'a> {
    tp: &'a TenantPlan,
    plan: &'a Plan,
    shared: &'a Shared<'a>,
    mark: &'a Mark,
    /// The purge wave the tenant goes in, if it is purged with others.
    wave: Option<&'a wave::Member<'a>>,
}

impl Run<'_> {
    /// Waits at `phase` of the tenant's purge wave for the members behind it.
    async fn reach(&self, phase: Option<u32>) {
        if let (Some(member), Some(phase)) = (self.wave, phase) {
            member.reach(phase).await;
        }
    }

    /// Makes `call`. One that goes to a service elsewhere for this tenant alone (`remote`)
    /// waits, in a wave, for one of the run's turns (`Member::alone`); a tenant outside a
    /// wave holds one already, and a wave makes every other call at once.
    async fn call<F: std::future::Future>(&self, remote: bool, call: F) -> F::Output {
        match self.wave {
            Some(member) if remote => member.alone(call).await,
            _ => call.await,
        }
    }

    /// Records the tenant's state as it stands now.
    async fn checkpoint(&self, ts: &TenantState) -> Result<(), StepError> {
        Ok(self.shared.checkpoint(self.tp.slug.as_str(), ts).await?)
    }

    /// Refuses a step once the state could not be written: nothing done from here on could
    /// be recorded, and the lock may be another run's by now.
    fn lost(&self) -> Result<(), StepError> {
        if let Err(e) = self.shared.lock.holds() {
            let _ = self.shared.lost.set(crate::causes::chain(&e));
        }
        match self.shared.lost.get() {
            Some(_) => Err("stopped before this step: the state could not be written".into()),
            None => Ok(()),
        }
    }
}

impl Shared<'_> {
    /// Records one tenant's state: in memory at once (under the mutex), then through the
    /// lock outside it, so tenants do not wait on each other's writes.
    async fn checkpoint(&self, slug: &str, tenant: &TenantState) -> Result<(), StateError> {
        let entry = {
            let mut state = self.state.lock().await;
            state.record(slug.to_string(), tenant.clone());
            state.checkpoint(slug, tenant)
        };
        let written = self.lock.checkpoint(&entry).await;
        if let Err(e) = &written {
            let _ = self.lost.set(crate::causes::chain(e));
        }
        written
    }

    /// The tenant's record as this run holds it (a new tenant's is empty).
    async fn recorded(&self, slug: &str) -> TenantState {
        let recorded = self.state.lock().await.tenants.get(slug).cloned();
        recorded.unwrap_or(TenantState {
            credentials_version: 1,
            ..TenantState::default()
        })
    }

    /// Records on the tenant why its run failed, and at which step, counting the runs in a
    /// row that failed, so `show` tells a failed tenant from a healthy one.
    async fn record_failure(&self, slug: &str, step: &str, error: &str) {
        let recorded = self.state.lock().await.tenants.get(slug).cloned();
        // A new tenant that failed before its first step is recorded as one still pending.
        let mut ts = recorded.unwrap_or(TenantState {
            credentials_version: 1,
            ..TenantState::default()
        });
        let attempts = ts.last_failure.as_ref().map_or(0, |f| f.attempts) + 1;
        ts.last_failure = Some(Failure {
            step: step.to_string(),
            error: error.to_string(),
            at: now(),
            attempts,
        });
        // A state that cannot be written has said so once already (`lost`).
        let _ = self.checkpoint(slug, &ts).await;
    }
}

/// How far a tenant got: the steps done, the step it is at (or stopped at), and what went
/// wrong without stopping it.
#[derive(Default)]
struct StepLog {
    done: usize,
    at: String,
    warnings: Vec<String>,
}

pub struct Executor {
    pub targets: Arc<Targets>,
    /// `user@host` of this run, for the deletion audit.
    pub run_by: String,
    pub key: MasterKey,
    /// The state's name (`state { name = … }`), written with its lineage into every mark.
    pub state_name: String,
    pub parallelism: usize,
    pub git_commit: Option<String>,
    /// The tenant repo's root: where hooks run, and their relative programs are found.
    pub root: std::path::PathBuf,
    /// Cancelled when the run is interrupted (Ctrl-C, SIGTERM).
    pub stop: CancellationToken,
    /// The running rollout's wave, when the plan takes some of its tenants on.
    pub rollout: Option<crate::rollout::gate::Gate>,
}

impl Executor {
    /// Runs `tenants`, the plan's (`plan` holds what they share: its migrations), against
    /// `state` (already loaded under `lock`) and returns the report, with the final state
    /// persisted. The run holds only the tenants under way: each tenant's plan is dropped
    /// when its turn ends, and its record once it is written (`State::let_go`), so a run of a
    /// large fleet does not grow with what it has done.
    pub async fn run(
        &self,
        plan: &Plan,
        tenants: Vec<TenantPlan>,
        mut state: State,
        lock: &mut dyn StateLock,
        progress: &Progress,
    ) -> Result<ApplyReport, StateError> {
        let key_id = self.key.id();
        if state.is_new() || state.master_key_id.as_deref() != Some(key_id.as_str()) {
            // Give the state its lineage before the first checkpoint refers to it, and
            // record the key before any password derived from it is set: a rotation cut
            // short is then finished with the new key, never undone with the old one.
            state.master_key_id = Some(key_id);
            state.prepare_snapshot();
            lock.persist(&mut state).await?;
        }
        let mark = Mark {
            state: self.state_name.clone(),
            lineage: state.lineage.clone(),
            tenant: None,
        };
        let mark = &mark;
        let tasks_share = Shared {
            state: Mutex::new(state),
            lock: &*lock,
            lost: OnceLock::new(),
        };
        let shared = &tasks_share;
        let parallelism = self.parallelism.max(1);
        let permits = Arc::new(Semaphore::new(parallelism));
        progress.start(tenants.len());
        // Tenants purged together go in waves as large as a batch, each started at once and
        // moving through its purge phase by phase (wave.rs); every other tenant goes at its
        // own pace. `--parallelism 1` keeps every tenant apart.
        let wave_size = if parallelism < 2 {
            1
        } else {
            TENANTS_PER_BATCH
        };
        let waves = Arc::new(Semaphore::new(WAVES_AT_ONCE));
        // Taken from the plan as turns come free, rather than all made at once: a run of
        // 100,000 tenants would hold a group and a task for each from its start.
        let groups = wave::groups(tenants, wave_size, |tp| tp.action == TenantAction::Purge);
        let tasks = futures::stream::iter(groups).map(|group| {
            let (permits, waves) = (permits.clone(), waves.clone());
            async move {
                // A wave holds no turn: each of its calls that goes one tenant at a time
                // takes one (`Member::alone`). A tenant alone holds one for its whole run.
                let in_wave = group.len() > 1;
                let _held = if in_wave {
                    waves.clone()
                } else {
                    permits.clone()
                }
                .acquire_owned()
                .await
                .expect("semaphore stays open");
                let wave = in_wave.then(|| wave::Wave::new(group.len(), permits));
                let members = group.iter().enumerate().map(|(i, (at, tp))| {
                    let member = wave.as_ref().map(|w| w.member(i));
                    async move {
                        let outcome = self.tenant(tp, plan, shared, mark, member.as_ref()).await;
                        // Out of the wave before the progress line: no one waits for it now.
                        drop(member);
                        shared.state.lock().await.let_go(tp.slug.as_str());
                        let at = *at;
                        progress.tenant_done(&outcome);
                        (at, outcome)
                    }
                });
                futures::future::join_all(members).await
            }
        });
        // As many groups as can be under way at once: a tenant alone for each turn, and
        // the waves that go at once (which take turns only call by call).
        let in_flight = parallelism + WAVES_AT_ONCE;
        let mut outcomes: Vec<(usize, TenantOutcome)> = tasks
            .buffer_unordered(in_flight)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .flatten()
            .collect();
        outcomes.sort_by_key(|(at, _)| *at);
        let outcomes: Vec<TenantOutcome> = outcomes.into_iter().map(|(_, o)| o).collect();
        progress.finish();
        if let Some(cause) = tasks_share.lost.into_inner() {
            let count = |f: fn(&TenantOutcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
            return Err(StateError::Lost {
                cause,
                applied: count(|o| o.error.is_none()),
                failed: count(|o| o.error.is_some() && !o.skipped),
                not_started: count(|o| o.skipped),
            });
        }
        let mut state = tasks_share.state.into_inner();
        if let Some(commit) = &self.git_commit {
            state.git_commit = Some(commit.clone());
        }
        let rollout = match &self.rollout {
            Some(gate) => {
                let stopped = outcomes
                    .iter()
                    .any(|o| (o.skipped && !o.halted) || o.interrupted);
                let ended = gate.finish(&mut state, stopped);
                // Before the state says it: a run killed in between writes it again, once
                // (the event's id is the rollout's).
                if let Some(e) = &ended.event {
                    if let Err(err) = self
                        .targets
                        .control
                        .emit_fleet_event(&e.event_id, e.kind, e.detail.clone())
                        .await
                    {
                        tracing::warn!(error = %chain(&err), "the rollout's event was not written");
                    }
                }
                Some(ended.said)
            }
            None => None,
        };
        state.prepare_snapshot();
        lock.persist(&mut state).await?;
        Ok(ApplyReport { outcomes, rollout })
    }

    /// What a step of `tp` knows, as the tenant is recorded in `ts` now.
    fn step_context<'a>(
        &'a self,
        tp: &'a TenantPlan,
        ts: &'a TenantState,
        lifecycle: Lifecycle,
        mark: &'a Mark,
        claimed: bool,
    ) -> StepContext<'a> {
        StepContext {
            tenant: &tp.tenant,
            tenant_id: ts.tenant_id.as_deref(),
            lifecycle,
            credentials_version: ts.credentials_version,
            key: &self.key,
            mark: mark.for_tenant(ts.tenant_id.as_deref()),
            incarnation: ts.incarnation.as_deref(),
            claimed,
            recorded: &ts.resources,
            retired: &ts.retired,
        }
    }

    async fn tenant(
        &self,
        tp: &TenantPlan,
        plan: &Plan,
        shared: &Shared<'_>,
        mark: &Mark,
        wave: Option<&wave::Member<'_>>,
    ) -> TenantOutcome {
        let slug = tp.slug.as_str().to_string();
        let not_started = if shared.lost.get().is_some() {
            Some("not started: the state could not be written")
        } else if self.stop.is_cancelled() {
            Some("not started: the run was interrupted")
        } else {
            None
        };
        if let Some(why) = not_started {
            return TenantOutcome::not_started(slug, why.into(), false);
        }
        // A tenant of the rollout's wave waits for a turn of the wave's, and its attempt is
        // recorded before its first step and after its last.
        let gate = self.rollout.as_ref().filter(|_| tp.in_rollout);
        let _turn = match gate {
            Some(g) => match g.enter().await {
                Ok(turn) => Some(turn),
                Err(why) => return TenantOutcome::not_started(slug, why, true),
            },
            None => None,
        };
        if let Some(g) = gate {
            let mut ts = shared.recorded(&slug).await;
            g.start(&mut ts);
            if let Err(e) = shared.checkpoint(&slug, &ts).await {
                let why = format!(
                    "not started: its attempt could not be recorded: {}",
                    chain(&e)
                );
                return TenantOutcome::not_started(slug, why, false);
            }
        }
        let mut log = StepLog::default();
        let mut interrupted = false;
        let result = match conflicts_error(tp) {
            Some(e) => Err(e),
            None => {
                let result = self
                    .tenant_steps(tp, plan, shared, mark, wave, &mut log)
                    .await;
                let step = &log.at;
                // The step's errors come without their address: it is recorded apart, and
                // said before them in the outcome.
                match result {
                    Ok(()) => Ok(()),
                    Err(StepError::Failed(e)) => {
                        let e = chain(&e);
                        shared.record_failure(&slug, step, &e).await;
                        Err(format!("{slug}/{step}: {e}"))
                    }
                    // Not a failure: the tenant is where its last checkpoint says.
                    Err(StepError::Interrupted(how)) => {
                        interrupted = true;
                        Err(format!("{slug}/{step}: {how}"))
                    }
                }
            }
        };
        if let Some(g) = gate {
            let mut ts = shared.recorded(&slug).await;
            let outcome = match (&result, interrupted) {
                (Ok(()), _) => crate::model::rollout::APPLIED,
                (Err(_), true) => crate::model::rollout::INTERRUPTED,
                (Err(_), false) => crate::model::rollout::FAILED,
            };
            let error = result.as_ref().err().filter(|_| !interrupted);
            g.end(&slug, &mut ts, outcome, error.map(String::as_str));
            // A state that cannot be written has said so once already (`lost`).
            let _ = shared.checkpoint(&slug, &ts).await;
        }
        TenantOutcome {
            slug,
            steps: log.done,
            skipped: false,
            interrupted,
            error: result.err(),
            warnings: log.warnings,
            halted: false,
        }
    }

    /// Stops a tenant before its next step once the run is interrupted.
    fn go_on(&self) -> Result<(), StepError> {
        if self.stop.is_cancelled() {
            Err(StepError::Interrupted("interrupted before this step"))
        } else {
            Ok(())
        }
    }

    /// The tenant is where its plan takes it: its lifecycle, its purge's end, the commit
    /// applied; nothing left failed, and no intent left to claim with.
    fn finish_tenant(&self, tp: &TenantPlan, ts: &mut TenantState, to: Lifecycle) {
        ts.lifecycle = to;
        ts.step = None;
        if let Some(p) = ts.purge.as_mut().filter(|_| to == Lifecycle::Deprovisioned) {
            if p.finished_at.is_none() {
                p.finished_at = Some(now());
            }
            if tp.action == crate::plan::TenantAction::ExpireExport {
                p.export_removed_at = Some(now());
            }
        }
        if let Some(reg) = ts
            .resources
            .get_mut(&crate::desired::Key::new(Kind::REGISTRY))
        {
            reg.insert("lifecycle", json!(to.as_str()));
        }
        ts.applied_commit = self.git_commit.clone();
        ts.applying_commit = None;
        ts.updated_at = now();
        ts.last_failure = None;
        // The tenant is where this plan takes it: the runs done for its moments are kept
        // in `hooks_done` only, and a later visit of the same moment is a new run.
        ts.hooks.retain(|r| r.done_at.is_none());
        // Every create of this tenant is done and recorded: no intent is left to claim with.
        ts.creating.clear();
    }

    async fn tenant_steps(
        &self,
        tp: &TenantPlan,
        plan: &Plan,
        shared: &Shared<'_>,
        mark: &Mark,
        wave: Option<&wave::Member<'_>>,
        log: &mut StepLog,
    ) -> Result<(), StepError> {
        let slug = tp.slug.as_str();
        let mut ts: TenantState = shared
            .state
            .lock()
            .await
            .tenants
            .get(slug)
            .cloned()
            .unwrap_or_default();
        if ts.tenant_id.is_none() {
            ts.tenant_id = tp.tenant_id.clone();
        }
        ts.credentials_version = ts.credentials_version.max(tp.credentials_version).max(1);
        ts.applying_commit = self.git_commit.clone();
        if let Some(why) = self.targets.cannot_purge(&tp.changes) {
            // A saved plan applied after the config stopped naming a target: refused before
            // anything of the tenant changes.
            return Err(format!("{why}; nothing was done\n  hint: in tenant-reconcile.hcl, set `targets` back to the target it was made on, then plan again").into());
        }
        let exports = tp
            .changes
            .iter()
            .any(|c| c.key.kind == Kind::EXPORT && c.desired.is_some());
        if let Some(why) = self
            .targets
            .cannot_export(ts.resources.keys())
            .filter(|_| exports)
        {
            return Err(format!("{why}; nothing was done\n  hint: in tenant-reconcile.hcl, set `targets` back to the target it was made on, then plan again").into());
        }
        let mut lifecycle = tp.lifecycle.from;
        let run = Run {
            tp,
            plan,
            shared,
            mark,
            wave,
        };
        for (key, found) in tp.changes.iter().filter_map(|c| {
            let found = c.purged()?.found.clone()?;
            Some((&c.key, found))
        }) {
            // The tenant's and never recorded (adopted and left unchanged, or made by a run
            // cut short), or recorded a step behind: recorded as it stands now, so the export
            // before its purge reads it, and its target finds where it is.
            ts.resources.insert(key.clone(), found);
        }
        let intents = self.record_intents(tp, &mut ts);
        if self.queue_hooks(tp, &mut ts) | intents {
            // Recorded before anything of the tenant changes: a moment its steps reach
            // (its plan written to the registry, its lifecycle moved) may be unseen by the
            // next plan if this run stops after them, and its runs would be lost; a
            // registry row made by a run stopped before its next checkpoint is known for
            // this state's; an adopted tenant's passwords are derived anew from here on.
            run.checkpoint(&ts).await?;
        }
        let same_target = |a: Kind, b: Kind| self.targets.same_target(a, b);
        let retired = |key: &Key| ts.retired_at_key(key).is_some();
        let joins = |first: &ResourceChange, next: &ResourceChange| {
            same_target(first.key.kind, next.key.kind)
                && self
                    .targets
                    .for_kind(first.key.kind)
                    .joins(&tp.tenant, first, next)
        };
        let steps = steps::steps(
            &tp.changes,
            tp.smoke.is_some(),
            &tp.hooks,
            &steps::Facts {
                control: &|kind| self.targets.control.kinds().contains(&kind),
                retired: &retired,
                activates: tp.lifecycle.to == Lifecycle::Active
                    && tp.lifecycle.from != Lifecycle::Active,
                same_target: &same_target,
                joins: &joins,
            },
        );
        let to = tp.lifecycle.to;
        // Hooks that run apart take a while: the move is recorded before them.
        let hooks_after = steps.iter().any(|s| matches!(s, Step::Hook(_)));
        // The audit rows of the purge this run carries out, written before its first
        // resource is destroyed and completed after its last; the control plane's part of
        // the purge (its rows, the tombstone, that completion and the move) is one call.
        let mut ending = purge::Ending::default();
        for step in steps {
            if let Some(at) = step.at() {
                log.at = at;
            }
            // A wave's wait comes first: an interruption meanwhile stops the step.
            run.reach(step.phase()).await;
            // No step starts once the run is interrupted, or once the state could not be
            // written (nothing it did could be recorded, and the lock may be another run's);
            // a purge's end, its resources destroyed, is finished either way.
            if !matches!(step, Step::EndPurge { .. }) {
                self.go_on()?;
                run.lost()?;
            }
            let outcome = match step {
                Step::BeginPurge(_) => {
                    ending.audited = self.start_purge(&run, &mut ts, &mut lifecycle).await?;
                    Ok(())
                }
                Step::PurgeRow(change) => run.lost().map(|()| ending.rows.push(change.key.clone())),
                Step::PurgeRetired(change) => {
                    self.purge_retired(&run, &mut ts, lifecycle, change).await?;
                    log.done += 1;
                    Ok(())
                }
                Step::Purge(changes) => {
                    self.purge_together(&run, &mut ts, lifecycle, changes)
                        .await?;
                    log.done += changes.len();
                    Ok(())
                }
                Step::Tombstone(change) => {
                    ending.tombstone = Some(change);
                    Ok(())
                }
                Step::EndPurge { may_move } => {
                    // The move joins the purge's end when nothing is to happen between them.
                    let joins = may_move && to == Lifecycle::Deprovisioned && lifecycle != to;
                    let to = joins.then_some(to);
                    self.end_purge(tp, &mut ts, lifecycle, mark, &mut ending, to, log)
                        .await?;
                    if joins {
                        lifecycle = tp.lifecycle.to;
                        if hooks_after {
                            run.checkpoint(&ts).await?;
                        }
                    }
                    Ok(())
                }
                Step::Register(change) => {
                    let made = self.register(&run, &mut ts, &mut lifecycle, change).await;
                    log.done += usize::from(made.is_ok());
                    made
                }
                Step::Change(change) => {
                    self.change(&run, &mut ts, lifecycle, change).await?;
                    log.done += 1;
                    Ok(())
                }
                Step::Changes(changes) => {
                    let made = self
                        .change_together(&run, &mut ts, lifecycle, changes, log)
                        .await;
                    if made.is_ok() {
                        log.done += changes.len();
                    }
                    made
                }
                Step::Export(change) => {
                    let written = self.export(&run, &mut ts, lifecycle, change).await;
                    log.done += usize::from(written.is_ok());
                    written
                }
                Step::Smoke { .. } => {
                    let tested = self.smoke_test(tp, &mut ts, lifecycle, mark).await;
                    log.done += usize::from(tested.is_ok());
                    tested
                }
                Step::GatingHook(h) => {
                    let ran = self.run_hook(tp, &mut ts, h).await;
                    log.done += usize::from(ran.is_ok());
                    ran
                }
                Step::Lifecycle => {
                    self.move_lifecycle(&run, &mut ts, lifecycle, hooks_after, log)
                        .await
                }
                Step::Hook(h) => match self.run_hook(tp, &mut ts, h).await {
                    Ok(()) => {
                        log.done += 1;
                        Ok(())
                    }
                    // Retried apart: the tenant goes on.
                    Err(StepError::Failed(e)) => {
                        log.warnings.push(chain(&e));
                        Ok(())
                    }
                    Err(e @ StepError::Interrupted(_)) => Err(e),
                },
            };
            // A step recorded once it is done is recorded whether it succeeded or failed, so
            // `state show` says where the tenant stopped.
            let record = match step.checkpoint() {
                Checkpoint::After => true,
                Checkpoint::Succeeded => outcome.is_ok(),
                Checkpoint::Failed => outcome.is_err(),
                _ => false,
            };
            if record {
                run.checkpoint(&ts).await?;
            }
            outcome?;
        }
        self.finish_tenant(tp, &mut ts, to);
        run.reach(Some(steps::LAST_PHASE)).await;
        run.checkpoint(&ts).await
    }
}

impl Executor {
    /// Right after a tenant's move to active: its role's change again, now that its login
    /// may open (`StepContext::login_opens`). Until this step the login was held, so a
    /// tenant that failed a smoke test or a gating hook, or whose run was killed, never
    /// had one; a kill between the move and this step leaves the role shown as a change
    /// by the next plan, which opens it.
    async fn open_login(
        &self,
        tp: &TenantPlan,
        ts: &mut TenantState,
        mark: &Mark,
    ) -> Result<(), StepError> {
        let Some(change) = tp
            .changes
            .iter()
            .find(|c| c.key.kind == Kind::ROLE && c.desired.is_some())
        else {
            return Ok(());
        };
        let mut change = change.clone();
        // The role is this state's by now, made or adopted in its own step.
        change.action = Action::Update;
        let ctx = self.step_context(tp, ts, Lifecycle::Active, mark, false);
        let attrs = self
            .targets
            .for_kind(Kind::ROLE)
            .apply(&ctx, &change)
            .await?;
        if let Some(attrs) = attrs {
            ts.resources.insert(change.key.clone(), attrs);
        }
        ts.updated_at = now();
        Ok(())
    }

    /// What must be on record before a tenant's first step; whether anything was added.
    /// A new tenant's registration: the registry row it makes is then this state's even if
    /// the run stops before recording its id (a row the state does not know of is another
    /// tenant's, whose slug a new file may not take). An adopted tenant's incarnation: its
    /// passwords derive from it, so none handed out before the adoption still logs in.
    /// A replace keeps the old resource with its data: the state remembers it as retired,
    /// so the tenant's export and purge reach it. Whether that changed anything.
    fn retire_before_replace(&self, change: &ResourceChange, ts: &mut TenantState) -> bool {
        let kind = change.key.kind;
        if change.action != Action::Replace || !self.targets.replace_keeps_old(kind) {
            return false;
        }
        let (Some(old), Some(new)) = (ts.resources.get(&change.key), change.desired.as_ref())
        else {
            return false;
        };
        let before = ts.retired.clone();
        ts.retire(&change.key, old.clone(), &new.attrs, now());
        ts.retired != before
    }

    fn record_intents(&self, tp: &TenantPlan, ts: &mut TenantState) -> bool {
        let registry = Key::new(Kind::REGISTRY);
        let mut added = false;
        for c in tp.changes.iter().filter(|c| c.key == registry) {
            match c.action {
                Action::Create => added |= ts.creating.insert(registry.clone()),
                Action::Import if ts.incarnation.is_none() => {
                    ts.incarnation = Some(uuid::Uuid::new_v4().to_string());
                    added = true;
                }
                _ => {}
            }
        }
        added
    }
}

/// Why a tenant with conflicts is not applied at all, as its outcome says it.
fn conflicts_error(tp: &TenantPlan) -> Option<String> {
    if let Some(why) = &tp.unplaced {
        return Some(format!(
            "{why}; nothing of {} was changed\n  hint: add a postgres_server in its region, raise a server's cap, or change what its file or plan asks for; the next plan places it",
            tp.slug
        ));
    }
    if tp.conflicts.is_empty() {
        return None;
    }
    let what: Vec<String> = tp
        .conflicts
        .iter()
        .map(|c| {
            format!(
                "{}/{} ({})",
                tp.slug,
                c.key,
                crate::render::conflict_owner(c)
            )
        })
        .collect();
    Some(format!(
        "{} exist{} and {} not this state's; nothing of {} was changed\n  hint: adopt {} with `plan --import {}` and apply that plan, or remove {} first",
        what.join(", "),
        if what.len() == 1 { "s" } else { "" },
        if what.len() == 1 { "is" } else { "are" },
        tp.slug,
        if what.len() == 1 { "it" } else { "them" },
        tp.slug,
        if what.len() == 1 { "it" } else { "them" },
    ))
}

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

mod pipeline;
pub mod progress;
mod purge;

use std::sync::{Arc, OnceLock};

use serde_json::json;
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::causes::chain;
use crate::configured::Targets;
use crate::credentials::MasterKey;
use crate::desired::{Key, Kind};
use crate::plan::{Action, Plan, ResourceChange, TenantPlan};
use crate::state::{now, Failure, Lifecycle, State, StateError, StateLock, TenantState};
use crate::targets::provider::{Mark, ProviderError, StepContext};
use progress::Progress;

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
}

#[derive(Debug, Default)]
pub struct ApplyReport {
    pub outcomes: Vec<TenantOutcome>,
}

impl ApplyReport {
    pub fn failed(&self) -> impl Iterator<Item = &TenantOutcome> {
        self.outcomes
            .iter()
            .filter(|o| o.error.is_some() && !o.skipped && !o.interrupted)
    }

    /// How far an interrupted run got, or `None` when it was not interrupted.
    pub fn stopped(&self) -> Option<Stopped> {
        let count = |f: fn(&TenantOutcome) -> bool| self.outcomes.iter().filter(|o| f(o)).count();
        let interrupted = count(|o| o.interrupted);
        let not_started = count(|o| o.skipped);
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
    Failed(String),
    /// The run was interrupted: the steps done are recorded, nothing failed. Says where.
    Interrupted(&'static str),
}

impl From<String> for StepError {
    fn from(e: String) -> StepError {
        StepError::Failed(e)
    }
}

impl From<&str> for StepError {
    fn from(e: &str) -> StepError {
        StepError::Failed(e.to_string())
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
}

impl Executor {
    /// Runs `plan` against `state` (already loaded under `lock`) and returns the report and
    /// the lock, with the final state persisted.
    pub async fn run(
        &self,
        plan: &Plan,
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
            lock.persist(&state).await?;
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
        let permits = Arc::new(Semaphore::new(self.parallelism.max(1)));
        progress.start(plan.tenants.len());
        let mut tasks = Vec::with_capacity(plan.tenants.len());
        for tp in &plan.tenants {
            let permit = permits.clone().acquire_owned();
            let fut = async move {
                let _permit = permit.await.expect("semaphore stays open");
                let outcome = self.tenant(tp, plan, shared, mark).await;
                progress.tenant_done(&outcome);
                outcome
            };
            tasks.push(fut);
        }
        let outcomes = futures::future::join_all(tasks).await;
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
        state.prepare_snapshot();
        lock.persist(&state).await?;
        Ok(ApplyReport { outcomes })
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
            return TenantOutcome {
                slug,
                steps: 0,
                error: Some(why.into()),
                skipped: true,
                interrupted: false,
                warnings: Vec::new(),
            };
        }
        let mut log = StepLog::default();
        let mut interrupted = false;
        let result = match conflicts_error(tp) {
            Some(e) => Err(e),
            None => {
                let result = self.tenant_steps(tp, plan, shared, mark, &mut log).await;
                let step = &log.at;
                // The step's errors come without their address: it is recorded apart, and
                // said before them in the outcome.
                match result {
                    Ok(()) => Ok(()),
                    Err(StepError::Failed(e)) => {
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
        TenantOutcome {
            slug,
            steps: log.done,
            skipped: false,
            interrupted,
            error: result.err(),
            warnings: log.warnings,
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

    async fn tenant_steps(
        &self,
        tp: &TenantPlan,
        plan: &Plan,
        shared: &Shared<'_>,
        mark: &Mark,
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
        let mut lifecycle = tp.lifecycle.from;
        let control = &self.targets.control;
        let checkpoint = |ts: &TenantState| {
            let ts = ts.clone();
            async move {
                shared
                    .checkpoint(slug, &ts)
                    .await
                    .map_err(|e| format!("recording the state: {e}"))
            }
        };

        for (key, found) in tp.changes.iter().filter_map(|c| {
            let found = c.purged.as_ref()?.found.clone()?;
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
            checkpoint(&ts).await?;
        }
        // The audit rows of the purge this run carries out, written before its first
        // resource is destroyed and completed after its last; the control plane's part of
        // the purge (its rows, the tombstone, that completion and the move) is one call.
        let mut audited: Option<Vec<String>> = None;
        let mut ending = purge::Ending::default();
        // Purges after this one that it destroyed with it.
        let mut skip = 0;
        for (i, change) in tp.changes.iter().enumerate() {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            log.at = change.key.to_string();
            self.go_on()?;
            if change.purged.is_none() {
                if audited.is_some()
                    && change.key.kind == Kind::Registry
                    && change.fields.iter().any(|f| f.field != "lifecycle")
                {
                    ending.tombstone = Some(change);
                    continue;
                }
                if let Some(addresses) = audited.take() {
                    ending.audited = addresses;
                    self.end_purge(tp, &mut ts, lifecycle, mark, &mut ending, None, log)
                        .await?;
                }
            } else {
                if shared.lost.get().is_some() {
                    return Err("stopped before this step: the state could not be written".into());
                }
                if ts.purge.is_none() {
                    self.begin_purge(tp, &mut ts, &mut lifecycle, mark).await?;
                    // The purge's start and its audit rows are written side by side, and
                    // both are there before anything is destroyed: a run stopped between
                    // them has destroyed nothing, and its rerun writes what is missing
                    // (an audit row written twice is kept once).
                    let (recorded, rows) = tokio::join!(checkpoint(&ts), self.audit_begin(tp, &ts));
                    recorded?;
                    audited = Some(rows?);
                }
                if audited.is_none() {
                    audited = Some(self.audit_begin(tp, &ts).await?);
                }
                if control.kinds().contains(&change.key.kind) {
                    ending.rows.push(change.key.clone());
                    continue;
                }
                if let Some(retired) = ts.retired_at_key(&change.key).cloned() {
                    // Where the retired one is, as its target reads a recorded one.
                    let at = std::iter::once((retired.key.clone(), retired.attrs)).collect();
                    let ctx = StepContext {
                        recorded: &at,
                        ..self.step_context(tp, &ts, lifecycle, mark, false)
                    };
                    self.purge(&ctx, std::slice::from_ref(&retired.key)).await?;
                    ts.retired.retain(|r| r.address_key() != change.key);
                    ts.resources.remove(&change.key);
                    ts.updated_at = now();
                    log.done += 1;
                    continue;
                }
                // The purges of one target that follow go in the same call: the data target
                // drops a schema and its role in one transaction.
                let provider = self.targets.for_kind(change.key.kind);
                let keys: Vec<_> = tp.changes[i..]
                    .iter()
                    .take_while(|c| {
                        c.purged.is_some()
                            && ts.retired_at_key(&c.key).is_none()
                            && std::ptr::addr_eq(self.targets.for_kind(c.key.kind), provider)
                    })
                    .map(|c| c.key.clone())
                    .collect();
                skip = keys.len() - 1;
                let ctx = self.step_context(tp, &ts, lifecycle, mark, false);
                self.purge(&ctx, &keys).await?;
                for key in &keys {
                    ts.resources.remove(key);
                    if key.kind == Kind::Database {
                        // Seed rows live in the slice and went with it.
                        ts.resources.remove(&crate::desired::Key::new(Kind::Seed));
                    }
                }
                // Not checkpointed one by one: the audit row records each purge, and a
                // rerun purges (and audits) what is gone already again, changing nothing.
                // The state records the purge's start, above, and its end.
                ts.updated_at = now();
                log.done += keys.len();
                continue;
            }
            if self.retire_before_replace(change, &mut ts) {
                // Recorded before the call: a run killed once the new one stands still
                // knows the old one is left behind, and the tenant's purge reaches it.
                checkpoint(&ts).await?;
            }
            let claimed = ts.creating.contains(&change.key);
            // Field by field, not `step_context`: the step goes on to update other fields of
            // `ts` (its step, its intents) while this borrows its resources.
            let ctx = StepContext {
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
            };
            if change.key.kind == Kind::Registry && change.action == Action::Create {
                let desired = change
                    .desired
                    .as_ref()
                    .ok_or("registry without attributes")?;
                let id = control
                    .register(&ctx, &desired.attrs)
                    .await
                    .map_err(|e| chain(&e))?;
                if matches!(lifecycle, Lifecycle::Pending) {
                    lifecycle = Lifecycle::Provisioning;
                }
                let mut attrs = desired.attrs.clone();
                attrs.insert("lifecycle", json!(lifecycle.as_str()));
                ts.tenant_id = Some(id);
                ts.lifecycle = lifecycle;
                ts.step = Some(change.key.to_string());
                ts.resources.insert(change.key.clone(), attrs);
                ts.updated_at = now();
                checkpoint(&ts).await?;
                log.done += 1;
                continue;
            }
            // The lifecycle field moves in the last step; a registry change that is only
            // that has nothing to do here.
            if change.key.kind == Kind::Registry
                && change.fields.iter().all(|f| f.field == "lifecycle")
            {
                continue;
            }
            if lifecycle == Lifecycle::Provisioning {
                let step = change.key.to_string();
                if let Some(id) = ts.tenant_id.as_deref() {
                    control
                        .set_step(id, Some(&step))
                        .await
                        .map_err(|e| chain(&e))?;
                }
                ts.step = Some(step);
            }
            if shared.lost.get().is_some() {
                // Nothing done from here on could be recorded, and the lock may be another
                // run's by now.
                return Err("stopped before this step: the state could not be written".into());
            }
            let provider = self.targets.for_kind(change.key.kind);
            let creates = matches!(
                change.action,
                Action::Create | Action::Replace | Action::Import
            );
            if creates
                && provider.marks_after_create(change.key.kind)
                && ts.creating.insert(change.key.clone())
            {
                // Recorded before the call: killed between creating and marking, the
                // rerun knows the unmarked resource is this state's.
                checkpoint(&ts).await?;
            }
            let result: Result<_, ProviderError> = provider.apply(&ctx, change).await;
            let result = match result {
                Ok(r) => r,
                Err(e) => {
                    if matches!(e, ProviderError::NotOurs(_)) {
                        // Refused before anything was made: the intent claims nothing.
                        ts.creating.remove(&change.key);
                    }
                    // Record where the tenant stopped, so `state show` names the failed step.
                    checkpoint(&ts).await?;
                    return Err(chain(&e).into());
                }
            };
            match result {
                Some(attrs) => {
                    ts.resources.insert(change.key.clone(), attrs);
                }
                None => {
                    ts.resources.remove(&change.key);
                }
            }
            ts.creating.remove(&change.key);
            ts.updated_at = now();
            if change.key.kind == Kind::Database {
                let mut state = shared.state.lock().await;
                for m in &plan.migrations {
                    state.migrations.insert(m.id(), m.checksum.clone());
                }
            }
            checkpoint(&ts).await?;
            log.done += 1;
        }

        let to = tp.lifecycle.to;
        // Hooks that run apart take a while: the move is recorded before them.
        let hooks_after = tp.hooks.iter().any(|h| h.due && !h.spec.gating);
        if let Some(addresses) = audited.take() {
            ending.audited = addresses;
            // The move joins the purge's end when nothing is to happen between them.
            let joins = to == Lifecycle::Deprovisioned
                && lifecycle != to
                && tp.smoke.is_none()
                && !tp.hooks.iter().any(|h| h.due && h.spec.gating);
            self.end_purge(
                tp,
                &mut ts,
                lifecycle,
                mark,
                &mut ending,
                joins.then_some(to),
                log,
            )
            .await?;
            if joins {
                lifecycle = to;
                if hooks_after {
                    checkpoint(&ts).await?;
                }
            }
        }
        if tp.smoke.is_some() {
            log.at = crate::plan::SMOKE_STEP.to_string();
            self.go_on()?;
            let tested = self.smoke_test(tp, &mut ts, lifecycle, mark).await;
            checkpoint(&ts).await?;
            tested?;
            log.done += 1;
        }
        for h in tp.hooks.iter().filter(|h| h.due && h.spec.gating) {
            log.at = format!("hook/{}", h.spec.name);
            self.go_on()?;
            let ran = self.run_hook(tp, &mut ts, h).await;
            checkpoint(&ts).await?;
            ran?;
            log.done += 1;
        }
        log.at = "lifecycle".to_string();
        self.go_on()?;
        if lifecycle != to {
            let ctx = self.step_context(tp, &ts, lifecycle, mark, false);
            control.transition(&ctx, to).await.map_err(|e| chain(&e))?;
            log.done += 1;
            // Recorded at once when something follows: the hooks after the move may take a
            // while, and a kill meanwhile must not leave the state a move behind the
            // registry. Otherwise the tenant's last checkpoint, below, records it.
            ts.lifecycle = to;
            if let Some(reg) = ts
                .resources
                .get_mut(&crate::desired::Key::new(Kind::Registry))
            {
                reg.insert("lifecycle", json!(to.as_str()));
            }
            if to == Lifecycle::Active || hooks_after {
                checkpoint(&ts).await?;
            }
            if to == Lifecycle::Active {
                log.at = "role".to_string();
                self.open_login(tp, &mut ts, mark).await?;
                checkpoint(&ts).await?;
            }
        }
        for h in tp.hooks.iter().filter(|h| h.due && !h.spec.gating) {
            log.at = format!("hook/{}", h.spec.name);
            self.go_on()?;
            let ran = self.run_hook(tp, &mut ts, h).await;
            checkpoint(&ts).await?;
            match ran {
                Ok(()) => log.done += 1,
                // Retried apart: the tenant goes on.
                Err(StepError::Failed(e)) => log.warnings.push(e),
                Err(e @ StepError::Interrupted(_)) => return Err(e),
            }
        }
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
            .get_mut(&crate::desired::Key::new(Kind::Registry))
        {
            reg.insert("lifecycle", json!(to.as_str()));
        }
        ts.applied_commit = self.git_commit.clone();
        ts.updated_at = now();
        ts.last_failure = None;
        // The tenant is where this plan takes it: the runs done for its moments are kept
        // in `hooks_done` only, and a later visit of the same moment is a new run.
        ts.hooks.retain(|r| r.done_at.is_none());
        // Every create of this tenant is done and recorded: no intent is left to claim with.
        ts.creating.clear();
        Ok(checkpoint(&ts).await?)
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
    ) -> Result<(), String> {
        let Some(change) = tp
            .changes
            .iter()
            .find(|c| c.key.kind == Kind::Role && c.desired.is_some())
        else {
            return Ok(());
        };
        let mut change = change.clone();
        // The role is this state's by now, made or adopted in its own step.
        change.action = Action::Update;
        let ctx = self.step_context(tp, ts, Lifecycle::Active, mark, false);
        let attrs = self
            .targets
            .for_kind(Kind::Role)
            .apply(&ctx, &change)
            .await
            .map_err(|e| chain(&e))?;
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
        if change.action != Action::Replace || !self.targets.for_kind(kind).replace_keeps_old(kind)
        {
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
        let registry = Key::new(Kind::Registry);
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

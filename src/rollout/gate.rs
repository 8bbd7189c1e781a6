//! An apply of a running rollout's tenants, held to its wave: never more of them mid-change
//! than the wave's `max_parallel`, none started once its halt rule tripped, and each one's
//! attempt written into its record as it starts and as it ends, so the limit holds over
//! runs too (a run that died is closed before the next one starts a tenant:
//! [`close_abandoned`]).

use std::sync::{Mutex, OnceLock};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::model::lifecycle::now;

/// When an attempt starts or ends, to the microsecond: how many were under way at once is
/// read from these, and a turn is taken within the second another was given back.
fn now_precise() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}
use crate::model::rollout::{
    Attempt, FailureLimit, Rollout, Status, TenantRollout, WaveFailure, ABANDONED, APPLIED,
};
use crate::state::{State, TenantState};

pub struct Gate {
    pub id: String,
    to: String,
    wave: usize,
    wave_name: String,
    wave_size: usize,
    max_failures: FailureLimit,
    turns: Semaphore,
    /// The wave's failures, those recorded before this run first.
    failed: Mutex<Vec<WaveFailure>>,
    /// Why it halted, once it did.
    halted: OnceLock<String>,
    /// How many tenants the plan takes to `to`, and how many of them were applied.
    planned: usize,
    applied: std::sync::atomic::AtomicUsize,
}

/// What the end of a run makes of the rollout: what to say, and an event to write, once.
pub struct Finished {
    pub said: String,
    pub event: Option<Event>,
}

pub struct Event {
    pub event_id: String,
    pub kind: &'static str,
    pub detail: serde_json::Value,
}

impl Gate {
    /// The gate of rollout `r` (running) for a run that takes `planned` of its tenants on.
    pub fn new(r: &Rollout, planned: usize) -> Gate {
        let w = &r.waves[r.wave];
        Gate {
            id: r.id.clone(),
            to: r.to.clone(),
            wave: r.wave,
            wave_name: w.name.clone(),
            wave_size: w.tenants.len(),
            max_failures: w.max_failures,
            turns: Semaphore::new(w.max_parallel.max(1)),
            failed: Mutex::new(w.failed.clone()),
            halted: OnceLock::new(),
            planned,
            applied: Default::default(),
        }
    }

    /// A turn for one tenant's change, or why it does not start: the rollout halted.
    pub async fn enter(&self) -> Result<SemaphorePermit<'_>, String> {
        let turn = self.turns.acquire().await.expect("never closed");
        match self.halted.get() {
            Some(_) => Err(format!("not started: rollout {} halted", self.id)),
            None => Ok(turn),
        }
    }

    /// `ts` with a new attempt started now, toward this rollout's `to`.
    pub fn start(&self, ts: &mut TenantState) {
        let entry = ts.rollout.get_or_insert_with(|| TenantRollout {
            id: self.id.clone(),
            to: self.to.clone(),
            attempts: Vec::new(),
        });
        if entry.id != self.id || entry.to != self.to {
            *entry = TenantRollout {
                id: self.id.clone(),
                to: self.to.clone(),
                attempts: Vec::new(),
            };
        }
        entry.attempts.push(Attempt {
            started_at: now_precise(),
            ended_at: None,
            outcome: None,
        });
    }

    /// `ts` with its open attempt ended now, as `outcome`; a failure counts against the
    /// wave's halt rule.
    pub fn end(&self, slug: &str, ts: &mut TenantState, outcome: &str, error: Option<&str>) {
        if let Some(a) = ts.rollout.as_mut().and_then(TenantRollout::open) {
            a.ended_at = Some(now_precise());
            a.outcome = Some(outcome.to_string());
        }
        if outcome == APPLIED {
            self.applied
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut failed = self.failed.lock().expect("never poisoned");
        // Its failure before, if any, is mended by an attempt that applied, or replaced by
        // this one's; an interrupted attempt says nothing of it.
        if outcome == APPLIED || error.is_some() {
            failed.retain(|f| f.slug != slug);
        }
        let Some(error) = error else {
            return;
        };
        failed.push(WaveFailure {
            slug: slug.to_string(),
            error: error.to_string(),
        });
        if self.max_failures.exceeded(failed.len(), self.wave_size) {
            let _ = self.halted.set(format!(
                "wave {} ({}): {} of {} tenants failed, {} halts it; first {}: {}",
                self.wave + 1,
                self.wave_name,
                failed.len(),
                self.wave_size,
                self.max_failures.describe(),
                failed[0].slug,
                failed[0].error
            ));
        }
    }

    /// The rollout in `state` once the run is over: halted, its wave done, or complete; with
    /// the event that says so. `stopped`: the run did not start every tenant it planned
    /// (interrupted, or its state could not be written).
    pub fn finish(&self, state: &mut State, stopped: bool) -> Finished {
        let lineage = state.lineage.clone();
        let Some(r) = state.rollout.as_mut().filter(|r| r.id == self.id) else {
            return Finished {
                said: format!("rollout {} is no longer the state's", self.id),
                event: None,
            };
        };
        let failed = self.failed.lock().expect("never poisoned").clone();
        let count = r.waves.len();
        r.waves[self.wave].failed = failed.clone();
        r.updated_at = now();
        let wave = format!("wave {} of {count} ({})", self.wave + 1, self.wave_name);
        if let Some(why) = self.halted.get() {
            r.status = Status::Halted;
            r.halted = Some(why.clone());
            r.halts += 1;
            return Finished {
                said: format!(
                    "rollout {} halted at {wave}: {why}\n  hint: `tenant-reconcile rollout status` shows it; mend the cause (a new commit goes to the waves reached), then `tenant-reconcile rollout resume`, or `rollout abort`",
                    r.id
                ),
                event: Some(Event {
                    event_id: format!("{lineage}/{}/halted/{}", r.id, r.halts),
                    kind: crate::targets::provider::events::ROLLOUT_HALTED,
                    detail: serde_json::json!({
                        "rollout": r.id,
                        "wave": r.waves[self.wave].name,
                        "reason": why,
                        "failed": failed.iter().map(|f| &f.slug).collect::<Vec<_>>(),
                    }),
                }),
            };
        }
        let applied = self.applied.load(std::sync::atomic::Ordering::Relaxed);
        if stopped || applied < self.planned || !failed.is_empty() {
            return Finished {
                said: format!(
                    "rollout {}: {wave} goes on with the next apply ({applied} of {} tenants applied in this run, {} failed)",
                    r.id,
                    self.planned,
                    failed.len()
                ),
                event: None,
            };
        }
        let w = &mut r.waves[self.wave];
        w.done_at.get_or_insert_with(now);
        if self.wave + 1 < count {
            return Finished {
                said: format!(
                    "rollout {}: {wave} is done; it bakes {}, then the next apply starts wave {} ({})",
                    r.id,
                    humantime::format_duration(w.bake()),
                    self.wave + 2,
                    r.waves[self.wave + 1].name
                ),
                event: None,
            };
        }
        r.status = Status::Completed;
        let finished = completion(r, &lineage);
        state.inputs_rev = Some(r.to.clone());
        finished
    }
}

/// Readies `state` for a run of `plan`, under the lock: the rollout and the fleet's inputs
/// as the plan moved them, and the attempts a run that died left open closed (only a run of
/// the whole state, which holds it alone, knows that run is gone). Returns the gate of the
/// running rollout's wave when the plan takes some of its tenants on, and whether `state`
/// changed (to be written before any tenant starts).
pub fn begin(state: &mut State, plan: &crate::plan::Plan, whole: bool) -> Begun {
    let mut changed = false;
    let mut completed = None;
    if let Some(rp) = plan.rollout.as_ref().filter(|r| r.writes && whole) {
        let was_completed = state
            .rollout
            .as_ref()
            .is_some_and(|r| r.status == Status::Completed);
        if let Some(r) = rp
            .rollout
            .as_ref()
            .filter(|r| r.status == Status::Completed && !was_completed)
        {
            completed = Some(completion(r, &state.lineage));
        }
        state.rollout = rp.rollout.clone();
        state.inputs_rev = rp.inputs_rev.clone();
        if let Some(n) = rp
            .rollout
            .as_ref()
            .and_then(|r| r.id.strip_prefix('r'))
            .and_then(|n| n.parse::<u32>().ok())
        {
            state.rollouts = state.rollouts.max(n);
        }
        changed = true;
    }
    if whole {
        for slug in close_abandoned(state) {
            let ts = state.tenants[&slug].clone();
            state.record(slug, ts);
            changed = true;
        }
    }
    let taken_on = plan.tenants.iter().filter(|t| t.in_rollout).count();
    let gate = state
        .rollout
        .as_ref()
        .filter(|r| r.status == Status::Running && taken_on > 0)
        .map(|r| Gate::new(r, taken_on));
    Begun {
        gate,
        changed,
        completed,
    }
}

/// A run readied by [`begin`].
pub struct Begun {
    pub gate: Option<Gate>,
    /// The state changed: it is written before any tenant starts.
    pub changed: bool,
    /// The plan completes the rollout itself (its last wave had nothing left to do: a run
    /// killed after its last tenant, before it recorded the end).
    pub completed: Option<Finished>,
}

/// What the end of rollout `r` says, and its event.
fn completion(r: &Rollout, lineage: &str) -> Finished {
    let tenants: usize = r.waves.iter().map(|w| w.tenants.len()).sum();
    Finished {
        said: format!(
            "rollout {} completed: {tenants} tenants run on {}",
            r.id,
            super::short(&r.to)
        ),
        event: Some(Event {
            event_id: format!("{lineage}/{}/completed", r.id),
            kind: crate::targets::provider::events::ROLLOUT_COMPLETED,
            detail: serde_json::json!({
                "rollout": r.id,
                "from": r.from,
                "to": r.to,
                "tenants": tenants,
            }),
        }),
    }
}

/// Closes the attempts a run that died left open, as abandoned now: that run is gone (this
/// one holds the whole state's lock), so its tenants are no longer mid-change. Returns the
/// tenants changed, which the run writes before it starts any tenant.
pub fn close_abandoned(state: &mut State) -> Vec<String> {
    let mut closed = Vec::new();
    for (slug, ts) in state.tenants.iter_mut() {
        if let Some(a) = ts.rollout.as_mut().and_then(TenantRollout::open) {
            a.ended_at = Some(now_precise());
            a.outcome = Some(ABANDONED.to_string());
            closed.push(slug.clone());
        }
    }
    closed
}

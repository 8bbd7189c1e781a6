//! The executor's steps that are not resources: a tenant's smoke tests before it becomes
//! active, and its hooks.

use std::time::SystemTime;

use serde_json::json;

use super::{Executor, Run, StepError, StepLog};
use crate::causes::chain;
use crate::hooks::{HookDone, HookError, HookRun, Invocation};
use crate::plan::{PlannedHook, TenantPlan};
use crate::state::{now, Lifecycle, TenantState};
use crate::targets::provider::{events, Mark};

impl Executor {
    /// Moves the tenant to `to` (writing its events), recording the move at once when
    /// something follows it; a tenant becoming active gets its login opened.
    pub(super) async fn move_lifecycle(
        &self,
        run: &Run<'_>,
        ts: &mut TenantState,
        lifecycle: Lifecycle,
        hooks_after: bool,
        log: &mut StepLog,
    ) -> Result<(), StepError> {
        let to = run.tp.lifecycle.to;
        if lifecycle == to {
            return Ok(());
        }
        let ctx = self.step_context(run.tp, ts, lifecycle, run.mark, false);
        self.targets.control.transition(&ctx, to).await?;
        log.done += 1;
        // Recorded at once when something follows: the hooks after the move may take a
        // while, and a kill meanwhile must not leave the state a move behind the registry.
        // Otherwise the tenant's last checkpoint records it.
        ts.lifecycle = to;
        if let Some(reg) = ts
            .resources
            .get_mut(&crate::desired::Key::new(crate::desired::Kind::REGISTRY))
        {
            reg.insert("lifecycle", json!(to.as_str()));
        }
        if to == Lifecycle::Active || hooks_after {
            run.checkpoint(ts).await?;
        }
        if to == Lifecycle::Active {
            log.at = "role".to_string();
            self.open_login(run.tp, ts, run.mark).await?;
            // With nothing after it, the tenant's last checkpoint, next, records it.
            if hooks_after {
                run.checkpoint(ts).await?;
            }
        }
        Ok(())
    }

    /// Runs every check of the tenant and records what they found on `ts`. A gating failure
    /// is the step's error: the tenant stays where it is (in `provisioning`, at this step),
    /// and a tenant not yet provisioned announces it with `TenantProvisioningFailed`.
    pub(super) async fn smoke_test(
        &self,
        tp: &TenantPlan,
        ts: &mut TenantState,
        lifecycle: Lifecycle,
        mark: &Mark,
    ) -> Result<(), StepError> {
        let smoke = tp.smoke.as_ref().expect("planned");
        let control = &self.targets.control;
        let provisioning = matches!(lifecycle, Lifecycle::Pending | Lifecycle::Provisioning);
        if provisioning {
            self.show_step(ts, crate::plan::SMOKE_STEP.to_string())
                .await?;
        }
        let ctx = self.step_context(tp, ts, lifecycle, mark, false);
        let health = crate::smoke::run(&self.targets, &ctx, &smoke.checks).await;
        let healthy = health.healthy();
        let failures = health.failures();
        if !healthy && provisioning {
            let failed: Vec<&str> = health
                .checks
                .iter()
                .filter(|c| c.gates())
                .map(|c| c.name.as_str())
                .collect();
            let detail = json!({ "step": crate::plan::SMOKE_STEP, "failed_checks": failed });
            control
                .emit_event(&ctx, events::PROVISIONING_FAILED, detail)
                .await?;
        }
        ts.health = Some(health.record());
        if healthy {
            Ok(())
        } else {
            Err(format!("smoke tests failed: {failures}").into())
        }
    }

    /// Records a run, with a new idempotency key, of every hook the plan reaches a moment
    /// of and that is not owed already; forgets owed runs of hooks no longer configured.
    /// Whether anything changed.
    pub(super) fn queue_hooks(&self, tp: &TenantPlan, ts: &mut TenantState) -> bool {
        let before = ts.hooks.len();
        // Kept: the runs this plan carries, and those done while the tenant's move is not.
        ts.hooks.retain(|r| {
            r.done_at.is_some()
                || tp
                    .hooks
                    .iter()
                    .any(|h| h.spec.name == r.hook && h.moment == r.moment)
        });
        let mut changed = ts.hooks.len() != before;
        for h in &tp.hooks {
            let owed = ts
                .hooks
                .iter()
                .any(|r| r.hook == h.spec.name && r.moment == h.moment);
            if !owed {
                ts.hooks
                    .push(HookRun::new(&h.spec.name, h.moment, h.lifecycle));
                changed = true;
            }
        }
        changed
    }

    /// One try of an owed hook run. Success forgets the run, records it as done and its
    /// outputs (on the registry row too); a failure counts it and sets when it is tried
    /// next; an interrupted try leaves it owed as it was. Either way `ts` is to be
    /// checkpointed.
    pub(super) async fn run_hook(
        &self,
        tp: &TenantPlan,
        ts: &mut TenantState,
        h: &PlannedHook,
    ) -> Result<(), StepError> {
        let Some(i) = ts
            .hooks
            .iter()
            .position(|r| r.hook == h.spec.name && r.moment == h.moment && r.done_at.is_none())
        else {
            return Ok(());
        };
        let run = ts.hooks[i].clone();
        let tenant_id = ts.tenant_id.clone().unwrap_or_default();
        let result = crate::hooks::run(&Invocation {
            spec: &h.spec,
            run: &run,
            tenant: &tp.tenant,
            tenant_id: &tenant_id,
            outputs: &ts.outputs,
            root: &self.root,
            stop: &self.stop,
        })
        .await;
        // The outputs reach the registry row before the run counts as done: if that write
        // fails, the run is owed still and tried again, on the same key.
        let mut merged = ts.outputs.clone();
        let result = match result {
            Ok(outputs) => {
                merged.extend(outputs);
                let write = merged != ts.outputs
                    && !tenant_id.is_empty()
                    && tp.lifecycle.to != Lifecycle::Deprovisioned;
                if write {
                    self.targets
                        .control
                        .set_outputs(&tenant_id, &merged)
                        .await
                        .map_err(|e| {
                            HookError::Failed(format!(
                                "its outputs could not be recorded: {}",
                                chain(&e)
                            ))
                        })
                } else {
                    Ok(())
                }
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                let done = now();
                // Kept, marked done, until the tenant's move is finished (see `queue_hooks`).
                ts.hooks[i].done_at = Some(done.clone());
                ts.hooks_done.insert(
                    run.hook.clone(),
                    HookDone {
                        moment: run.moment,
                        idempotency_key: run.idempotency_key.clone(),
                        at: done,
                    },
                );
                ts.outputs = merged;
                Ok(())
            }
            Err(HookError::Interrupted) => Err(StepError::Interrupted(
                "interrupted while the hook ran; it was stopped, and runs again under the same key",
            )),
            Err(HookError::Failed(e)) => {
                let r = &mut ts.hooks[i];
                r.attempts += 1;
                r.last_error = Some(e.clone());
                let next = SystemTime::now() + h.spec.backoff(r.attempts);
                // A gating hook is tried again by the next apply, as any failed step is.
                r.next_try_at =
                    (!h.spec.gating).then(|| humantime::format_rfc3339_seconds(next).to_string());
                Err(StepError::from(format!(
                    "hook {} ({}) failed, try {}: {e}{}",
                    h.spec.name,
                    run.moment,
                    r.attempts,
                    if h.spec.gating {
                        String::new()
                    } else {
                        format!(
                            "; it is retried by an apply after {}",
                            crate::hooks::clock(next)
                        )
                    }
                )))
            }
        }
    }
}

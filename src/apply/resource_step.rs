//! The steps of a tenant's apply that act on one resource: a new tenant's registry row, and
//! a resource brought to what the plan asks, each with the checkpoints around it.

use serde_json::json;

use super::{Executor, Run, StepError, StepLog};
use crate::model::change::{Action, ResourceChange};
use crate::model::lifecycle::{now, Lifecycle};
use crate::model::resource::Kind;
use crate::state::TenantState;
use crate::targets::provider::{ProviderError, StepContext};

impl Executor {
    /// Makes a new tenant's registry row, which gives it its id, in `provisioning`.
    pub(super) async fn register(
        &self,
        run: &Run<'_>,
        ts: &mut TenantState,
        lifecycle: &mut Lifecycle,
        change: &ResourceChange,
    ) -> Result<(), StepError> {
        let desired = change
            .desired
            .as_ref()
            .ok_or("registry without attributes")?;
        let claimed = ts.creating.contains(&change.key);
        let ctx = self.step_context(run.tp, ts, *lifecycle, run.mark, claimed);
        let id = self.targets.control.register(&ctx, &desired.attrs).await?;
        if matches!(lifecycle, Lifecycle::Pending) {
            *lifecycle = Lifecycle::Provisioning;
        }
        let mut attrs = desired.attrs.clone();
        attrs.insert("lifecycle", json!(lifecycle.as_str()));
        ts.tenant_id = Some(id);
        ts.lifecycle = *lifecycle;
        ts.step = Some(change.key.to_string());
        ts.resources.insert(change.key.clone(), attrs);
        ts.updated_at = now();
        Ok(())
    }

    /// Shows `step` on the tenant's registry row (once it has one) and in its record, before
    /// the step runs, so a tenant stuck in provisioning shows where.
    pub(super) async fn show_step(
        &self,
        ts: &mut TenantState,
        step: String,
    ) -> Result<(), StepError> {
        if let Some(id) = ts.tenant_id.as_deref() {
            self.targets.control.set_step(id, Some(&step)).await?;
        }
        ts.step = Some(step);
        Ok(())
    }

    /// Brings resources of one target that follow each other to what `changes` ask for, in
    /// one call (one transaction): the registry row's step shows the first, and a failure
    /// names the one that failed (`log.at`), none of them made.
    pub(super) async fn change_together(
        &self,
        run: &Run<'_>,
        ts: &mut TenantState,
        lifecycle: Lifecycle,
        changes: &[ResourceChange],
        log: &mut StepLog,
    ) -> Result<(), StepError> {
        let first = changes.first().ok_or("no change to make")?;
        if lifecycle == Lifecycle::Provisioning {
            self.show_step(ts, first.key.to_string()).await?;
        }
        run.lost()?;
        let claimed = changes.iter().any(|c| ts.creating.contains(&c.key));
        let ctx = self.step_context(run.tp, ts, lifecycle, run.mark, claimed);
        let made = self
            .targets
            .for_kind(first.key.kind)
            .apply_together(&ctx, changes)
            .await;
        match made {
            Ok(all) => {
                for (change, attrs) in changes.iter().zip(all) {
                    ts.resources.insert(change.key.clone(), attrs);
                    ts.creating.remove(&change.key);
                }
                ts.updated_at = now();
                if changes.iter().any(|c| c.key.kind == Kind::DATABASE) {
                    self.record_migrations(run).await;
                }
                Ok(())
            }
            Err(failed) => {
                if let Some(change) = changes.get(failed.at) {
                    log.at = change.key.to_string();
                }
                Err(failed.error.into())
            }
        }
    }

    /// Brings one resource to what `change` asks for through its target, recording before
    /// the call what a kill in the middle would otherwise lose, and after it what stands.
    pub(super) async fn change(
        &self,
        run: &Run<'_>,
        ts: &mut TenantState,
        lifecycle: Lifecycle,
        change: &ResourceChange,
    ) -> Result<(), StepError> {
        if self.retire_before_replace(change, ts) {
            // Recorded before the call: a run killed once the new one stands still knows
            // the old one is left behind, and the tenant's purge reaches it.
            run.checkpoint(ts).await?;
        }
        if lifecycle == Lifecycle::Provisioning {
            self.show_step(ts, change.key.to_string()).await?;
        }
        let claimed = ts.creating.contains(&change.key);
        // Field by field, not `step_context`: the step goes on to update other fields of
        // `ts` (its step, its intents) while this borrows its resources.
        let ctx = StepContext {
            tenant: &run.tp.tenant,
            tenant_id: ts.tenant_id.as_deref(),
            lifecycle,
            credentials_version: ts.credentials_version,
            key: &self.key,
            mark: run.mark.for_tenant(ts.tenant_id.as_deref()),
            incarnation: ts.incarnation.as_deref(),
            claimed,
            recorded: &ts.resources,
            retired: &ts.retired,
        };
        run.lost()?;
        let provider = self.targets.for_kind(change.key.kind);
        let creates = matches!(
            change.action,
            Action::Create | Action::Replace | Action::Import
        );
        if creates && provider.marks_after_create(change) && ts.creating.insert(change.key.clone())
        {
            // Recorded before the call: killed between creating and marking, the rerun
            // knows the unmarked resource is this state's.
            run.checkpoint(ts).await?;
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
                run.checkpoint(ts).await?;
                return Err(e.into());
            }
        };
        let mut moved = None;
        if let (Kind::PLACEMENT, Action::Update, Some(to)) =
            (change.key.kind, change.action, &result)
        {
            // A move: the product hears where its tenant now lives. Said before the state
            // records it, so a run killed in between says it again (at least once, the
            // same servers each time).
            let from = ctx
                .recorded
                .get(&change.key)
                .map(|a| a.str("server").to_string());
            let detail = serde_json::json!({ "from": from, "to": to.str("server") });
            self.targets
                .control
                .emit_event(&ctx, crate::targets::provider::events::MOVED, detail)
                .await?;
            moved = from
                .filter(|from| from != to.str("server"))
                .map(|from| (from, to.str("server").to_string()));
        }
        if let Some((from, to)) = moved {
            // Its copy on the old server stays, fenced, until its plan's hold has passed.
            ts.record_move(&from, &to, now());
        }
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
        if change.key.kind == Kind::DATABASE {
            self.record_migrations(run).await;
        }
        run.checkpoint(ts).await?;
        Ok(())
    }

    /// The plan's migrations, applied to a slice, are on the state's record of checksums.
    async fn record_migrations(&self, run: &Run<'_>) {
        let mut state = run.shared.state.lock().await;
        for m in &run.plan.migrations {
            state.migrations.insert(m.id(), m.checksum.clone());
        }
    }
}

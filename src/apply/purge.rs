//! The executor's purge steps: a tenant's purge begins once (its export checked, the move to
//! `deprovisioning`, the purge recorded); the audit rows of its resources are written, each
//! resource is destroyed, and the rows are completed, every step idempotent so a rerun after
//! a kill anywhere purges what is left and audits each resource once.

use std::time::SystemTime;

use super::{Executor, Run, StepError};
use crate::desired::{Key, Kind};
use crate::model::audit::AuditEntry;
use crate::plan::{ResourceChange, TenantAction, TenantPlan};
use crate::state::{now, Lifecycle, Purge, TenantState};
use crate::targets::provider::{Mark, PurgeEnd, StepContext};

impl Executor {
    /// The purge's first step: begun once (recorded beside its audit rows, both before
    /// anything is destroyed), and on a rerun its audit rows only. Returns the addresses
    /// the rows were written for.
    pub(super) async fn start_purge(
        &self,
        run: &Run<'_>,
        ts: &mut TenantState,
        lifecycle: &mut Lifecycle,
    ) -> Result<Vec<String>, StepError> {
        run.lost()?;
        // A purge begun in an earlier run, or no purge of the tenant at all (the removal of
        // a moved copy whose hold is over): its audit rows are all there is to begin.
        if ts.purge.is_some() || run.tp.action != TenantAction::Purge {
            return self.audit_begin(run.tp, ts).await;
        }
        // Its export is read back and checked: from S3, a call of its own.
        let begun = self.begin_purge(run.tp, ts, lifecycle, run.mark);
        run.call(self.targets.exporter.remote(), begun).await?;
        run.reach(Some(super::steps::BEGIN_PHASE)).await;
        // The purge's start and its audit rows are written side by side: a run stopped
        // between them has destroyed nothing, and its rerun writes what is missing (an
        // audit row written twice is kept once).
        let (recorded, rows) = tokio::join!(run.checkpoint(ts), self.audit_begin(run.tp, ts));
        recorded?;
        rows
    }

    /// Destroys a resource a replace or a move left behind, where the state recorded it.
    pub(super) async fn purge_retired(
        &self,
        run: &Run<'_>,
        ts: &mut TenantState,
        lifecycle: Lifecycle,
        change: &ResourceChange,
    ) -> Result<(), StepError> {
        run.lost()?;
        let retired = ts
            .retired_at_key(&change.key)
            .cloned()
            .ok_or("the retired resource is no longer recorded")?;
        let at = retired.as_recorded(&ts.resources);
        let ctx = StepContext {
            recorded: &at,
            ..self.step_context(run.tp, ts, lifecycle, run.mark, false)
        };
        self.purge(run, &ctx, std::slice::from_ref(&retired.key))
            .await?;
        ts.retired.retain(|r| r.address_key() != change.key);
        ts.resources.remove(&change.key);
        ts.updated_at = now();
        Ok(())
    }

    /// Destroys `changes`' resources, all of one target, in one call, and forgets them.
    /// Not checkpointed: the audit rows record each purge, and a rerun purges what is gone
    /// already again, changing nothing.
    pub(super) async fn purge_together(
        &self,
        run: &Run<'_>,
        ts: &mut TenantState,
        lifecycle: Lifecycle,
        changes: &[ResourceChange],
    ) -> Result<(), StepError> {
        run.lost()?;
        let keys: Vec<Key> = changes.iter().map(|c| c.key.clone()).collect();
        let ctx = self.step_context(run.tp, ts, lifecycle, run.mark, false);
        self.purge(run, &ctx, &keys).await?;
        for key in &keys {
            ts.resources.remove(key);
            // What lived in it (seed rows in the slice) went with it.
            ts.resources
                .retain(|k, _| crate::model::kind::of(k.kind).lives_in != Some(key.kind));
        }
        ts.updated_at = now();
        Ok(())
    }

    /// Before a tenant's first resource is purged: its export verifies against its
    /// manifest (unless an erasure request waived it), it is in `deprovisioning` (an
    /// erasure goes there in the same run), and its purge is recorded, after which it can
    /// only go on to its tombstone.
    pub(super) async fn begin_purge(
        &self,
        tp: &TenantPlan,
        ts: &mut TenantState,
        lifecycle: &mut Lifecycle,
        mark: &Mark,
    ) -> Result<(), StepError> {
        let tenant_id = ts
            .tenant_id
            .clone()
            .ok_or("the tenant has no registry row")?;
        if tp.tenant.offboarding.export {
            let export = ts
                .resources
                .get(&Key::new(Kind::EXPORT))
                .ok_or("no export is recorded, and the data is not purged without one")?;
            if let Some(problem) = self
                .targets
                .exporter
                .problem(&tp.slug, &tenant_id, export.str("manifest_sha256"))
                .await
            {
                return Err(format!(
                    "its export cannot be relied on: {problem}; nothing was purged"
                )
                .into());
            }
        }
        if *lifecycle != Lifecycle::Deprovisioning {
            let ctx = self.step_context(tp, ts, *lifecycle, mark, false);
            self.targets
                .control
                .transition(&ctx, Lifecycle::Deprovisioning)
                .await?;
            *lifecycle = Lifecycle::Deprovisioning;
        }
        ts.lifecycle = Lifecycle::Deprovisioning;
        let erasure = tp.tenant.offboarding.erase;
        let exported = ts.resources.contains_key(&Key::new(Kind::EXPORT));
        ts.purge = Some(Purge {
            started_at: now(),
            finished_at: None,
            erasure,
            export_until: (erasure && exported)
                .then(|| crate::offboarding::export_until(SystemTime::now(), &tp.tenant)),
            export_removed_at: None,
        });
        Ok(())
    }

    /// Writes the audit rows of every resource `tp` purges, in one call, before the first
    /// of them is destroyed: a run stopped after destroying one still has its row, and the
    /// rerun completes it. A row that is there already (written by such a run) is kept as it
    /// was, so each resource is audited once. Returns their addresses.
    pub(super) async fn audit_begin(
        &self,
        tp: &TenantPlan,
        ts: &TenantState,
    ) -> Result<Vec<String>, StepError> {
        let tenant_id = ts
            .tenant_id
            .as_deref()
            .ok_or("the tenant has no registry row")?;
        // What the tenant's offboarding purges follows its export (or an erasure request);
        // a moved copy removed after its hold follows neither.
        let offboarding = ts.purge.is_some() || tp.action == TenantAction::Purge;
        let export = offboarding
            .then(|| ts.resources.get(&Key::new(Kind::EXPORT)))
            .flatten();
        let started_at = now();
        let entries: Vec<AuditEntry> = tp
            .changes
            .iter()
            .filter_map(|c| Some((c, c.purged()?)))
            .map(|(c, purged)| AuditEntry {
                tenant_id: tenant_id.to_string(),
                slug: tp.slug.to_string(),
                address: format!("{}/{}", tp.slug, c.key),
                resource: purged.resource.clone(),
                holds: purged.holds.clone(),
                erasure: offboarding && tp.tenant.offboarding.erase,
                export: export.map(|e| e.str("location").to_string()),
                export_sha256: export.map(|e| e.str("manifest_sha256").to_string()),
                export_until: ts.purge.as_ref().and_then(|p| p.export_until.clone()),
                git_commit: self.git_commit.clone(),
                run_by: self.run_by.clone(),
                started_at: started_at.clone(),
                purged_at: None,
            })
            .collect();
        self.targets.control.audit_begin(&entries).await?;
        Ok(entries.into_iter().map(|e| e.address).collect())
    }

    /// Destroys resources of one target, where the state recorded them. Idempotent: a rerun
    /// after a kill destroys what is gone already again, changing nothing. The audit is
    /// what records each resource's purge; the state records the purge's start and end.
    pub(super) async fn purge(
        &self,
        run: &Run<'_>,
        ctx: &StepContext<'_>,
        keys: &[Key],
    ) -> Result<(), StepError> {
        let Some(first) = keys.first() else {
            return Ok(());
        };
        let Some(target) = self.targets.target(first.kind) else {
            // The export is the engine's own: an erasure removes it when its hold ends.
            let exports = &self.targets.exporter;
            return run
                .call(exports.remote(), exports.erase(ctx))
                .await
                .map_err(StepError::from);
        };
        // Never reached from a plan: `Targets::cannot_purge` refuses the tenant first.
        let Some(purger) = target.as_purge() else {
            return Err(format!("{} cannot purge {first}", target.name()).into());
        };
        run.call(purger.remote_per_tenant(), purger.purge_all(ctx, keys))
            .await
            .map_err(StepError::from)
    }

    /// The control plane's part of the purge, once every other resource is destroyed: its
    /// rows, the audit's completion, the tombstone and, with `to`, the move, in one
    /// transaction. Recorded in `ts` by the tenant's next
    /// checkpoint: a kill before it leaves them for the rerun, which finds them done.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn end_purge(
        &self,
        tp: &TenantPlan,
        ts: &mut TenantState,
        lifecycle: Lifecycle,
        mark: &Mark,
        ending: &mut Ending<'_>,
        to: Option<Lifecycle>,
        log: &mut super::StepLog,
    ) -> Result<(), StepError> {
        let ctx = self.step_context(tp, ts, lifecycle, mark, false);
        let end = PurgeEnd {
            rows: &ending.rows,
            audited: &ending.audited,
            tombstone: ending.tombstone,
            to,
        };
        log.at = match (to, ending.tombstone, ending.rows.last()) {
            (Some(_), _, _) => "lifecycle".to_string(),
            (None, Some(change), _) => change.key.to_string(),
            (None, None, Some(key)) => key.to_string(),
            (None, None, None) => log.at.clone(),
        };
        let tombstone = self.targets.control.end_purge(&ctx, &end).await?;
        for key in ending.rows.drain(..) {
            ts.resources.remove(&key);
            log.done += 1;
        }
        if let (Some(change), Some(attrs)) = (ending.tombstone.take(), tombstone) {
            ts.resources.insert(change.key.clone(), attrs);
            log.done += 1;
        }
        if let Some(to) = to {
            ts.lifecycle = to;
            if let Some(reg) = ts.resources.get_mut(&Key::new(Kind::REGISTRY)) {
                reg.insert("lifecycle", serde_json::json!(to.as_str()));
            }
            log.done += 1;
        }
        ending.audited.clear();
        ts.updated_at = now();
        Ok(())
    }
}

/// The control plane's part of a purge, gathered until the other resources are destroyed.
#[derive(Default)]
pub(super) struct Ending<'a> {
    pub rows: Vec<Key>,
    pub audited: Vec<String>,
    pub tombstone: Option<&'a ResourceChange>,
}

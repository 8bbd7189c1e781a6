//! The executor's purge steps: a tenant's purge begins once (its export checked, the move to
//! `deprovisioning`, the purge recorded), then each resource is audited, destroyed and the
//! audit completed, every one idempotent so a rerun after a kill anywhere audits it once.

use super::Executor;
use crate::desired::{Key, Kind};
use crate::error::chain;
use crate::plan::{Purged, ResourceChange, TenantPlan};
use crate::provider::{Mark, StepContext};
use crate::state::{now, Lifecycle, Purge, TenantState};

impl Executor {
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
    ) -> Result<(), String> {
        let tenant_id = ts
            .tenant_id
            .clone()
            .ok_or("the tenant has no registry row")?;
        if tp.tenant.offboarding.export {
            let export = ts
                .resources
                .get(&Key::new(Kind::Export))
                .ok_or("no export is recorded, and the data is not purged without one")?;
            if let Some(problem) = self
                .targets
                .exporter
                .problem(&tp.slug, &tenant_id, export.str("manifest_sha256"))
                .await
            {
                return Err(format!(
                    "its export cannot be relied on: {problem}; nothing was purged"
                ));
            }
        }
        if *lifecycle != Lifecycle::Deprovisioning {
            let ctx = self.step_context(tp, ts, *lifecycle, mark, false);
            self.targets
                .control
                .transition(&ctx, Lifecycle::Deprovisioning)
                .await
                .map_err(|e| chain(&e))?;
            *lifecycle = Lifecycle::Deprovisioning;
        }
        ts.lifecycle = Lifecycle::Deprovisioning;
        ts.purge = Some(Purge {
            started_at: now(),
            finished_at: None,
            erasure: tp.tenant.offboarding.erase,
        });
        Ok(())
    }

    /// Purges one resource: its audit row first (so a run stopped after the purge still
    /// has it, and the rerun completes it; the registry row shows the step at once), then
    /// the target destroys it, then the row is completed. Each is idempotent, so a rerun
    /// after a kill anywhere audits it once. The audit is what records each resource's
    /// purge; the state records the purge's start and end.
    pub(super) async fn purge(
        &self,
        ctx: &StepContext<'_>,
        tp: &TenantPlan,
        change: &ResourceChange,
        purged: &Purged,
        ts: &TenantState,
    ) -> Result<(), String> {
        let tenant_id = ctx.tenant_id().map_err(|e| chain(&e))?;
        let address = format!("{}/{}", tp.slug, change.key);
        let control = &self.targets.control;
        let export = ts.resources.get(&Key::new(Kind::Export));
        let entry = crate::audit::AuditEntry {
            tenant_id: tenant_id.to_string(),
            slug: tp.slug.to_string(),
            address: address.clone(),
            resource: purged.resource.clone(),
            holds: purged.holds.clone(),
            erasure: tp.tenant.offboarding.erase,
            export: export.map(|e| e.str("location").to_string()),
            export_sha256: export.map(|e| e.str("manifest_sha256").to_string()),
            git_commit: self.git_commit.clone(),
            run_by: self.run_by.clone(),
            started_at: now(),
            purged_at: None,
        };
        control.audit_begin(&entry).await.map_err(|e| chain(&e))?;
        self.targets
            .for_kind(change.key.kind)
            .purge(ctx, &change.key)
            .await
            .map_err(|e| chain(&e))?;
        control
            .audit_done(tenant_id, &address)
            .await
            .map_err(|e| chain(&e))
    }
}

//! The export step of an offboarding: the engine writes the tenant's export from every
//! target that holds its data, and records where it is and its manifest's sha256, which the
//! purge checks before anything is destroyed.

use super::{Executor, Run, StepError};
use crate::model::change::ResourceChange;
use crate::model::lifecycle::{now, Lifecycle};
use crate::state::TenantState;
use crate::targets::provider::Provider;

impl Executor {
    /// Writes the tenant's export (again, for an offboarding after a call-back) and records
    /// it. A run stopped after the manifest finds it written and records it as it is.
    pub(super) async fn export(
        &self,
        run: &Run<'_>,
        ts: &mut TenantState,
        lifecycle: Lifecycle,
        change: &ResourceChange,
    ) -> Result<(), StepError> {
        run.lost()?;
        let sources: Vec<&dyn Provider> = self.targets.all().collect();
        let ctx = self.step_context(run.tp, ts, lifecycle, run.mark, false);
        let attrs = self.targets.exporter.write(&ctx, change, &sources).await?;
        ts.resources.insert(change.key.clone(), attrs);
        ts.updated_at = now();
        Ok(())
    }
}

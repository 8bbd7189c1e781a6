//! `plan --refresh-only`: what changed outside, the recorded state against the live resources.

use super::plan::{check_selected, refresh_targets};
use crate::plan;
use crate::slug::Slug;
use crate::workspace::Workspace;
use crate::Error;

/// What changed outside tenant-reconcile: the recorded state against the live resources,
/// for every tenant with a file (or only `tenants`). Writes nothing.
pub async fn drift(
    ws: &Workspace,
    tenants: Option<&[Slug]>,
) -> Result<plan::drift::DriftReport, Error> {
    check_selected(ws, "--tenant", tenants.unwrap_or_default())?;
    let state = ws.backend().load().await?;
    let targets = ws.targets(ws.repo.migrations.clone());
    // Drift is of what exists: a tenant not placed yet has nothing to drift.
    let wanted = refresh_targets(&ws.repo, tenants, &state, &Default::default());
    let slugs: Vec<Slug> = wanted.iter().map(|t| t.slug.clone()).collect();
    let live = targets
        .refresh(wanted, tenants.is_none())
        .await
        .map_err(Error::Refresh)?;
    Ok(plan::drift::report(&state, &live, &slugs))
}

//! `audit`: the deletion audit, oldest first.

use crate::slug::Slug;
use crate::workspace::Workspace;
use crate::Error;

/// The deletion audit of one tenant or all, from the control plane. Reads only.
pub async fn audit(
    ws: &Workspace,
    slug: Option<&Slug>,
) -> Result<Vec<crate::model::audit::AuditEntry>, Error> {
    let targets = ws.targets(ws.repo.migrations.clone());
    targets
        .control
        .audit_log(slug)
        .await
        .map_err(|e| Error::failed("reading the deletion audit", e))
}

//! `state rm`: tenants released from the state, their resources left as they are.

use std::time::Duration;

use crate::slug::Slug;
use crate::state::{LockInfo, Released, Wait};
use crate::workspace::Workspace;
use crate::Error;

/// Forgets tenants without touching anything they have (terraform's `removed` with
/// `destroy = false`): their resources keep their data, they leave the plans and `show`,
/// and the state records who released them. A tenant whose file is still there is refused:
/// the next plan would bring it straight back.
pub async fn state_rm(
    ws: &Workspace,
    slugs: &[Slug],
    lock_timeout: Duration,
) -> Result<Vec<Released>, Error> {
    if let Some(slug) = slugs
        .iter()
        .find(|s| ws.repo.tenants.iter().any(|t| &t.slug == *s))
    {
        return Err(Error::Usage(format!(
            "tenants/{slug}.yaml still exists, so the next plan would bring {slug} back; nothing was released\n  hint: remove the tenant file first, then run state rm"
        )));
    }
    let backend = ws.backend();
    let info = LockInfo::new("state rm");
    let by = info.who.clone();
    let mut lock = backend.lock(info, &Wait::up_to(lock_timeout)).await?;
    let released = async {
        let mut state = backend.load().await?;
        let mut released = Vec::new();
        for slug in slugs {
            let Some(t) = state.tenants.remove(slug.as_str()) else {
                return Err(Error::Usage(format!(
                    "there is no tenant {slug} in the state; nothing was released\n  hint: `tenant-reconcile state list` lists what is recorded"
                )));
            };
            released.push(Released {
                slug: slug.to_string(),
                tenant_id: t.tenant_id,
                resources: t
                    .resources
                    .keys()
                    .cloned()
                    .chain(t.retired.iter().map(|r| r.address_key()))
                    .map(|k| format!("{slug}/{k}"))
                    .collect(),
                by: by.clone(),
                at: crate::state::now(),
                git_commit: ws.git_commit.clone(),
            });
        }
        state.released.extend(released.iter().cloned());
        state.prepare_snapshot();
        lock.persist(&mut state).await?;
        Ok(released)
    }
    .await;
    let unlocked = lock.unlock().await;
    let released = released?;
    unlocked?;
    Ok(released)
}

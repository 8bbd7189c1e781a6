//! `force-unlock LOCK_ID`: removes a state lock whose holder is gone (a CI job that was
//! cancelled, a machine that died). Only backends whose locks outlive their holder (s3)
//! ever have one; the lock's id, shown wherever a run is blocked, is the confirmation.

use std::path::Path;

use clap::Args;
use tenant_reconcile::workspace::Workspace;

use super::ExitCode;

#[derive(Debug, Args)]
pub struct ForceUnlockArgs {
    /// The id of the lock to remove, as a blocked run prints it.
    lock_id: String,
}

pub async fn run(root: &Path, args: ForceUnlockArgs) -> anyhow::Result<ExitCode> {
    let ws = Workspace::open(root)?;
    let backend = ws.backend();
    let holder = backend.force_unlock(&args.lock_id).await?;
    println!(
        "Released the lock on {}: it was held by {holder}.",
        backend.describe()
    );
    Ok(0)
}

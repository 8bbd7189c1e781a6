//! `export SLUG` and `export-url SLUG`: a tenant's data written out on demand, and links to it.

use std::time::Duration;

use crate::slug::Slug;
use crate::workspace::Workspace;
use crate::Error;

/// Exports a tenant's data (every table of its slice as CSV, its bucket's objects, and a
/// manifest with each file's sha256) into `to`, or a new folder under the local target's
/// `exports/`. Reads the tenant's resources where the state recorded them; changes nothing
/// else, and takes no lock. Returns the folder, the manifest and the manifest's sha256.
pub async fn export(
    ws: &Workspace,
    slug: &Slug,
    to: Option<std::path::PathBuf>,
) -> Result<(std::path::PathBuf, crate::export::sink::Manifest, String), Error> {
    let state = ws.backend().load().await?;
    let Some(t) = state.tenants.get(slug.as_str()) else {
        return Err(Error::Usage(format!(
            "there is no tenant {slug} in the state: nothing of it was ever applied\n  hint: `tenant-reconcile state list` lists what is recorded"
        )));
    };
    refuse_purged(slug, t)?;
    let Some(tenant_id) = t.tenant_id.as_deref() else {
        return Err(Error::Usage(format!(
            "{slug} has no registry row yet: there is nothing to export"
        )));
    };
    let dir = match to {
        Some(dir) => dir,
        None => {
            let stamp = crate::state::now().replace([':', '-'], "");
            // Beside, never inside, the folder an offboarding exports into
            // (`<export_to>/<slug>`); the exports' folder is the operator's alone.
            let exports = ws.local_dir.join("exports");
            crate::private_files::own_dir(&exports)
                .map_err(|e| Error::failed(format!("cannot create {}", exports.display()), e))?;
            exports.join(format!("{slug}-{stamp}"))
        }
    };
    let occupied = std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some());
    if occupied {
        return Err(Error::Usage(format!(
            "{} is not empty; an export goes into a folder of its own",
            dir.display()
        )));
    }
    let targets = ws.targets(ws.repo.migrations.clone());
    let sources: Vec<&dyn crate::targets::provider::Provider> = targets.all().collect();
    let (manifest, sha256) =
        crate::export::write(&dir, &sources, slug, tenant_id, &t.resources, &t.retired)
            .await
            .map_err(|e| {
                // Where the partial export is, after the cause: said here, once.
                Error::failed(
                    format!("exporting {slug}"),
                    format!(
                        "{}; {} holds a partial export, without a manifest",
                        crate::causes::chain(&e),
                        dir.display()
                    ),
                )
            })?;
    Ok((dir, manifest, sha256))
}

/// Presigned download links to every file of a tenant's offboarding export (kept in S3),
/// valid for `lifetime` (at most 7 days, as SigV4 allows). The links are secrets: they are
/// returned to be printed, never stored or logged.
pub async fn export_links(
    ws: &Workspace,
    slug: &Slug,
    lifetime: Duration,
) -> Result<Vec<(String, String)>, Error> {
    use crate::export::s3::MAX_LINK_LIFETIME;
    if lifetime > MAX_LINK_LIFETIME || lifetime.is_zero() {
        return Err(Error::Usage(format!(
            "a link lasts from a second up to 7 days (SigV4's limit); {} was asked",
            humantime::format_duration(lifetime)
        )));
    }
    let state = ws.backend().load().await?;
    let tenant_id = state
        .tenants
        .get(slug.as_str())
        .and_then(|t| t.tenant_id.clone())
        .ok_or_else(|| {
            Error::Usage(format!(
                "there is no tenant {slug} in the state: nothing of it was ever exported"
            ))
        })?;
    let targets = ws.targets(ws.repo.migrations.clone());
    targets
        .exporter
        .links(slug, &tenant_id, lifetime)
        .await
        .map_err(Error::Control)
}

/// A purged tenant (or one being purged) has no data to export and no login: what is left
/// of it is its tombstone and the export its offboarding made, which is where to send
/// whoever asks.
pub(super) fn refuse_purged(slug: &Slug, t: &crate::state::TenantState) -> Result<(), Error> {
    let purge = match (t.lifecycle, &t.purge) {
        (crate::state::Lifecycle::Deprovisioned, p) => format!(
            "{slug} was purged on {}",
            day_of(
                p.as_ref()
                    .and_then(|p| p.finished_at.as_deref())
                    .unwrap_or(&t.updated_at)
            )
        ),
        (_, Some(p)) => format!("{slug} is being purged (since {})", day_of(&p.started_at)),
        _ => return Ok(()),
    };
    let export = t
        .resources
        .get(&crate::desired::Key::new(crate::desired::Kind::EXPORT))
        .map(|e| e.str("location").to_string())
        .filter(|l| !l.is_empty());
    let until = t.purge.as_ref().and_then(|p| p.export_until.as_deref());
    let removed = t
        .purge
        .as_ref()
        .and_then(|p| p.export_removed_at.as_deref());
    Err(Error::Refused(match (export, until, removed) {
        (Some(at), Some(until), _) => format!(
            "{purge}; its offboarding export is at {at} (an erasure's: kept until {}, then removed)",
            day_of(until)
        ),
        (Some(at), None, _) => format!("{purge}; its offboarding export is at {at}"),
        (None, _, Some(removed)) => format!(
            "{purge}; its offboarding export was removed on {}: nothing of its data is left",
            day_of(removed)
        ),
        (None, _, None) => format!("{purge}; it left without an offboarding export"),
    }))
}

/// The day of an RFC 3339 time, as people say when something happened.
pub(super) fn day_of(at: &str) -> &str {
    at.get(..10).unwrap_or(at)
}

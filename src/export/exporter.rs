//! Where offboarding's exports go, and the engine's export step: once a leaving tenant's
//! access is revoked, every target holding its data writes it into `<export_to>/<slug>/`
//! ([`crate::export`]), and the manifest, written last, says the export is whole. No target
//! owns the export: the plan shows it as the tenant's `export`, the engine reads it back
//! ([`Exporter::refresh`]), writes it ([`Exporter::write`]) and, for an erasure, removes it
//! when its hold ends ([`Exporter::erase`]). `export_to` is a folder, or an S3
//! bucket and prefix (`s3://bucket/prefix`): the export is then written into a staging
//! folder of the local target's and uploaded, its manifest last ([`S3Exports`]).
//!
//! The folder (or prefix) is claimed before anything is written: a file naming the tenant's
//! id. Only a folder so claimed is ever cleared (a run stopped mid-export) or set aside (the
//! tenant offboarded again after being called back); any other content there is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use crate::export::s3::S3Exports;
use crate::export::sink::{Manifest, MANIFEST_FILE};
use crate::model::attrs::Attrs;
use crate::model::change::{Action, ResourceChange};
use crate::model::resource::Kind;
use crate::slug::Slug;
use crate::targets::buckets::s3::S3Store;
use crate::targets::provider::{LiveFleet, Provider, ProviderError, RefreshTarget, StepContext};

/// An export of a tenant's own, as read.
struct Found {
    manifest: Manifest,
    /// Its location, its manifest's sha256 and when it was made.
    attrs: Attrs,
}

/// The claim on an export folder: the id of the tenant whose export it is.
const CLAIM_FILE: &str = ".tenant-reconcile-export";

pub struct Exporter {
    /// What relative locations are relative to: the tenant repo.
    root: PathBuf,
    export_to: String,
    /// Where exports go when `export_to` names an S3 bucket, and the local folder they are
    /// written into before they are uploaded.
    bucket: Option<(S3Exports, PathBuf)>,
}

impl Exporter {
    /// `staging` is where an export bound for S3 is written first; `store` the S3
    /// connection it is uploaded through.
    pub fn new(
        root: PathBuf,
        export_to: String,
        store: Arc<S3Store>,
        staging: PathBuf,
    ) -> Exporter {
        Exporter {
            bucket: S3Exports::parse(store, &export_to).map(|b| (b, staging)),
            root,
            export_to,
        }
    }

    /// Whether exports go to S3: checking one is then a call of its own.
    pub fn remote(&self) -> bool {
        self.bucket.is_some()
    }

    /// The tenant's export folder (for S3, the one it is staged in). The slug was checked
    /// (`[a-z0-9-]`), so it stays inside.
    fn folder(&self, slug: &Slug) -> PathBuf {
        match &self.bucket {
            Some((_, staging)) => staging.join(slug.as_str()),
            None => self.root.join(&self.export_to).join(slug.as_str()),
        }
    }

    /// The manifest of the tenant's export as written, if there is one.
    async fn manifest_text(&self, slug: &Slug) -> Result<Option<String>, ProviderError> {
        match &self.bucket {
            Some((s3, _)) => s3.manifest(slug).await,
            None => Ok(std::fs::read_to_string(self.folder(slug).join(MANIFEST_FILE)).ok()),
        }
    }

    /// Presigned links to every file of the tenant's export, for its owner to download
    /// (`export-url`); only for exports kept in S3.
    pub async fn links(
        &self,
        slug: &Slug,
        tenant_id: &str,
        lifetime: std::time::Duration,
    ) -> Result<Vec<(String, String)>, ProviderError> {
        let Some((s3, _)) = &self.bucket else {
            return Err(ProviderError::Setting(format!(
                "exports go to the folder {}, and a folder has no download links\n  hint: set offboarding.export_to to an S3 bucket (\"s3://bucket/prefix\") to hand exports out by link",
                self.export_to
            )));
        };
        let found = self.load(slug, Some(tenant_id)).await?.ok_or_else(|| {
            ProviderError::Refused(format!(
                "{slug} has no export of its own in {}",
                self.export_to
            ))
        })?;
        s3.links(slug, &found.manifest, lifetime).await
    }

    /// The tenant's whole export, when a manifest of this tenant (by id) is there: the
    /// manifest read once, with the attributes refresh and apply record.
    async fn load(
        &self,
        slug: &Slug,
        tenant_id: Option<&str>,
    ) -> Result<Option<Found>, ProviderError> {
        let Some(text) = self.manifest_text(slug).await? else {
            return Ok(None);
        };
        let Ok(manifest) = serde_json::from_str::<Manifest>(&text) else {
            return Ok(None);
        };
        if Some(manifest.tenant_id.as_str()) != tenant_id {
            return Ok(None);
        }
        let attrs = crate::model::attrs::attrs([
            ("location", json!(self.location(slug))),
            (
                "manifest_sha256",
                json!(crate::model::digest::sha256_hex(&text)),
            ),
            // When the hold began: the retention counts from here.
            ("exported_at", json!(manifest.exported_at)),
        ]);
        Ok(Some(Found { manifest, attrs }))
    }

    /// The tenant's whole export as it is: its location and its manifest's sha256.
    async fn read(
        &self,
        slug: &Slug,
        tenant_id: Option<&str>,
    ) -> Result<Option<Attrs>, ProviderError> {
        Ok(self.load(slug, tenant_id).await?.map(|f| f.attrs))
    }

    /// `<export_to>/<slug>`, as the plan and the audit name an export.
    fn location(&self, slug: &Slug) -> String {
        format!("{}/{slug}", self.export_to.trim_end_matches('/'))
    }

    /// Why the tenant's export may not be relied on before its data is purged: no
    /// manifest of its own, another manifest than the one recorded (`manifest_sha256`), or
    /// a file that differs from what the manifest says. `None` when it verifies.
    pub async fn problem(
        &self,
        slug: &Slug,
        tenant_id: &str,
        manifest_sha256: &str,
    ) -> Option<String> {
        match self.load(slug, Some(tenant_id)).await {
            Ok(Some(found)) => self.found_problem(slug, &found, manifest_sha256).await,
            Ok(None) => Some(format!(
                "there is no manifest of its own in {}",
                self.location(slug)
            )),
            Err(e) => Some(crate::causes::chain(&e)),
        }
    }

    /// [`Exporter::problem`] for an export already read.
    async fn found_problem(
        &self,
        slug: &Slug,
        found: &Found,
        manifest_sha256: &str,
    ) -> Option<String> {
        let at = self.location(slug);
        let sha = found.attrs.str("manifest_sha256");
        if sha != manifest_sha256 {
            return Some(format!(
                "the manifest in {at} is not the one recorded (sha256 {sha}, recorded {manifest_sha256})"
            ));
        }
        let problems = match &self.bucket {
            Some((s3, _)) => s3.problems(slug, &found.manifest).await,
            // Reading and hashing every file: on a thread for blocking work, so the
            // other tenants' steps go on meanwhile.
            None => {
                let folder = self.folder(slug);
                tokio::task::spawn_blocking(move || crate::export::sink::verify(&folder))
                    .await
                    .unwrap_or_else(|e| Err(ProviderError::failed("verifying the export")(e)))
            }
        };
        match problems {
            Ok(problems) if problems.is_empty() => None,
            Ok(problems) => Some(format!(
                "{at} does not match its manifest: {}",
                problems.join("; ")
            )),
            Err(e) => Some(crate::causes::chain(&e)),
        }
    }

    /// Makes `dir` an empty folder claimed for `tenant_id`: a folder this tenant claimed
    /// before is cleared (a stopped run) or, holding a whole export, set aside beside it
    /// (offboarded again); anything else there is refused, never removed.
    fn claim(dir: &Path, tenant_id: &str) -> Result<(), ProviderError> {
        let claim = dir.join(CLAIM_FILE);
        let occupied = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
        if occupied {
            let claimed_by = std::fs::read_to_string(&claim).unwrap_or_default();
            if claimed_by.trim() != tenant_id {
                return Err(ProviderError::NotOurs(format!(
                    "{} holds files that are not this tenant's export; it was left as it is\n  hint: move them away, or set offboarding.export_to to a folder of exports only",
                    dir.display()
                )));
            }
            if dir.join(MANIFEST_FILE).exists() {
                let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("export");
                for aside in crate::export::sink::aside_names(name) {
                    // Onto a folder that holds something, rename fails: that name is taken
                    // (set aside earlier within the same second), the next one is tried.
                    match std::fs::rename(dir, dir.with_file_name(&aside)) {
                        Ok(()) => break,
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::DirectoryNotEmpty
                                    | std::io::ErrorKind::AlreadyExists
                            ) => {}
                        Err(e) => {
                            return Err(ProviderError::io(format!("set aside {}", dir.display()))(
                                e,
                            ))
                        }
                    }
                }
            } else {
                std::fs::remove_dir_all(dir)
                    .map_err(ProviderError::io(format!("clear {}", dir.display())))?;
            }
        }
        // The folder appears with its claim in it or not at all: it is made under a hidden
        // name of ours and renamed into place, so a run killed in between never leaves a
        // folder the next run must refuse as someone else's.
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("export");
        let making = dir.with_file_name(format!(".{name}.claiming"));
        if making.exists() {
            std::fs::remove_dir_all(&making)
                .map_err(ProviderError::io(format!("clear {}", making.display())))?;
        }
        // Exports hold the tenants' own data: their folder is the operator's alone.
        if let Some(exports) = dir.parent() {
            crate::private_files::own_dir(exports)
                .map_err(ProviderError::io(format!("create {}", exports.display())))?;
        }
        crate::private_files::create_dir_all(&making)
            .and_then(|()| {
                crate::private_files::write(
                    &making.join(CLAIM_FILE),
                    format!("{tenant_id}\n").as_bytes(),
                )
            })
            .map_err(ProviderError::io(format!("write {}", claim.display())))?;
        if dir.exists() {
            // Empty (it was not occupied): made by hand, or left by an older build.
            std::fs::remove_dir(dir)
                .map_err(ProviderError::io(format!("clear {}", dir.display())))?;
        }
        std::fs::rename(&making, dir)
            .map_err(ProviderError::io(format!("create {}", dir.display())))
    }
}

/// Removes, under `root`, the export folder of `slug` and those set aside beside it
/// (`<slug>.<time>[.n]`) whose claim names `tenant_id`. A folder claimed by anyone else, or
/// by no one, is left as it is.
fn remove_claimed(root: &Path, slug: &Slug, tenant_id: &str) -> Result<(), ProviderError> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ProviderError::io(format!("read {}", root.display()))(e)),
    };
    let aside = format!("{slug}.");
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name != slug.as_str() && !name.starts_with(&aside) {
            continue;
        }
        let dir = entry.path();
        let claimed_by = std::fs::read_to_string(dir.join(CLAIM_FILE)).unwrap_or_default();
        if claimed_by.trim() == tenant_id {
            std::fs::remove_dir_all(&dir)
                .map_err(ProviderError::io(format!("remove {}", dir.display())))?;
        }
    }
    Ok(())
}

impl Exporter {
    /// The name its reads are counted under.
    pub const NAME: &'static str = "export";

    /// Reads back the export of each tenant in `targets` whose keys ask for one; for a
    /// tenant about to be purged, also whether it verifies.
    pub async fn refresh(
        &self,
        targets: &[RefreshTarget],
        live: &mut LiveFleet,
    ) -> Result<(), ProviderError> {
        let mut reads = 0;
        for t in targets
            .iter()
            .filter(|t| t.keys.iter().any(|k| k.kind == Kind::EXPORT))
        {
            reads += 1;
            if let Some(found) = self.load(&t.slug, t.tenant_id.as_deref()).await? {
                if t.purge {
                    // Read whole only for a tenant about to be purged: its data goes once
                    // the export it is held in is known to be whole. (The plan compares
                    // the manifest with the recorded one.)
                    let sha = found.attrs.str("manifest_sha256").to_string();
                    if let Some(problem) = self.found_problem(&t.slug, &found, &sha).await {
                        live.unverified.insert(t.slug.clone(), problem);
                    }
                }
                live.insert_attrs(&t.slug, Kind::EXPORT, found.attrs);
            }
        }
        live.calls.push((Self::NAME, reads));
        Ok(())
    }

    /// Writes the tenant's export from every target in `sources` that can export, and
    /// returns what the state records of it: its location and its manifest's sha256.
    pub async fn write(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
        sources: &[&dyn Provider],
    ) -> Result<Attrs, ProviderError> {
        let slug = &ctx.tenant.slug;
        let tenant_id = ctx.tenant_id()?;
        // Done already: a run stopped after the manifest, before its checkpoint. An update
        // is an offboarding after a call-back, which exports anew.
        if change.action != Action::Update {
            if let Some(attrs) = self.read(slug, Some(tenant_id)).await? {
                return Ok(attrs);
            }
        }
        let dir = self.folder(slug);
        match &self.bucket {
            None => {
                Self::claim(&dir, tenant_id)?;
                crate::export::write(&dir, sources, slug, tenant_id, ctx.recorded, ctx.retired)
                    .await?;
            }
            Some((s3, _)) => {
                // The staging folder is the local target's own: whatever a stopped run left
                // there is cleared.
                if dir.exists() {
                    std::fs::remove_dir_all(&dir)
                        .map_err(ProviderError::io(format!("clear {}", dir.display())))?;
                }
                s3.claim(slug, tenant_id, change.action == Action::Update)
                    .await?;
                let (manifest, _) =
                    crate::export::write(&dir, sources, slug, tenant_id, ctx.recorded, ctx.retired)
                        .await?;
                s3.upload(slug, &dir, &manifest).await?;
                std::fs::remove_dir_all(&dir)
                    .map_err(ProviderError::io(format!("clear {}", dir.display())))?;
            }
        }
        self.read(slug, Some(tenant_id)).await?.ok_or_else(|| {
            ProviderError::Refused(format!(
                "the manifest of {}/{slug} was not written",
                self.export_to.trim_end_matches('/')
            ))
        })
    }

    /// An erasure export at its end: every copy of the tenant's export (the folder or
    /// prefix, and any set aside beside it), each only where its claim names this tenant.
    /// Idempotent: a copy gone already is done.
    pub async fn erase(&self, ctx: &StepContext<'_>) -> Result<(), ProviderError> {
        let slug = &ctx.tenant.slug;
        let tenant_id = ctx.tenant_id()?;
        match &self.bucket {
            Some((s3, _)) => s3.remove(slug, tenant_id).await,
            None => remove_claimed(&self.root.join(&self.export_to), slug, tenant_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tenant offboarded again within the same second (a run killed after its export, then
    /// run again): each whole export is set aside under a name of its own, none replaced.
    #[test]
    fn exports_set_aside_within_one_second_keep_a_name_each() {
        let root = tempfile::TempDir::new().unwrap();
        let dir = root.path().join("acme");
        for run in 0..3 {
            Exporter::claim(&dir, "t-1").unwrap();
            std::fs::write(dir.join(MANIFEST_FILE), format!("run {run}")).unwrap();
        }
        Exporter::claim(&dir, "t-1").unwrap();
        let mut kept: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p != &dir)
            .map(|p| std::fs::read_to_string(p.join(MANIFEST_FILE)).unwrap())
            .collect();
        kept.sort();
        assert_eq!(kept, ["run 0", "run 1", "run 2"]);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "the folder is claimed anew"
        );
    }
}

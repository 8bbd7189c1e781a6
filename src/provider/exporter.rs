//! The export step of offboarding: once a leaving tenant's access is revoked, every target
//! holding its data writes it into `<export_to>/<slug>/` ([`crate::export`]), and the
//! manifest, written last, says the export is whole.
//!
//! The folder is claimed before anything is written: a file naming the tenant's id. Only a
//! folder so claimed is ever cleared (a run stopped mid-export) or set aside (the tenant
//! offboarded again after being called back); any other content there is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use super::{LiveFleet, Provider, ProviderError, RefreshTarget, StepContext};
use crate::desired::{self, Attrs, Kind};
use crate::export::{Manifest, MANIFEST_FILE};
use crate::plan::{Action, ResourceChange};
use crate::slug::Slug;

/// The claim on an export folder: the id of the tenant whose export it is.
const CLAIM_FILE: &str = ".tenant-reconcile-export";

pub struct Exporter {
    /// What relative locations are relative to: the tenant repo.
    root: PathBuf,
    export_to: String,
    /// The targets that hold tenants' data, asked in turn.
    sources: Vec<Arc<dyn Provider>>,
}

impl Exporter {
    pub fn new(root: PathBuf, export_to: String, sources: Vec<Arc<dyn Provider>>) -> Exporter {
        Exporter {
            root,
            export_to,
            sources,
        }
    }

    /// The tenant's export folder. The slug was checked (`[a-z0-9-]`), so it stays inside.
    fn folder(&self, slug: &Slug) -> PathBuf {
        self.root.join(&self.export_to).join(slug.as_str())
    }

    /// The tenant's whole export as it is: its location and its manifest's sha256, when a
    /// manifest of this tenant (by id) is there.
    fn read(&self, slug: &Slug, tenant_id: Option<&str>) -> Option<Attrs> {
        let text = std::fs::read_to_string(self.folder(slug).join(MANIFEST_FILE)).ok()?;
        let manifest: Manifest = serde_json::from_str(&text).ok()?;
        (Some(manifest.tenant_id.as_str()) == tenant_id).then(|| {
            desired::attrs([
                (
                    "location",
                    json!(format!("{}/{slug}", self.export_to.trim_end_matches('/'))),
                ),
                ("manifest_sha256", json!(desired::sha256_hex(&text))),
                // When the hold began: the retention counts from here.
                ("exported_at", json!(manifest.exported_at)),
            ])
        })
    }

    /// Why the tenant's export may not be relied on before its data is purged: no
    /// manifest of its own, another manifest than the one recorded (`manifest_sha256`), or
    /// a file that differs from what the manifest says. `None` when it verifies.
    pub fn problem(&self, slug: &Slug, tenant_id: &str, manifest_sha256: &str) -> Option<String> {
        let dir = self.folder(slug);
        let Some(found) = self.read(slug, Some(tenant_id)) else {
            return Some(format!(
                "there is no manifest of its own in {}",
                dir.display()
            ));
        };
        if found.str("manifest_sha256") != manifest_sha256 {
            return Some(format!(
                "the manifest in {} is not the one recorded (sha256 {}, recorded {manifest_sha256})",
                dir.display(),
                found.str("manifest_sha256")
            ));
        }
        match crate::export::verify(&dir) {
            Ok(problems) if problems.is_empty() => None,
            Ok(problems) => Some(format!(
                "{} does not match its manifest: {}",
                dir.display(),
                problems.join("; ")
            )),
            Err(e) => Some(crate::error::chain(&e)),
        }
    }

    /// Makes `dir` an empty folder claimed for `tenant_id`: a folder this tenant claimed
    /// before is cleared (a stopped run) or, holding a whole export, set aside beside it
    /// (offboarded again); anything else there is refused, never removed.
    fn claim(&self, dir: &Path, tenant_id: &str) -> Result<(), ProviderError> {
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
                let aside = dir.with_file_name(format!(
                    "{}.{}",
                    dir.file_name().and_then(|n| n.to_str()).unwrap_or("export"),
                    crate::state::now().replace([':', '-'], "")
                ));
                std::fs::rename(dir, &aside)
                    .map_err(ProviderError::io(format!("set aside {}", dir.display())))?;
            } else {
                std::fs::remove_dir_all(dir)
                    .map_err(ProviderError::io(format!("clear {}", dir.display())))?;
            }
        }
        std::fs::create_dir_all(dir)
            .map_err(ProviderError::io(format!("create {}", dir.display())))?;
        crate::provider::files::write_atomic(&claim, format!("{tenant_id}\n").as_bytes())
            .map_err(ProviderError::io(format!("write {}", claim.display())))
    }
}

#[async_trait]
impl Provider for Exporter {
    fn name(&self) -> &'static str {
        "export"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Export]
    }

    async fn refresh(
        &self,
        targets: &[RefreshTarget],
        live: &mut LiveFleet,
    ) -> Result<(), ProviderError> {
        let mut reads = 0;
        for t in targets
            .iter()
            .filter(|t| t.keys.iter().any(|k| k.kind == Kind::Export))
        {
            reads += 1;
            if let Some(attrs) = self.read(&t.slug, t.tenant_id.as_deref()) {
                if t.purge {
                    // Read whole only for a tenant about to be purged: its data goes once
                    // the export it is held in is known to be whole.
                    if let Some(problem) = self.problem(
                        &t.slug,
                        t.tenant_id.as_deref().unwrap_or_default(),
                        attrs.str("manifest_sha256"),
                    ) {
                        live.unverified.insert(t.slug.clone(), problem);
                    }
                }
                live.insert_attrs(&t.slug, Kind::Export, attrs);
            }
        }
        live.calls.push((self.name(), reads));
        Ok(())
    }

    async fn apply(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        let slug = &ctx.tenant.slug;
        let tenant_id = ctx.tenant_id()?;
        // Done already: a run stopped after the manifest, before its checkpoint. An update
        // is an offboarding after a call-back, which exports anew.
        if change.action != Action::Update {
            if let Some(attrs) = self.read(slug, Some(tenant_id)) {
                return Ok(Some(attrs));
            }
        }
        let dir = self.folder(slug);
        self.claim(&dir, tenant_id)?;
        let sources: Vec<&dyn Provider> = self.sources.iter().map(|p| &**p).collect();
        crate::export::write(&dir, &sources, slug, tenant_id, ctx.recorded).await?;
        self.read(slug, Some(tenant_id)).map(Some).ok_or_else(|| {
            ProviderError::Message(format!("the manifest of {} was not written", dir.display()))
        })
    }
}

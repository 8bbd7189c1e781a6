//! The export step of offboarding: once a leaving tenant's access is revoked, every target
//! holding its data writes it into `<export_to>/<slug>/` ([`crate::export`]), and the
//! manifest, written last, says the export is whole.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use super::{ExportRequest, LiveFleet, Provider, ProviderError, RefreshTarget, StepContext};
use crate::desired::{self, Attrs, Kind};
use crate::export::{ExportSink, MANIFEST_FILE};
use crate::plan::ResourceChange;
use crate::slug::Slug;

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

    /// The export as it is: its location, and its manifest's sha256 once it is whole.
    fn read(&self, slug: &Slug) -> Option<Attrs> {
        let manifest = std::fs::read_to_string(self.folder(slug).join(MANIFEST_FILE)).ok()?;
        Some(done(&self.export_to, slug, &manifest))
    }
}

fn done(export_to: &str, slug: &Slug, manifest: &str) -> Attrs {
    desired::attrs([
        (
            "location",
            json!(format!("{}/{slug}", export_to.trim_end_matches('/'))),
        ),
        ("manifest_sha256", json!(desired::sha256_hex(manifest))),
    ])
}

/// Clears what a run stopped mid-export left (no manifest yet): the files it wrote.
fn clear_partial(dir: &Path) -> Result<(), ProviderError> {
    for part in ["tables", "objects"] {
        match std::fs::remove_dir_all(dir.join(part)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ProviderError::io(format!("clear {}", dir.display()))(e)),
        }
    }
    Ok(())
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
            if let Some(attrs) = self.read(&t.slug) {
                live.insert_attrs(&t.slug, Kind::Export, attrs);
            }
        }
        live.calls.push((self.name(), reads));
        Ok(())
    }

    async fn apply(
        &self,
        ctx: &StepContext<'_>,
        _change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        let slug = &ctx.tenant.slug;
        // Done already (a run stopped after the manifest, before its checkpoint).
        if let Some(attrs) = self.read(slug) {
            return Ok(Some(attrs));
        }
        let dir = self.folder(slug);
        clear_partial(&dir)?;
        let sink = ExportSink::create(&dir)?;
        let req = ExportRequest {
            slug,
            tenant_id: ctx.tenant_id()?,
            recorded: ctx.recorded,
            sink: &sink,
        };
        for source in &self.sources {
            source.export(&req).await?;
        }
        let schema_version = ctx
            .recorded
            .get(&desired::Key::new(Kind::Database))
            .map(|a| a.str("schema_version").to_string())
            .unwrap_or_default();
        let (_, _) = sink.write_manifest(slug.as_str(), ctx.tenant_id()?, &schema_version)?;
        self.read(slug).map(Some).ok_or_else(|| {
            ProviderError::Message(format!("the manifest of {} was not written", dir.display()))
        })
    }
}

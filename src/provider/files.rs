//! Rendered per-tenant files (`<output_dir>/<slug>/<name>`), e.g. Kubernetes manifests for
//! a GitOps tool to pick up. The same for every target.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use rayon::prelude::*;
use serde_json::json;

use super::{LiveFleet, LiveResource, Provider, ProviderError, RefreshTarget, StepContext};
use crate::desired::{self, Attrs, Key, Kind};
use crate::plan::ResourceChange;
use crate::repo::files::read_at_most;
use crate::slug::Slug;

pub struct RenderedFiles {
    dir: PathBuf,
}

impl RenderedFiles {
    pub fn new(dir: PathBuf) -> RenderedFiles {
        RenderedFiles { dir }
    }

    /// Both parts were validated: the slug as `[a-z0-9-]`, the name as a plain file name
    /// from the templates folder. Neither can climb out of `dir`.
    fn path(&self, slug: &Slug, name: &str) -> PathBuf {
        self.dir.join(slug.as_str()).join(name)
    }
}

fn read(path: &Path) -> Option<String> {
    String::from_utf8(read_at_most(path, u64::MAX).ok()?).ok()
}

#[async_trait]
impl Provider for RenderedFiles {
    fn name(&self) -> &'static str {
        "rendered files"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::File]
    }

    async fn refresh(
        &self,
        targets: &[RefreshTarget],
        live: &mut LiveFleet,
    ) -> Result<(), ProviderError> {
        let wanted: Vec<(&Slug, &Key)> = targets
            .iter()
            .flat_map(|t| {
                t.keys
                    .iter()
                    .filter(|k| k.kind == Kind::File)
                    .map(move |k| (&t.slug, k))
            })
            .collect();
        // Only the digest is kept; the text is read again if a plan shows a diff.
        let found: Vec<Option<(PathBuf, String)>> = wanted
            .par_iter()
            .map(|(slug, key)| {
                let path = self.path(slug, key.name.as_deref().unwrap_or_default());
                let digest = desired::sha256_hex(&read(&path)?);
                Some((path, digest))
            })
            .collect();
        for ((slug, key), found) in wanted.iter().zip(found) {
            if let Some((path, digest)) = found {
                let name = key.name.as_deref().unwrap_or_default();
                live.insert(
                    slug,
                    (*key).clone(),
                    LiveResource {
                        attrs: desired::attrs([
                            ("path", json!(format!("{slug}/{name}"))),
                            ("sha256", json!(digest)),
                        ]),
                        content_at: Some(path.into_boxed_path()),
                    },
                );
            }
        }
        live.calls.push((self.name(), wanted.len()));
        Ok(())
    }

    async fn apply(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        let name = change.key.name.as_deref().unwrap_or_default();
        let path = self.path(&ctx.tenant.slug, name);
        match &change.desired {
            Some(d) => {
                let content = d.content.as_deref().unwrap_or_default();
                write_atomic(&path, content.as_bytes())
                    .map_err(ProviderError::io(format!("write {}", path.display())))?;
                Ok(Some(d.attrs.clone()))
            }
            None => {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(ProviderError::io(format!("remove {}", path.display()))(e))
                    }
                }
                Ok(None)
            }
        }
    }
}

/// Writes through a temporary file and a rename, so a reader (or a kill) never sees half.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
    }
    std::fs::rename(&tmp, path)
}

//! Rendered per-tenant files (`<output_dir>/<slug>/<name>`), e.g. Kubernetes manifests for
//! a GitOps tool to pick up. The same for every target.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use rayon::prelude::*;
use serde_json::json;

use super::{
    LiveFleet, LiveResource, Mark, Owner, Provider, ProviderError, RefreshTarget, StepContext,
};
use crate::desired::{self, Attrs, Key, Kind};
use crate::plan::{Action, ResourceChange};
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

    /// The mark of a tenant's folder: one file beside the rendered ones, since a mark
    /// inside a file would change what its reader gets (and JSON has no comments).
    fn mark_path(&self, slug: &Slug) -> PathBuf {
        self.dir.join(slug.as_str()).join(MARK_FILE)
    }

    /// Marks the tenant's folder as this state's before a file is written into it, and
    /// refuses a file that exists there and is not ours (unless the plan imports it).
    fn claim(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
        path: &Path,
    ) -> Result<(), ProviderError> {
        let mark_path = self.mark_path(&ctx.tenant.slug);
        let found = read(&mark_path).and_then(|t| Mark::parse(&t));
        if found
            .as_ref()
            .is_some_and(|m| m.lineage == ctx.mark.lineage)
        {
            return Ok(());
        }
        if change.action == Action::Create && change.key.kind == Kind::File && path.exists() {
            let whose = match &found {
                Some(m) => format!("it is managed by another state, {:?}", m.state),
                None => format!(
                    "it is not managed by this state (state {:?})",
                    ctx.mark.state
                ),
            };
            return Err(ProviderError::Message(format!(
                "{} exists and {whose}; it was left as it is\n  hint: adopt it with `plan --import {}`",
                path.display(),
                ctx.tenant.slug
            )));
        }
        write_atomic(&mark_path, format!("{}\n", ctx.mark.text()).as_bytes())
            .map_err(ProviderError::io(format!("write {}", mark_path.display())))
    }
}

/// The name of the mark file in each tenant's folder of rendered files.
pub const MARK_FILE: &str = ".tenant-reconcile-state";

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
        let wanted: Vec<(&RefreshTarget, &Key)> = targets
            .iter()
            .flat_map(|t| {
                t.keys
                    .iter()
                    .filter(|k| k.kind == Kind::File)
                    .map(move |k| (t, k))
            })
            .collect();
        // Only the digest is kept; the text is read again if a plan shows a diff.
        let found: Vec<Option<(PathBuf, String)>> = wanted
            .par_iter()
            .map(|(t, key)| {
                let path = self.path(&t.slug, key.name.as_deref().unwrap_or_default());
                let digest = desired::sha256_hex(&read(&path)?);
                Some((path, digest))
            })
            .collect();
        // The mark is read only where the state cannot vouch for a file (a new tenant or
        // template): a recorded file is ours, and a fleet's marks are not read every plan.
        let mut owners: HashMap<&Slug, Owner> = HashMap::new();
        let mut reads = wanted.len();
        for ((t, key), found) in wanted.iter().zip(found) {
            if let Some((path, digest)) = found {
                let owner = if t.unclaimed {
                    owners
                        .entry(&t.slug)
                        .or_insert_with(|| {
                            reads += 1;
                            Owner::from_text(read(&self.mark_path(&t.slug)).as_deref())
                        })
                        .clone()
                } else {
                    Owner::Untracked
                };
                let name = key.name.as_deref().unwrap_or_default();
                live.insert(
                    &t.slug,
                    (*key).clone(),
                    LiveResource {
                        attrs: desired::attrs([
                            ("path", json!(format!("{}/{name}", t.slug))),
                            ("sha256", json!(digest)),
                        ]),
                        content_at: Some(path.into_boxed_path()),
                        owner,
                    },
                );
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
        let name = change.key.name.as_deref().unwrap_or_default();
        let path = self.path(&ctx.tenant.slug, name);
        match &change.desired {
            Some(d) => {
                let content = d.content.as_deref().unwrap_or_default();
                self.claim(ctx, change, &path)?;
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

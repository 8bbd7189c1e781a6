//! Rendered per-tenant files (`<output_dir>/<slug>/<name>`), e.g. Kubernetes manifests for
//! a GitOps tool to pick up. The same for every target.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use rayon::prelude::*;
use serde_json::json;

use crate::clients::fs::read_at_most;
use crate::model::attrs::Attrs;
use crate::model::change::ResourceChange;
use crate::model::resource::{Key, Kind};
use crate::slug::Slug;
use crate::targets::provider::{
    check_ours, purge_change, LiveFleet, LiveResource, Mark, Owner, Provider, ProviderError, Purge,
    RefreshTarget, Smoke, StepContext,
};

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

    /// Lists the file in its folder's mark as this state's before it is written, and
    /// refuses a file that exists there and is not ours (unless the plan imports it).
    fn claim(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
        path: &Path,
        name: &str,
    ) -> Result<(), ProviderError> {
        let mark_path = self.mark_path(&ctx.tenant.slug);
        let found = FolderMark::parse(read(&mark_path).as_deref());
        let owner = found.owner_of(name);
        let ours = |m: &Mark| ctx.mark.claims(m);
        if matches!(&owner, Owner::Marked(m) if ours(m)) {
            return Ok(());
        }
        if path.exists() {
            check_ours(ctx, change, &path.display().to_string(), &owner)?;
        }
        let mut files = match &found.mark {
            Some(m) if ours(m) => found.files,
            _ => Vec::new(),
        };
        files.push(name.to_string());
        let marked = FolderMark {
            mark: Some(ctx.mark.clone()),
            files,
        };
        crate::private_files::write_atomic(&mark_path, marked.text().as_bytes())
            .map_err(ProviderError::io(format!("write {}", mark_path.display())))
    }
}

/// A tenant folder's mark: the state's mark on its first line, then the name of each file
/// that state wrote there. A file it does not list is not its own, even in its folder.
#[derive(Debug, Default)]
struct FolderMark {
    mark: Option<Mark>,
    files: Vec<String>,
}

impl FolderMark {
    fn parse(text: Option<&str>) -> FolderMark {
        let Some(text) = text else {
            return FolderMark::default();
        };
        let mut lines = text.lines();
        FolderMark {
            mark: lines.next().and_then(Mark::parse),
            files: lines
                .map(str::to_string)
                .filter(|l| !l.is_empty())
                .collect(),
        }
    }

    fn text(&self) -> String {
        let mut out = self.mark.as_ref().map(Mark::text).unwrap_or_default();
        out.push('\n');
        for f in &self.files {
            out.push_str(f);
            out.push('\n');
        }
        out
    }

    fn owner_of(&self, name: &str) -> Owner {
        match &self.mark {
            Some(m) if self.files.iter().any(|f| f == name) => Owner::Marked(Box::new(m.clone())),
            _ => Owner::Unmarked,
        }
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
        &[Kind::FILE]
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
                    .filter(|k| k.kind == Kind::FILE)
                    .map(move |k| (t, k))
            })
            .collect();
        // Only the digest is kept; the text is read again if a plan shows a diff.
        let found: Vec<Option<(PathBuf, String)>> = wanted
            .par_iter()
            .map(|(t, key)| {
                let path = self.path(&t.slug, key.name.as_deref().unwrap_or_default());
                let digest = crate::model::digest::sha256_hex(&read(&path)?);
                Some((path, digest))
            })
            .collect();
        // The mark is read only where the state cannot vouch for a file (a new tenant or
        // template): a recorded file is ours, and a fleet's marks are not read every plan.
        let mut marks: HashMap<&Slug, FolderMark> = HashMap::new();
        let mut reads = wanted.len();
        for ((t, key), found) in wanted.iter().zip(found) {
            if let Some((path, digest)) = found {
                let name = key.name.as_deref().unwrap_or_default();
                let owner = if t.unclaimed {
                    marks
                        .entry(&t.slug)
                        .or_insert_with(|| {
                            reads += 1;
                            FolderMark::parse(read(&self.mark_path(&t.slug)).as_deref())
                        })
                        .owner_of(name)
                } else {
                    Owner::Untracked
                };
                live.insert(
                    &t.slug,
                    (*key).clone(),
                    LiveResource {
                        attrs: crate::model::attrs::attrs([
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
                self.claim(ctx, change, &path, name)?;
                crate::private_files::write_atomic(&path, content.as_bytes())
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

    crate::targets::provider::capabilities!(Purge, Smoke);
}

#[async_trait]
impl Purge for RenderedFiles {
    /// Its purges never leave the machine.
    fn remote_per_tenant(&self) -> bool {
        false
    }

    async fn purge(&self, ctx: &StepContext<'_>, key: &Key) -> Result<(), ProviderError> {
        let slug = &ctx.tenant.slug;
        let name = key.name.as_deref().unwrap_or_default();
        let mark_path = self.mark_path(slug);
        let mut found = FolderMark::parse(read(&mark_path).as_deref());
        let path = self.path(slug, name);
        let exists = path.exists();
        if exists {
            // Only a file this state's mark lists is its own to destroy.
            let owner = found.owner_of(name);
            let listed = matches!(&owner, Owner::Marked(m) if ctx.mark.claims(m));
            if !listed {
                check_ours(ctx, &purge_change(key), &path.display().to_string(), &owner)?;
            }
        }
        found.files.retain(|f| f != name);
        // The last of its files: the mark and the folder go too, unless someone else put
        // files there. Otherwise the mark lists one file fewer.
        let last = found.files.is_empty();
        let rewrite = (!last && found.mark.is_some()).then(|| found.text());
        let folder = self.dir.join(slug.as_str());
        // On a thread for blocking work: the members of a purge wave are polled together,
        // and one removing its files here would hold up every other one.
        let removed = tokio::task::spawn_blocking(move || {
            if exists {
                std::fs::remove_file(&path)
                    .map_err(ProviderError::io(format!("remove {}", path.display())))?;
            }
            if last {
                let _ = std::fs::remove_file(&mark_path);
                let _ = std::fs::remove_dir(&folder);
            } else if let Some(text) = rewrite {
                crate::private_files::write_atomic(&mark_path, text.as_bytes())
                    .map_err(ProviderError::io(format!("write {}", mark_path.display())))?;
            }
            Ok(())
        });
        removed.await.unwrap_or_else(|e| {
            Err(ProviderError::io("remove the tenant's files")(
                std::io::Error::other(e),
            ))
        })
    }
}

#[async_trait]
impl Smoke for RenderedFiles {
    async fn smoke(
        &self,
        ctx: &StepContext<'_>,
        _sql: &[&crate::model::checks::CheckSpec],
    ) -> Vec<crate::model::health::CheckOutcome> {
        let started = std::time::Instant::now();
        let files: Vec<(&Key, &crate::model::attrs::Attrs)> = ctx
            .recorded
            .iter()
            .filter(|(k, _)| k.kind == Kind::FILE)
            .collect();
        if files.is_empty() {
            return Vec::new();
        }
        let mut problems = Vec::new();
        for (key, attrs) in &files {
            let name = key.name.as_deref().unwrap_or_default();
            match read(&self.path(&ctx.tenant.slug, name)) {
                None => problems.push(format!("{name} is missing")),
                Some(text) if crate::model::digest::sha256_hex(&text) != attrs.str("sha256") => {
                    problems.push(format!("{name} differs from what was rendered"))
                }
                Some(_) => {}
            }
        }
        let verdict = if problems.is_empty() {
            Ok(format!(
                "{} file{} present as rendered",
                files.len(),
                if files.len() == 1 { "" } else { "s" }
            ))
        } else {
            Err(problems.join(", "))
        };
        vec![crate::model::health::CheckOutcome::of(
            "files", started, verdict,
        )]
    }
}

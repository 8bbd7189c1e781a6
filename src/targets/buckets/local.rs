//! The local bucket target: a folder per tenant under `buckets/`, its settings in a
//! `.bucket.json` beside the objects, so drift (a deleted folder, an edited setting) shows
//! the same way it does on S3.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use rayon::prelude::*;
use serde_json::Value;

use crate::clients::fs::read_at_most;
use crate::model::attrs::Attrs;
use crate::model::change::ResourceChange;
use crate::model::resource::{Key, Kind};
use crate::targets::provider::{
    desired_of, Export, ExportRequest, LiveFleet, Provider, ProviderError, Purge, RefreshTarget,
    Smoke, StepContext,
};

const SETTINGS: &str = ".bucket.json";

/// The object a bucket's smoke test puts, reads and deletes.
const PROBE: &str = ".tenant-reconcile-probe";

pub struct LocalBuckets {
    dir: PathBuf,
}

impl LocalBuckets {
    pub fn new(dir: PathBuf) -> LocalBuckets {
        LocalBuckets { dir }
    }

    /// The folder of bucket `name`, which must be a plain file name: names come from slugs
    /// ([a-z0-9-]) or from state this target wrote, but state is a file people can edit.
    fn folder(&self, name: &str) -> Result<PathBuf, ProviderError> {
        if name.is_empty()
            || name.starts_with('.')
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(ProviderError::Refused(format!(
                "{name:?} is not a local bucket name"
            )));
        }
        Ok(self.dir.join(name))
    }

    /// Bucket `name` as it is, or `None` when there is no such bucket.
    fn read(&self, name: &str) -> Option<Attrs> {
        let folder = self.folder(name).ok()?;
        // A folder without readable settings is a bucket with none of ours. The settings
        // are read first: for nearly every bucket that one call says all.
        let mut settings: serde_json::Map<String, Value> =
            match read_at_most(&folder.join(SETTINGS), u64::MAX) {
                Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
                Err(_) if folder.is_dir() => serde_json::Map::new(),
                Err(_) => return None,
            };
        settings.insert("name".into(), Value::String(name.into()));
        Some(settings.into_iter().collect())
    }
}

/// Every file under `dir` (recursively), as paths relative to it with `/` between parts,
/// sorted; links are not followed.
fn objects_under(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                let rel = entry.path();
                let rel = rel.strip_prefix(dir).expect("under dir");
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// How many objects a bucket folder holds and their bytes (its settings file left out).
fn contents(folder: &Path) -> std::io::Result<(u64, u64)> {
    let mut objects = 0;
    let mut bytes = 0;
    for key in objects_under(folder)?.into_iter().filter(|k| k != SETTINGS) {
        objects += 1;
        bytes += std::fs::metadata(folder.join(key))?.len();
    }
    Ok((objects, bytes))
}

#[async_trait]
impl Provider for LocalBuckets {
    fn name(&self) -> &'static str {
        "local buckets"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::BUCKET]
    }

    fn forces_replace(&self, _kind: Kind, field: &str) -> bool {
        crate::targets::buckets::forces_replace(field)
    }

    async fn refresh(
        &self,
        targets: &[RefreshTarget],
        live: &mut LiveFleet,
    ) -> Result<(), ProviderError> {
        let found: Vec<Option<Attrs>> = targets
            .par_iter()
            .map(|t| t.buckets.iter().find_map(|name| self.read(name)))
            .collect();
        for (t, attrs) in targets.iter().zip(found) {
            if let Some(attrs) = attrs {
                if t.purge {
                    let folder = self.folder(attrs.str("name"))?;
                    let what = match contents(&folder) {
                        Ok((objects, bytes)) => {
                            crate::targets::provider::objects_and_bytes(objects, bytes, 0, 0)
                        }
                        Err(e) => format!("not counted: list {}: {e}", folder.display()),
                    };
                    live.holds(&t.slug, Kind::BUCKET, what);
                }
                live.insert_attrs(&t.slug, Kind::BUCKET, attrs);
            }
        }
        live.calls.push((self.name(), targets.len()));
        Ok(())
    }

    async fn apply(
        &self,
        _ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        let desired = desired_of(change)?;
        let folder = self.folder(desired.attrs.str("name"))?;
        // The buckets' folder and each bucket are the local target's own.
        if let Some(all) = folder.parent() {
            crate::private_files::own_dir(all)
                .map_err(ProviderError::io(format!("create {}", all.display())))?;
        }
        crate::private_files::own_dir(&folder)
            .map_err(ProviderError::io(format!("create {}", folder.display())))?;
        // Written whole and renamed into place, so a kill never leaves half a file.
        let path = folder.join(SETTINGS);
        let tmp = folder.join(".bucket.json.tmp");
        let body = serde_json::to_vec_pretty(&desired.attrs)
            .map_err(ProviderError::failed("encode bucket settings"))?;
        crate::private_files::write(&tmp, &body)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(ProviderError::io(format!("write {}", path.display())))?;
        Ok(Some(desired.attrs.clone()))
    }

    crate::targets::provider::capabilities!(Export, Purge, Smoke);
}

#[async_trait]
impl Export for LocalBuckets {
    async fn export(&self, req: &ExportRequest<'_>) -> Result<(), ProviderError> {
        use tokio::io::AsyncReadExt;
        let Some(bucket) = req.recorded.get(&Key::new(Kind::BUCKET)) else {
            return Ok(());
        };
        let folder = self.folder(bucket.str("name"))?;
        if !folder.is_dir() {
            return Ok(());
        }
        let keys = objects_under(&folder)
            .map_err(ProviderError::io(format!("list {}", folder.display())))?;
        let mut buf = vec![0u8; 64 * 1024];
        for key in keys.into_iter().filter(|k| k != SETTINGS) {
            let path = folder.join(&key);
            let mut from = tokio::fs::File::open(&path)
                .await
                .map_err(ProviderError::io(format!("read {}", path.display())))?;
            let mut file = req
                .sink
                .file(&crate::export::sink::object_path(&key))
                .await?;
            loop {
                let n = from
                    .read(&mut buf)
                    .await
                    .map_err(ProviderError::io(format!("read {}", path.display())))?;
                if n == 0 {
                    break;
                }
                file.write(&buf[..n]).await?;
            }
            req.sink.finish_object(&key, file).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Purge for LocalBuckets {
    /// Its purges never leave the machine.
    fn remote_per_tenant(&self) -> bool {
        false
    }

    async fn purge(&self, ctx: &StepContext<'_>, key: &Key) -> Result<(), ProviderError> {
        let Some(bucket) = ctx.recorded.get(key) else {
            return Ok(());
        };
        let folder = self.folder(bucket.str("name"))?;
        // On a thread for blocking work: a large bucket's files, or a busy disk, would
        // otherwise hold up every other tenant the run is applying.
        let removing = folder.clone();
        let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&removing))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(ProviderError::io(format!("remove {}", folder.display()))(e))
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Smoke for LocalBuckets {
    async fn smoke(
        &self,
        ctx: &StepContext<'_>,
        _sql: &[&crate::model::checks::CheckSpec],
    ) -> Vec<crate::model::health::CheckOutcome> {
        let Some(bucket) = ctx.recorded.get(&Key::new(Kind::BUCKET)) else {
            return Vec::new();
        };
        let started = std::time::Instant::now();
        let name = bucket.str("name");
        let probe = || -> Result<String, String> {
            let folder = self.folder(name).map_err(|e| crate::causes::chain(&e))?;
            if !folder.is_dir() {
                return Err(format!("the bucket {name} is not there"));
            }
            let path = folder.join(PROBE);
            let body = uuid::Uuid::new_v4().to_string();
            crate::private_files::write(&path, body.as_bytes())
                .map_err(|e| format!("cannot put a probe object: {e}"))?;
            let read = std::fs::read_to_string(&path);
            let removed = std::fs::remove_file(&path);
            crate::smoke::verdicts::probe_verdict(
                name,
                read.map(|r| r == body)
                    .map_err(|e| format!("cannot read the probe object back: {e}")),
                removed.map_err(|e| format!("cannot delete the probe object: {e}")),
            )
        };
        vec![crate::model::health::CheckOutcome::of(
            "bucket",
            started,
            probe(),
        )]
    }
}

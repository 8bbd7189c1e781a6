//! The local bucket target: a folder per tenant under `buckets/`, its settings in a
//! `.bucket.json` beside the objects, so drift (a deleted folder, an edited setting) shows
//! the same way it does on S3.

use std::path::PathBuf;

use async_trait::async_trait;

use crate::desired::{Attrs, Kind};
use crate::plan::ResourceChange;
use crate::provider::{desired_of, LiveFleet, Provider, ProviderError, RefreshTarget, StepContext};

const SETTINGS: &str = ".bucket.json";

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
            return Err(ProviderError::Message(format!(
                "{name:?} is not a local bucket name"
            )));
        }
        Ok(self.dir.join(name))
    }
}

#[async_trait]
impl Provider for LocalBuckets {
    fn name(&self) -> &'static str {
        "local buckets"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Bucket]
    }

    fn forces_replace(&self, _kind: Kind, field: &str) -> bool {
        crate::bucket::forces_replace(field)
    }

    async fn refresh(
        &self,
        targets: &[RefreshTarget],
        live: &mut LiveFleet,
    ) -> Result<(), ProviderError> {
        for t in targets {
            for name in &t.buckets {
                let Ok(folder) = self.folder(name) else {
                    continue;
                };
                // A folder without readable settings is a bucket with none of ours. The
                // settings are read first: for nearly every bucket that one call says all.
                let mut attrs: Attrs = match std::fs::read(folder.join(SETTINGS)) {
                    Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
                    Err(_) if folder.is_dir() => Attrs::default(),
                    Err(_) => continue,
                };
                attrs.insert("name", serde_json::json!(name));
                live.insert_attrs(&t.slug, Kind::Bucket, attrs);
                break;
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
        std::fs::create_dir_all(&folder)
            .map_err(ProviderError::io(format!("create {}", folder.display())))?;
        // Written whole and renamed into place, so a kill never leaves half a file.
        let path = folder.join(SETTINGS);
        let tmp = folder.join(".bucket.json.tmp");
        let body = serde_json::to_vec_pretty(&desired.attrs)
            .map_err(|e| ProviderError::Message(format!("encode bucket settings: {e}")))?;
        std::fs::write(&tmp, body)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(ProviderError::io(format!("write {}", path.display())))?;
        Ok(Some(desired.attrs.clone()))
    }
}

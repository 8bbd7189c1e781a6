//! The local bucket target: a folder per tenant under `buckets/`.

use std::path::PathBuf;

use async_trait::async_trait;
use serde_json::json;

use crate::desired::{self, Attrs, Kind};
use crate::plan::ResourceChange;
use crate::provider::{LiveFleet, Provider, ProviderError, RefreshTarget, StepContext};

pub struct LocalBuckets {
    dir: PathBuf,
}

impl LocalBuckets {
    pub fn new(dir: PathBuf) -> LocalBuckets {
        LocalBuckets { dir }
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

    async fn refresh(
        &self,
        targets: &[RefreshTarget],
        live: &mut LiveFleet,
    ) -> Result<(), ProviderError> {
        for t in targets {
            // Slugs are [a-z0-9-]: a bucket folder can only ever be a direct child of `dir`.
            if self.dir.join(t.slug.as_str()).is_dir() {
                live.insert_attrs(
                    &t.slug,
                    Kind::Bucket,
                    desired::attrs([("name", json!(t.slug.as_str()))]),
                );
            }
        }
        live.calls.push((self.name(), targets.len()));
        Ok(())
    }

    async fn apply(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        let path = self.dir.join(ctx.tenant.slug.as_str());
        match &change.desired {
            Some(d) => {
                std::fs::create_dir_all(&path)
                    .map_err(ProviderError::io(format!("create {}", path.display())))?;
                Ok(Some(d.attrs.clone()))
            }
            None => Err(ProviderError::Message(
                "buckets are never deleted by apply".into(),
            )),
        }
    }
}

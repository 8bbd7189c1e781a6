//! The smoke test: a probe object put, read back and deleted.

use async_trait::async_trait;

use crate::model::attrs::Attrs;
use crate::model::resource::{Key, Kind};
use crate::targets::provider::{Smoke, StepContext};

use super::S3Buckets;

impl S3Buckets {
    /// Puts, reads back and deletes (that very version, so a versioned bucket keeps
    /// nothing of it) a probe object.
    pub(super) async fn probe(&self, bucket: &Attrs) -> Result<String, String> {
        const PROBE: &str = ".tenant-reconcile-probe";
        let name = bucket.str("name");
        let client = self
            .client_for(bucket)
            .await
            .map_err(|e| crate::causes::chain(&e))?;
        let body = uuid::Uuid::new_v4().to_string();
        let put = client
            .put_object()
            .bucket(name)
            .key(PROBE)
            .body(body.clone().into_bytes().into())
            .send()
            .await
            .map_err(|e| {
                crate::causes::chain(&crate::clients::s3::client::error("PutObject", name, e))
            })?;
        let read = async {
            let got = client
                .get_object()
                .bucket(name)
                .key(PROBE)
                .set_version_id(put.version_id().map(str::to_string))
                .send()
                .await
                .map_err(|e| {
                    crate::causes::chain(&crate::clients::s3::client::error("GetObject", name, e))
                })?;
            let bytes = got
                .body
                .collect()
                .await
                .map_err(|e| format!("cannot read the probe object back: {e}"))?;
            Ok::<_, String>(bytes.into_bytes() == body.as_bytes())
        }
        .await;
        let deleted = client
            .delete_object()
            .bucket(name)
            .key(PROBE)
            .set_version_id(put.version_id().map(str::to_string))
            .send()
            .await
            .map_err(|e| {
                crate::causes::chain(&crate::clients::s3::client::error("DeleteObject", name, e))
            });
        crate::smoke::verdicts::probe_verdict(name, read, deleted.map(drop))
    }
}

#[async_trait]
impl Smoke for S3Buckets {
    async fn smoke(
        &self,
        ctx: &StepContext<'_>,
        _sql: &[&crate::model::checks::CheckSpec],
    ) -> Vec<crate::model::health::CheckOutcome> {
        let Some(bucket) = ctx.recorded.get(&Key::new(Kind::BUCKET)) else {
            return Vec::new();
        };
        let started = std::time::Instant::now();
        let verdict = self.probe(bucket).await;
        vec![crate::model::health::CheckOutcome::of(
            "bucket", started, verdict,
        )]
    }
}

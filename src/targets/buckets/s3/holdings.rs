//! What a bucket about to be purged holds, for the plan.

use crate::model::attrs::Attrs;
use crate::targets::provider::ProviderError;

use super::{versions::Versions, S3Buckets};

impl S3Buckets {
    /// What a bucket about to be purged holds: its current objects and their bytes, and
    /// the older versions and delete markers a versioned bucket keeps besides.
    pub(super) async fn holdings(&self, bucket: &Attrs) -> Result<String, ProviderError> {
        let client = self.client_for(bucket).await?;
        let (mut objects, mut bytes, mut older, mut markers) = (0, 0, 0, 0);
        let mut versions = Versions::new(&client, bucket.str("name"));
        while let Some(page) = versions.page().await? {
            for v in page {
                match (v.marker, v.latest) {
                    (true, _) => markers += 1,
                    (false, true) => {
                        objects += 1;
                        bytes += v.size;
                    }
                    (false, false) => older += 1,
                }
            }
        }
        Ok(crate::targets::provider::objects_and_bytes(
            objects, bytes, older, markers,
        ))
    }
}

//! Every version and delete marker in a bucket, listed a page at a time.

use crate::targets::provider::ProviderError;

/// Every version and delete marker in a bucket, a page (up to 1,000) at a time: a
/// versioned bucket is emptied only when all of them are gone, and an unversioned one lists
/// its objects here too (as version `null`).
pub(super) struct Versions<'a> {
    client: &'a aws_sdk_s3::Client,
    bucket: &'a str,
    /// Where the next page starts; `None` once the last page was read.
    next: Option<(Option<String>, Option<String>)>,
}

impl<'a> Versions<'a> {
    pub(super) fn new(client: &'a aws_sdk_s3::Client, bucket: &'a str) -> Versions<'a> {
        Versions {
            client,
            bucket,
            next: Some((None, None)),
        }
    }

    pub(super) async fn page(&mut self) -> Result<Option<Vec<Version>>, ProviderError> {
        let Some((key_marker, version_marker)) = self.next.take() else {
            return Ok(None);
        };
        let out = self
            .client
            .list_object_versions()
            .bucket(self.bucket)
            .set_key_marker(key_marker)
            .set_version_id_marker(version_marker)
            .send()
            .await
            .map_err(|e| crate::clients::s3::client::error("ListObjectVersions", self.bucket, e))?;
        let mut page: Vec<Version> = out
            .versions()
            .iter()
            .map(|v| Version {
                key: v.key().unwrap_or_default().to_string(),
                id: v.version_id().map(str::to_string),
                size: v.size().unwrap_or(0).max(0) as u64,
                latest: v.is_latest().unwrap_or(true),
                marker: false,
            })
            .collect();
        page.extend(out.delete_markers().iter().map(|m| Version {
            key: m.key().unwrap_or_default().to_string(),
            id: m.version_id().map(str::to_string),
            size: 0,
            latest: m.is_latest().unwrap_or(false),
            marker: true,
        }));
        if out.is_truncated().unwrap_or(false) {
            self.next = Some((
                out.next_key_marker().map(str::to_string),
                out.next_version_id_marker().map(str::to_string),
            ));
        }
        Ok(Some(page))
    }
}

/// One object version or delete marker, as a purge lists them.
pub(super) struct Version {
    pub(super) key: String,
    pub(super) id: Option<String>,
    pub(super) size: u64,
    pub(super) latest: bool,
    pub(super) marker: bool,
}

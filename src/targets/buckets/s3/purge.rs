//! A tenant's bucket emptied of every version and delete marker, then deleted.

use async_trait::async_trait;

use crate::model::resource::Key;
use crate::targets::provider::{check_ours, ProviderError, Purge, StepContext};

use super::{
    settings,
    versions::{Version, Versions},
    S3Buckets,
};

#[async_trait]
impl Purge for S3Buckets {
    async fn purge(&self, ctx: &StepContext<'_>, key: &Key) -> Result<(), ProviderError> {
        let Some(bucket) = ctx.recorded.get(key) else {
            return Ok(());
        };
        let name = bucket.str("name");
        let client = self.client_for(bucket).await?;
        match settings::existing_owner(&client, name).await? {
            // Gone already: a run stopped after deleting it.
            None => return Ok(()),
            Some(owner) => check_ours(
                ctx,
                &crate::targets::provider::purge_change(key),
                &format!("the bucket {name}"),
                &owner,
            )?,
        }
        // A deny for everyone binds this tool too: it goes first (the bucket goes with it).
        if self.binds_us(bucket) {
            settings::write_access(&client, name, crate::targets::buckets::ACCESS_OPEN, "*")
                .await?;
        }
        let mut versions = Versions::new(&client, name);
        while let Some(page) = versions.page().await? {
            if !page.is_empty() {
                delete_versions(&client, name, page).await?;
            }
        }
        match client.delete_bucket().bucket(name).send().await {
            Ok(_) => Ok(()),
            Err(e) if crate::clients::s3::client::code(&e).as_deref() == Some("NoSuchBucket") => {
                Ok(())
            }
            Err(e) => Err(crate::clients::s3::client::error("DeleteBucket", name, e)),
        }
    }
}

/// Deletes one page of versions and delete markers (at most 1,000, DeleteObjects' limit).
pub(super) async fn delete_versions(
    client: &aws_sdk_s3::Client,
    name: &str,
    page: Vec<Version>,
) -> Result<(), ProviderError> {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let objects = page
        .into_iter()
        .map(|v| {
            ObjectIdentifier::builder()
                .key(v.key)
                .set_version_id(v.id)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(ProviderError::failed(format!("a version of {name}")))?;
    let delete = Delete::builder()
        .set_objects(Some(objects))
        .quiet(true)
        .build()
        .map_err(ProviderError::failed(format!("a delete of {name}")))?;
    let out = client
        .delete_objects()
        .bucket(name)
        .delete(delete)
        .send()
        .await
        .map_err(|e| crate::clients::s3::client::error("DeleteObjects", name, e))?;
    if let Some(e) = out.errors().first() {
        return Err(ProviderError::Service {
            code: e.code().map(str::to_string),
            message: format!(
                "DeleteObjects on {name}: {} of the versions were not deleted, {} first: {}",
                out.errors().len(),
                e.key().unwrap_or_default(),
                e.message().unwrap_or_default()
            ),
        });
    }
    Ok(())
}

//! The offboarding's export of a bucket: every current object copied into the export.

use async_trait::async_trait;

use crate::model::resource::{Key, Kind};
use crate::targets::provider::{Export, ExportRequest, ProviderError};

use super::{settings, S3Buckets};

impl S3Buckets {
    /// Reads and copies every current object of `name` into the export.
    pub(super) async fn export_objects(
        &self,
        client: &aws_sdk_s3::Client,
        name: &str,
        req: &ExportRequest<'_>,
    ) -> Result<(), ProviderError> {
        // Current versions only, a page at a time, each object streamed to its file.
        let mut pages = client
            .list_objects_v2()
            .bucket(name)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| crate::clients::s3::client::error("ListObjectsV2", name, e))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let out = client
                    .get_object()
                    .bucket(name)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| crate::clients::s3::client::error("GetObject", name, e))?;
                let mut body = out.body;
                let mut file = req
                    .sink
                    .file(&crate::export::sink::object_path(key))
                    .await?;
                while let Some(chunk) =
                    body.try_next()
                        .await
                        .map_err(ProviderError::failed(format!(
                            "read {key} of the bucket {name}"
                        )))?
                {
                    file.write(&chunk).await?;
                }
                req.sink.finish_object(key, file).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Export for S3Buckets {
    async fn export(&self, req: &ExportRequest<'_>) -> Result<(), ProviderError> {
        let Some(bucket) = req.recorded.get(&Key::new(Kind::BUCKET)) else {
            return Ok(());
        };
        let name = bucket.str("name");
        let client = self.client_for(bucket).await?;
        if !self.binds_us(bucket) {
            return self.export_objects(&client, name, req).await;
        }
        // Revoked from everyone, this tool included: the deny is lifted for the length of
        // the export and put back whatever happens. A run killed in between leaves it
        // lifted, which the next plan shows as drift (`access`) and repairs before it
        // exports again. Naming the application in app_principal avoids the window.
        settings::write_access(&client, name, crate::targets::buckets::ACCESS_OPEN, "*").await?;
        let exported = self.export_objects(&client, name, req).await;
        settings::write_access(&client, name, crate::targets::buckets::ACCESS_DENIED, "*").await?;
        exported
    }
}

//! The S3 target: a bucket per tenant on any S3-compatible store (AWS, MinIO, Ceph, R2),
//! through aws-sdk-s3.
//!
//! Refresh lists the buckets the credentials own (one call per 1,000 buckets) and reads
//! the six settings of each tenant's bucket that exists, many buckets at once. A bucket
//! that is not in the list is either missing or someone else's; creating it tells which.

mod apply;
mod export;
mod holdings;
mod purge;
mod refresh;
mod settings;
mod smoke;
mod versions;

use std::sync::Arc;

use async_trait::async_trait;

pub use crate::clients::s3::client::S3Store;

use crate::model::attrs::Attrs;
use crate::model::change::ResourceChange;
use crate::model::resource::Kind;
use crate::targets::provider::{LiveFleet, Provider, ProviderError, RefreshTarget, StepContext};

pub struct S3Buckets {
    store: Arc<S3Store>,
}
impl S3Buckets {
    pub fn new(store: Arc<S3Store>) -> S3Buckets {
        S3Buckets { store }
    }

    /// The client for a recorded bucket: of its region, with tenant regions.
    async fn client_for(&self, bucket: &Attrs) -> Result<aws_sdk_s3::Client, ProviderError> {
        self.store
            .client(if self.store.config().tenant_regions {
                bucket.str("location")
            } else {
                ""
            })
            .await
    }

    /// Whether the bucket's access is revoked from everyone (`app_principal = "*"`): an
    /// explicit deny binds administrators too, so this tool can neither read the objects to
    /// export them nor delete them while it stands.
    fn binds_us(&self, bucket: &Attrs) -> bool {
        bucket.str("access") == crate::targets::buckets::ACCESS_DENIED
            && self.store.config().app_principal == "*"
    }
}

#[async_trait]
impl Provider for S3Buckets {
    fn name(&self) -> &'static str {
        "s3"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::BUCKET]
    }

    fn forces_replace(&self, _kind: Kind, field: &str) -> bool {
        crate::targets::buckets::forces_replace(field)
    }

    fn marks_after_create(&self, _change: &ResourceChange) -> bool {
        // CreateBucket, then PutBucketTagging with the state tag.
        true
    }
    async fn refresh(
        &self,
        targets: &[RefreshTarget],
        live: &mut LiveFleet,
    ) -> Result<(), ProviderError> {
        self.refresh_fleet(targets, live).await
    }

    async fn apply(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        self.apply_change(ctx, change).await
    }

    crate::targets::provider::capabilities!(Export, Purge, Smoke);
}

//! A tenant's bucket made as its plan says: created where its region says, found ours or
//! refused, then each setting written in order, public access closed first.

use std::time::Duration;

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};

use crate::model::attrs::Attrs;
use crate::model::change::{Action, ResourceChange, MARK_FIELD};
use crate::targets::provider::{check_ours, desired_of, Owner, ProviderError, StepContext};

use super::{settings, S3Buckets};

impl S3Buckets {
    /// The region a new bucket goes to: its tenant's, or without tenant regions the
    /// client's own.
    pub(super) fn creation_region(&self, client: &aws_sdk_s3::Client, region: &str) -> String {
        if self.store.config().tenant_regions {
            region.to_string()
        } else {
            client
                .config()
                .region()
                .map(|r| r.to_string())
                .unwrap_or_default()
        }
    }

    /// Whether CreateBucket's success there proves the bucket new: in us-east-1 S3 answers
    /// 200 for a bucket the account already has.
    pub(super) fn creation_proves_new(region: &str) -> bool {
        region != "us-east-1" && !region.is_empty()
    }

    /// Creates the bucket, or finds it already ours. Returns whether it is new.
    pub(super) async fn create(
        &self,
        client: &aws_sdk_s3::Client,
        name: &str,
        region: &str,
    ) -> Result<bool, ProviderError> {
        let mut request = client.create_bucket().bucket(name);
        let region = self.creation_region(client, region);
        // us-east-1 is the one region asked for by giving none; `auto` (R2) takes none.
        if !region.is_empty() && region != "us-east-1" && region != "auto" {
            request = request.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region.as_str()))
                    .build(),
            );
        }
        // In us-east-1 a success does not prove the bucket new: it is then treated as one
        // that may hold settings.
        let proves_new = S3Buckets::creation_proves_new(&region);
        // Tried here rather than by the SDK, which would hide what an earlier attempt did: one
        // that timed out may have made the bucket, and then the next one's
        // BucketAlreadyOwnedByYou is our own bucket, not one made by someone else (the plan
        // found none).
        let mut maybe_made = false;
        let mut pause = std::time::Duration::from_millis(100);
        for attempt in 1..=crate::clients::s3::client::MAX_ATTEMPTS {
            let sent = request
                .clone()
                .customize()
                .config_override(
                    aws_sdk_s3::config::Builder::default()
                        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()),
                )
                .send()
                .await;
            let e = match sent {
                Ok(_) => return Ok(proves_new),
                Err(e) => e,
            };
            let code = crate::clients::s3::client::code(&e);
            match code.as_deref() {
                Some("BucketAlreadyOwnedByYou") => return Ok(maybe_made && proves_new),
                Some("BucketAlreadyExists") => {
                    return Err(ProviderError::Refused(format!(
                        "the bucket {name} exists and belongs to another account\n  hint: bucket names are global; change bucket_prefix or bucket_name in the s3 block of tenant-reconcile.hcl"
                    )))
                }
                _ => {}
            }
            let transient = match &e {
                SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
                    maybe_made = true;
                    true
                }
                SdkError::DispatchFailure(_) => true,
                _ => matches!(
                    code.as_deref(),
                    Some("SlowDown" | "InternalError" | "ServiceUnavailable" | "500" | "503")
                ),
            };
            if !transient || attempt == crate::clients::s3::client::MAX_ATTEMPTS {
                return Err(crate::clients::s3::client::error("CreateBucket", name, e));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_secs(5));
        }
        unreachable!("the last attempt returns")
    }

    /// Writes one setting, trying again while a new bucket is not yet visible.
    pub(super) async fn write(
        &self,
        to: &settings::Target<'_>,
        field: &str,
        attrs: &Attrs,
    ) -> Result<(), ProviderError> {
        let name = to.bucket;
        let mut delay = Duration::from_millis(100);
        for attempt in 1.. {
            match settings::write(to, field, attrs).await {
                Err(e)
                    if e.service_code() == Some("NoSuchBucket")
                        && attempt < NEW_BUCKET_ATTEMPTS =>
                {
                    tracing::debug!(bucket = name, field, attempt, "bucket not visible yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(3));
                }
                other => return other,
            }
        }
        unreachable!("the loop returns on its last attempt")
    }

    pub(super) async fn apply_change(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        let desired = desired_of(change)?;
        let attrs = &desired.attrs;
        let name = attrs.str("name");
        let region = attrs.str("location");
        let client = self
            .store
            .client(if self.store.config().tenant_regions {
                region
            } else {
                ""
            })
            .await?;
        let mut new = false;
        let fields: Vec<&str> = match change.action {
            Action::Create | Action::Replace => {
                // A bucket of this account made since the plan is not taken over. Where
                // CreateBucket's success proves nothing (us-east-1) it is looked for first;
                // elsewhere CreateBucket says so (BucketAlreadyOwnedByYou).
                let resource = format!("the bucket {name}");
                let proves_new =
                    S3Buckets::creation_proves_new(&self.creation_region(&client, region));
                if !proves_new {
                    if let Some(owner) = settings::existing_owner(&client, name).await? {
                        check_ours(ctx, change, &resource, &owner)?;
                    }
                }
                new = self.create(&client, name, region).await?;
                if proves_new && !new {
                    let owner = settings::existing_owner(&client, name)
                        .await?
                        .unwrap_or(Owner::Unmarked);
                    check_ours(ctx, change, &resource, &owner)?;
                }
                FIELDS
                    .iter()
                    .copied()
                    .filter(|f| !(new && settings::default_of_new_bucket(f, attrs)))
                    .collect()
            }
            _ => FIELDS
                .iter()
                .copied()
                .filter(|f| {
                    change.fields().iter().any(|c| c.field == *f)
                        // The mark is a tag: an import or a mark to put on writes the tags.
                        || (*f == "tags"
                            && (change.action == Action::Import
                                || change.fields().iter().any(|c| c.field == MARK_FIELD)))
                })
                .collect(),
        };
        let mark = ctx.mark.text();
        let to = settings::Target {
            client: &client,
            bucket: name,
            app_principal: &self.store.config().app_principal,
            new,
            mark: &mark,
        };
        for field in fields {
            self.write(&to, field, attrs).await?;
        }
        Ok(Some(attrs.clone()))
    }
}

/// The order settings are written in: public access is closed before anything else.
pub(super) const FIELDS: &[&str] = &[
    "public_access",
    "encryption",
    "tags",
    "versioning",
    "lifecycle",
    "access",
];

/// How often a call right after CreateBucket is tried while the new bucket is not yet
/// visible everywhere (S3 may answer NoSuchBucket for a moment).
pub(super) const NEW_BUCKET_ATTEMPTS: u32 = 8;

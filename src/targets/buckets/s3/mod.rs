//! The S3 target: a bucket per tenant on any S3-compatible store (AWS, MinIO, Ceph, R2),
//! through aws-sdk-s3.
//!
//! Refresh lists the buckets the credentials own (one call per 1,000 buckets) and reads
//! the six settings of each tenant's bucket that exists, many buckets at once. A bucket
//! that is not in the list is either missing or someone else's; creating it tells which.

mod settings;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::json;

pub use crate::clients::s3::client::S3Store;

use crate::model::attrs::Attrs;
use crate::model::change::{Action, ResourceChange, MARK_FIELD};
use crate::model::resource::{Key, Kind};
use crate::slug::Slug;
use crate::targets::provider::{
    check_ours, desired_of, Export, ExportRequest, LiveFleet, Owner, Provider, ProviderError,
    Purge, RefreshTarget, Smoke, StepContext,
};

/// The order settings are written in: public access is closed before anything else.
const FIELDS: &[&str] = &[
    "public_access",
    "encryption",
    "tags",
    "versioning",
    "lifecycle",
    "access",
];

/// How often a call right after CreateBucket is tried while the new bucket is not yet
/// visible everywhere (S3 may answer NoSuchBucket for a moment).
const NEW_BUCKET_ATTEMPTS: u32 = 8;

pub struct S3Buckets {
    store: Arc<S3Store>,
}

impl S3Buckets {
    pub fn new(store: Arc<S3Store>) -> S3Buckets {
        S3Buckets { store }
    }

    /// Every bucket the credentials own, with its region when the store says.
    async fn list_owned(&self) -> Result<HashMap<String, Option<String>>, ProviderError> {
        let client = self.store.client("").await?;
        let mut owned = HashMap::new();
        let mut token: Option<String> = None;
        loop {
            let out = client
                .list_buckets()
                .max_buckets(1000)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| crate::clients::s3::client::error("ListBuckets", "the account", e))?;
            for b in out.buckets() {
                if let Some(name) = b.name() {
                    owned.insert(name.to_string(), b.bucket_region().map(str::to_string));
                }
            }
            match out.continuation_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(owned),
            }
        }
    }

    /// Reads one existing bucket: its region (from the listing, or asked), then settings.
    async fn read_bucket(
        &self,
        name: String,
        listed_region: Option<String>,
    ) -> Result<Option<(Attrs, Owner)>, ProviderError> {
        let tenant_regions = self.store.config().tenant_regions;
        let region = match listed_region {
            Some(r) => r,
            None if tenant_regions => {
                let out = self
                    .store
                    .client("")
                    .await?
                    .get_bucket_location()
                    .bucket(&name)
                    .send()
                    .await
                    .map_err(|e| {
                        crate::clients::s3::client::error("GetBucketLocation", &name, e)
                    })?;
                // S3 reports us-east-1 as no constraint at all.
                match out.location_constraint().map(|c| c.as_str()) {
                    None | Some("") => "us-east-1".to_string(),
                    // Buckets made long ago in Ireland answer with the old name.
                    Some("EU") => "eu-west-1".to_string(),
                    Some(r) => r.to_string(),
                }
            }
            None => String::new(),
        };
        let client = self
            .store
            .client(if tenant_regions { &region } else { "" })
            .await?;
        let Some((mut attrs, owner)) =
            settings::read(&client, &name, &self.store.config().app_principal).await?
        else {
            return Ok(None);
        };
        attrs.insert("name", json!(name));
        if tenant_regions {
            attrs.insert("location", json!(region));
        }
        Ok(Some((attrs, owner)))
    }

    /// The region a new bucket goes to: its tenant's, or without tenant regions the
    /// client's own.
    fn creation_region(&self, client: &aws_sdk_s3::Client, region: &str) -> String {
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
    /// Puts, reads back and deletes (that very version, so a versioned bucket keeps
    /// nothing of it) a probe object.
    async fn probe(&self, bucket: &Attrs) -> Result<String, String> {
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

    fn creation_proves_new(region: &str) -> bool {
        region != "us-east-1" && !region.is_empty()
    }

    /// Creates the bucket, or finds it already ours. Returns whether it is new.
    async fn create(
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

    /// Reads and copies every current object of `name` into the export.
    async fn export_objects(
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

    /// What a bucket about to be purged holds: its current objects and their bytes, and
    /// the older versions and delete markers a versioned bucket keeps besides.
    async fn holdings(&self, bucket: &Attrs) -> Result<String, ProviderError> {
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

    /// Writes one setting, trying again while a new bucket is not yet visible.
    async fn write(
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
}

/// Every version and delete marker in a bucket, a page (up to 1,000) at a time: a
/// versioned bucket is emptied only when all of them are gone, and an unversioned one lists
/// its objects here too (as version `null`).
struct Versions<'a> {
    client: &'a aws_sdk_s3::Client,
    bucket: &'a str,
    /// Where the next page starts; `None` once the last page was read.
    next: Option<(Option<String>, Option<String>)>,
}

impl<'a> Versions<'a> {
    fn new(client: &'a aws_sdk_s3::Client, bucket: &'a str) -> Versions<'a> {
        Versions {
            client,
            bucket,
            next: Some((None, None)),
        }
    }

    async fn page(&mut self) -> Result<Option<Vec<Version>>, ProviderError> {
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
struct Version {
    key: String,
    id: Option<String>,
    size: u64,
    latest: bool,
    marker: bool,
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

    fn marks_after_create(&self, _kind: Kind) -> bool {
        // CreateBucket, then PutBucketTagging with the state tag.
        true
    }

    async fn refresh(
        &self,
        targets: &[RefreshTarget],
        live: &mut LiveFleet,
    ) -> Result<(), ProviderError> {
        let before = self.store.calls();
        let owned = self.list_owned().await?;
        let found: Vec<(Slug, String, Option<String>)> = targets
            .iter()
            .filter_map(|t| {
                let name = t.buckets.iter().find(|n| owned.contains_key(*n))?;
                Some((t.slug.clone(), name.clone(), owned[name].clone()))
            })
            .collect();
        let read: Vec<(Slug, Option<(Attrs, Owner)>)> = stream::iter(found)
            .map(|(slug, name, region)| async move {
                Ok::<_, ProviderError>((slug, self.read_bucket(name, region).await?))
            })
            .buffer_unordered(self.store.config().concurrency)
            .try_collect()
            .await?;
        for (slug, found) in read {
            if let Some((attrs, owner)) = found {
                let purging = targets.iter().any(|t| t.slug == slug && t.purge);
                if purging {
                    let what = match self.holdings(&attrs).await {
                        Ok(what) => what,
                        Err(e) => format!("not counted: {}", crate::causes::chain(&e)),
                    };
                    live.holds(&slug, Kind::BUCKET, what);
                }
                live.insert_owned(&slug, Kind::BUCKET, attrs, owner);
            }
        }
        live.calls.push((self.name(), self.store.calls() - before));
        Ok(())
    }

    async fn apply(
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
                    change.fields.iter().any(|c| c.field == *f)
                        // The mark is a tag: an import or a mark to put on writes the tags.
                        || (*f == "tags"
                            && (change.action == Action::Import
                                || change.fields.iter().any(|c| c.field == MARK_FIELD)))
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

    crate::targets::provider::capabilities!(Export, Purge, Smoke);
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

/// Deletes one page of versions and delete markers (at most 1,000, DeleteObjects' limit).
async fn delete_versions(
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

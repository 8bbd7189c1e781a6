//! The state's objects in its bucket, and the conditional writes every one of them goes
//! through: a write that must find no object (`If-None-Match: *`) or the version this run
//! last saw (`If-Match: <etag>`) is refused by the store when another run got there first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_sdk_s3::Client;

use crate::clients::error::ProviderError;
use crate::clients::s3::client::{code, error, S3Store};
use crate::state::StateError;

/// What a conditional write asks of the object it replaces.
#[derive(Debug, Clone, Copy)]
pub enum Condition<'a> {
    /// Whatever is there.
    Any,
    /// No object: it is made, never replaced.
    Absent,
    /// The version with this ETag.
    Matches(&'a str),
}

/// How a write went.
#[derive(Debug)]
pub enum Put {
    /// Written; the object's new ETag.
    Done(String),
    /// Its condition did not hold: another writer got there first.
    Refused,
}

/// An object's body, its ETag, and when it was last written.
pub use crate::clients::s3::client::Fetched as Body;

/// A tenant's record as this run last read or wrote it: its generation and the object's ETag,
/// which its next write must match.
#[derive(Debug, Clone)]
pub struct Seen {
    pub generation: u64,
    pub etag: String,
}

/// Where the state's objects are, and what this process saw of its records.
#[derive(Clone)]
pub struct Objects {
    pub store: Arc<S3Store>,
    pub bucket: String,
    pub key: String,
    pub seen: Arc<Mutex<HashMap<String, Seen>>>,
}

/// A failed request as the state's error, saying what was being done; a missing bucket
/// with what to do about it.
pub fn store_error(context: &str) -> impl FnOnce(ProviderError) -> StateError + '_ {
    move |source| {
        let source = match source {
            ProviderError::Service { code, message } if code.as_deref() == Some("NoSuchBucket") => {
                ProviderError::Service {
                    code,
                    message: format!(
                        "{message}\n  hint: the state bucket must exist before the first run: create it (with versioning on, to keep earlier states)"
                    ),
                }
            }
            other => other,
        };
        StateError::Store {
            context: context.to_string(),
            source,
        }
    }
}

impl Objects {
    pub fn new(store: Arc<S3Store>, bucket: String, key: String) -> Objects {
        Objects {
            store,
            bucket,
            key,
            seen: Default::default(),
        }
    }

    pub fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// The lock object.
    pub fn lock_key(&self) -> String {
        format!("{}.lock", self.key)
    }

    /// Where the one-document format kept a tenant's checkpoint until the next full write.
    pub fn checkpoint_prefix(&self) -> String {
        format!("{}.checkpoints/", self.key)
    }

    /// Where the records are, one object per tenant.
    pub fn records_prefix(&self) -> String {
        format!("{}.tenants/", self.key)
    }

    pub fn record_key(&self, slug: &str) -> String {
        format!("{}{slug}", self.records_prefix())
    }

    /// The one-document state a conversion made into records, kept as it was.
    pub fn backup_key(&self) -> String {
        format!("{}.v1-backup", self.key)
    }

    pub async fn client(&self, context: &str) -> Result<Client, StateError> {
        self.store.client("").await.map_err(store_error(context))
    }

    /// An object's body and ETag, or `None` when there is no such object.
    pub async fn get(&self, client: &Client, key: &str) -> Result<Option<Body>, ProviderError> {
        crate::clients::s3::client::get(client, &self.bucket, key).await
    }

    /// Writes `body` at `key` where `condition` holds.
    pub async fn put(
        &self,
        client: &Client,
        key: &str,
        body: Vec<u8>,
        condition: Condition<'_>,
    ) -> Result<Put, ProviderError> {
        let request = client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body));
        let request = match condition {
            Condition::Any => request,
            Condition::Absent => request.if_none_match("*"),
            Condition::Matches(etag) => request.if_match(etag),
        };
        match request.send().await {
            Ok(out) => Ok(Put::Done(out.e_tag().unwrap_or_default().to_string())),
            // 412: the condition failed; 409: another writer raced this one for the object
            // just now; 404: the object to match is gone.
            Err(e)
                if matches!(
                    code(&e).as_deref(),
                    Some(
                        "PreconditionFailed"
                            | "412"
                            | "ConditionalRequestConflict"
                            | "409"
                            | "NoSuchKey"
                            | "404"
                    )
                ) && !matches!(condition, Condition::Any) =>
            {
                Ok(Put::Refused)
            }
            Err(e) => Err(error("PutObject", &format!("{}/{key}", self.bucket), e)),
        }
    }

    /// The keys under `prefix`.
    pub async fn keys(&self, client: &Client, prefix: &str) -> Result<Vec<String>, ProviderError> {
        crate::clients::s3::client::keys(client, &self.bucket, prefix).await
    }

    /// Whether any object's key starts with `prefix`: one request, whatever is there.
    pub async fn any(&self, client: &Client, prefix: &str) -> Result<bool, ProviderError> {
        let out = client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| error("ListObjectsV2", &self.bucket, e))?;
        Ok(!out.contents().is_empty())
    }

    pub async fn delete(&self, client: &Client, key: &str) -> Result<(), ProviderError> {
        client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(drop)
            .map_err(|e| error("DeleteObject", &format!("{}/{key}", self.bucket), e))
    }

    /// Removes `keys`, a thousand to a request.
    pub async fn delete_all(&self, client: &Client, keys: &[String]) -> Result<(), ProviderError> {
        for batch in keys.chunks(1000) {
            let objects: Vec<ObjectIdentifier> = batch
                .iter()
                .filter_map(|k| ObjectIdentifier::builder().key(k).build().ok())
                .collect();
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(ProviderError::failed("build the request"))?;
            client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| error("DeleteObjects", &self.bucket, e))?;
        }
        Ok(())
    }

    /// What this run last saw of `slug`'s record.
    pub fn seen(&self, slug: &str) -> Option<Seen> {
        self.seen.lock().expect("never poisoned").get(slug).cloned()
    }

    pub fn saw(&self, slug: &str, seen: Option<Seen>) {
        let mut map = self.seen.lock().expect("never poisoned");
        match seen {
            Some(s) => map.insert(slug.to_string(), s),
            None => map.remove(slug),
        };
    }
}

//! The state in an S3 bucket: the state object, a lock object beside it, and one
//! checkpoint object per tenant changed since the last full write.
//!
//! ```text
//! <key>                    the state, written whole
//! <key>.lock               the holder's details; created with If-None-Match: *, so of two
//!                          runs racing for it exactly one gets it
//! <key>.checkpoints/<slug> a tenant's state as of its last step, until the next full write
//! ```
//!
//! Unlike a file lock or a database session, an object outlives a holder that was killed,
//! so a stale lock stays until `force-unlock ID` removes it; the ID is in every message
//! that names the holder. A holder checks the lock is still its own before each full write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::backend::{LockInfo, StateBackend, StateError, StateLock, Wait};
use super::{Checkpoint, State};
use crate::clients::error::ProviderError;
use crate::clients::s3::client::S3Store;
use crate::clients::s3::client::{code, error};

/// How often a running apply makes sure its lock is still its own.
const RECHECK_LOCK: Duration = Duration::from_secs(5);

/// Checkpoints read at once while loading.
const READ_CONCURRENCY: usize = 32;

/// What the lock object says.
enum Holder {
    Run(LockInfo),
    /// Not a lock this tool wrote (or a torn one): only a person can decide to remove it.
    Unreadable,
}

pub struct S3Backend {
    store: Arc<S3Store>,
    bucket: String,
    key: String,
}

fn store_error(context: &str) -> impl FnOnce(ProviderError) -> StateError + '_ {
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

impl S3Backend {
    pub fn new(store: Arc<S3Store>, bucket: String, key: String) -> S3Backend {
        S3Backend { store, bucket, key }
    }

    fn lock_key(&self) -> String {
        format!("{}.lock", self.key)
    }

    fn checkpoint_prefix(&self) -> String {
        format!("{}.checkpoints/", self.key)
    }

    async fn client(&self, context: &str) -> Result<Client, StateError> {
        self.store.client("").await.map_err(store_error(context))
    }

    /// An object's body, or `None` when there is no such object.
    async fn get(&self, client: &Client, key: &str) -> Result<Option<Vec<u8>>, ProviderError> {
        crate::clients::s3::client::get_bytes(client, &self.bucket, key).await
    }

    /// Who holds the lock now, if anyone.
    async fn holder(&self, client: &Client) -> Result<Option<Holder>, ProviderError> {
        Ok(self.get(client, &self.lock_key()).await?.map(|body| {
            match serde_json::from_slice(&body) {
                Ok(info) => Holder::Run(info),
                Err(_) => Holder::Unreadable,
            }
        }))
    }

    /// The state object's ETag, to write it back only if nobody else wrote it meanwhile.
    async fn state_etag(&self, client: &Client) -> Result<Option<String>, ProviderError> {
        match client
            .head_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await
        {
            Ok(out) => Ok(out.e_tag().map(str::to_string)),
            Err(e) if matches!(code(&e).as_deref(), Some("404" | "NotFound" | "NoSuchKey")) => {
                Ok(None)
            }
            Err(e) => Err(error(
                "HeadObject",
                &format!("{}/{}", self.bucket, self.key),
                e,
            )),
        }
    }

    async fn checkpoint_keys(&self, client: &Client) -> Result<Vec<String>, ProviderError> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.checkpoint_prefix())
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| error("ListObjectsV2", &self.bucket, e))?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => return Ok(keys),
            }
        }
    }
}

#[async_trait]
impl StateBackend for S3Backend {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    async fn load(&self) -> Result<State, StateError> {
        let client = self.client("read the state").await?;
        let body = self
            .get(&client, &self.key)
            .await
            .map_err(store_error("read the state"))?;
        let mut state = match body {
            Some(body) => State::decode(&body, || self.describe())?,
            None => State::empty(),
        };
        let keys = self
            .checkpoint_keys(&client)
            .await
            .map_err(store_error("list the state's checkpoints"))?;
        let entries: Vec<Option<Vec<u8>>> = stream::iter(keys)
            .map(|key| {
                let client = client.clone();
                async move { self.get(&client, &key).await }
            })
            .buffer_unordered(READ_CONCURRENCY)
            .try_collect()
            .await
            .map_err(store_error("read the state's checkpoints"))?;
        // One object per tenant holds its latest state, so their order does not matter.
        state.replay(
            entries
                .iter()
                .flatten()
                .filter_map(|e| serde_json::from_slice::<Checkpoint>(e).ok()),
        );
        Ok(state)
    }

    async fn lock(&self, info: LockInfo, wait: &Wait) -> Result<Box<dyn StateLock>, StateError> {
        let client = self.client("lock the state").await?;
        let body = serde_json::to_vec_pretty(&info).expect("lock info serializes");
        let started = Instant::now();
        loop {
            let put = client
                .put_object()
                .bucket(&self.bucket)
                .key(self.lock_key())
                .if_none_match("*")
                .body(ByteStream::from(body.clone()))
                .send()
                .await;
            match put {
                Ok(_) => break,
                // 412: someone holds it; 409: another writer raced us for it just now.
                Err(e)
                    if matches!(
                        code(&e).as_deref(),
                        Some("PreconditionFailed" | "412" | "ConditionalRequestConflict" | "409")
                    ) =>
                {
                    let holder = self
                        .holder(&client)
                        .await
                        .map_err(store_error("lock the state"))?;
                    // A retried request whose first attempt got through finds our own lock.
                    if matches!(&holder, Some(Holder::Run(h)) if h.id == info.id) {
                        break;
                    }
                    if started.elapsed() >= wait.timeout {
                        let holder = match holder {
                            Some(Holder::Run(h)) => format!(
                                "{}\n  hint: if that run is gone, release its lock with `tenant-reconcile force-unlock {}`",
                                h.describe(),
                                h.id
                            ),
                            _ => format!(
                                "something that left an unreadable lock object (s3://{}/{}): if no run is going, delete it by hand",
                                self.bucket,
                                self.lock_key()
                            ),
                        };
                        return Err(StateError::Locked { holder });
                    }
                    wait.poll().await?;
                }
                Err(e) => {
                    return Err(store_error("lock the state")(error(
                        "PutObject",
                        &format!("{}/{}", self.bucket, self.lock_key()),
                        e,
                    )))
                }
            }
        }
        let state_etag = match self.state_etag(&client).await {
            Ok(etag) => etag,
            Err(e) => {
                let _ = client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(self.lock_key())
                    .send()
                    .await;
                return Err(store_error("read the state")(e));
            }
        };
        Ok(Box::new(S3Lock {
            backend: S3Backend {
                store: self.store.clone(),
                bucket: self.bucket.clone(),
                key: self.key.clone(),
            },
            client,
            id: info.id,
            state_etag,
            checked: std::sync::Mutex::new(Instant::now()),
        }))
    }

    async fn force_unlock(&self, id: &str) -> Result<String, StateError> {
        let client = self.client("unlock the state").await?;
        let holder = match self
            .holder(&client)
            .await
            .map_err(store_error("read the lock"))?
        {
            None => {
                return Err(StateError::NotLocked {
                    what: self.describe(),
                })
            }
            Some(Holder::Unreadable) => {
                return Err(StateError::CannotForceUnlock(format!(
                    "the lock object s3://{}/{} is not one tenant-reconcile wrote: if no run is going, delete it by hand",
                    self.bucket,
                    self.lock_key()
                )))
            }
            Some(Holder::Run(h)) => h,
        };
        if holder.id != id {
            return Err(StateError::WrongLockId {
                given: id.to_string(),
                holder: holder.describe(),
            });
        }
        client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.lock_key())
            .send()
            .await
            .map_err(|e| error("DeleteObject", &self.lock_key(), e))
            .map_err(store_error("unlock the state"))?;
        Ok(holder.describe())
    }
}

struct S3Lock {
    backend: S3Backend,
    client: Client,
    id: String,
    /// The state object as this run last saw it (None: there was none). The state is
    /// written only over that version, so a run whose lock was taken away and given to
    /// another can never overwrite what the other wrote.
    state_etag: Option<String>,
    /// When the lock was last seen to be ours.
    checked: std::sync::Mutex<Instant>,
}

impl S3Lock {
    async fn put(&self, key: &str, body: Vec<u8>, context: &str) -> Result<(), StateError> {
        self.client
            .put_object()
            .bucket(&self.backend.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map(drop)
            .map_err(|e| error("PutObject", &format!("{}/{key}", self.backend.bucket), e))
            .map_err(store_error(context))
    }

    /// Refuses to write once the lock was taken away (`force-unlock` by someone who
    /// thought this run was gone), so two runs never both write the state.
    async fn still_held(&self) -> Result<(), StateError> {
        let holder = self
            .backend
            .holder(&self.client)
            .await
            .map_err(store_error("read the lock"))?;
        match holder {
            Some(Holder::Run(h)) if h.id == self.id => Ok(()),
            Some(Holder::Run(h)) => Err(StateError::LockLost {
                holder: h.describe(),
            }),
            Some(Holder::Unreadable) => Err(StateError::LockLost {
                holder: "an unreadable lock object".into(),
            }),
            None => Err(StateError::LockLost {
                holder: "nobody".into(),
            }),
        }
    }
}

#[async_trait]
impl StateLock for S3Lock {
    async fn checkpoint(&self, entry: &Checkpoint) -> Result<(), StateError> {
        // A lock object can be removed under a running apply (`force-unlock` by someone
        // who took it for dead): look now and then, and stop recording once it is gone.
        let due = {
            let mut last = self.checked.lock().expect("never poisoned");
            let due = last.elapsed() >= RECHECK_LOCK;
            if due {
                *last = Instant::now();
            }
            due
        };
        if due {
            self.still_held().await?;
        }
        let key = format!("{}{}", self.backend.checkpoint_prefix(), entry.slug);
        let entry = serde_json::to_vec(entry).expect("state serializes");
        self.put(&key, entry, "write a checkpoint").await
    }

    async fn persist(&mut self, state: &mut State) -> Result<(), StateError> {
        self.still_held().await?;
        let body = serde_json::to_vec_pretty(state).expect("state serializes");
        let request = self
            .client
            .put_object()
            .bucket(&self.backend.bucket)
            .key(&self.backend.key)
            .body(ByteStream::from(body));
        let request = match &self.state_etag {
            Some(etag) => request.if_match(etag),
            None => request.if_none_match("*"),
        };
        match request.send().await {
            Ok(out) => self.state_etag = out.e_tag().map(str::to_string),
            Err(e) if matches!(code(&e).as_deref(), Some("PreconditionFailed" | "412")) => {
                return Err(StateError::LockLost {
                    holder: "another run, which wrote the state since this one took the lock"
                        .into(),
                })
            }
            Err(e) => {
                return Err(store_error("write the state")(error(
                    "PutObject",
                    &self.backend.describe(),
                    e,
                )))
            }
        }
        // The snapshot now holds what the checkpoints said; left-overs from a failed
        // delete are ignored on load (they name an older snapshot).
        let keys = self
            .backend
            .checkpoint_keys(&self.client)
            .await
            .map_err(store_error("list the state's checkpoints"))?;
        for batch in keys.chunks(1000) {
            let objects: Vec<ObjectIdentifier> = batch
                .iter()
                .filter_map(|k| ObjectIdentifier::builder().key(k).build().ok())
                .collect();
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| StateError::Store {
                    context: "clear the checkpoints".into(),
                    source: ProviderError::failed("build the request")(e),
                })?;
            self.client
                .delete_objects()
                .bucket(&self.backend.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| error("DeleteObjects", &self.backend.bucket, e))
                .map_err(store_error("clear the checkpoints"))?;
        }
        Ok(())
    }

    async fn unlock(self: Box<Self>) -> Result<(), StateError> {
        // Only our own lock is removed: after a force-unlock it may be someone else's.
        match self.still_held().await {
            Ok(()) => {}
            Err(StateError::LockLost { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
        self.client
            .delete_object()
            .bucket(&self.backend.bucket)
            .key(self.backend.lock_key())
            .send()
            .await
            .map(drop)
            .map_err(|e| error("DeleteObject", &self.backend.lock_key(), e))
            .map_err(store_error("unlock the state"))
    }
}

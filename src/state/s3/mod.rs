//! The state in an S3 bucket: a header object, an object per tenant, and a lock object.
//!
//! ```text
//! <key>                    the header: format version, lineage, master key id, migrations'
//!                          checksums, released tenants, how many tenants are live
//! <key>.tenants/<slug>     a tenant's record and its generation (`records.rs`)
//! <key>.lock               the holder's details (`lock_object.rs`)
//! <key>.v1-backup          the one-document state a conversion started from
//! ```
//!
//! Every write is conditional (`objects.rs`): a step of a tenant writes its record alone,
//! and only over the version this run last saw, so a tenant's change costs one object
//! whatever the fleet, and a plan of some tenants reads the header and their records only.
//!
//! Unlike a file lock or a database session, an object outlives a holder that was killed: its
//! holder renews it, and a lock left unrenewed for two leases is taken over by the next run
//! that waits for it (`lock_object.rs`), or removed at once by `force-unlock ID`; the ID is in
//! every message that names the holder. A holder checks the lock is still its own now and
//! then while it writes, and before each whole write.

mod held;
mod lock_object;
mod objects;
mod records;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use self::held::S3Lock;
use self::objects::Objects;
use self::records::Stored;
use super::backend::{LockInfo, StateBackend, StateError, StateLock, Wait};
use super::State;
use crate::clients::s3::client::S3Store;

pub struct S3Backend {
    objects: Objects,
    /// How long the lock stands unrenewed (`state.lock_lease`).
    lease: Duration,
}

impl S3Backend {
    pub fn new(store: Arc<S3Store>, bucket: String, key: String, lease: Duration) -> S3Backend {
        S3Backend {
            objects: Objects::new(store, bucket, key),
            lease,
        }
    }

    /// The state, or with `slugs` the records of those tenants only (beside the header).
    async fn load_some(&self, slugs: Option<&BTreeSet<String>>) -> Result<State, StateError> {
        let objects = &self.objects;
        let client = objects.client("read the state").await?;
        let mut state = match records::stored(objects, &client).await? {
            Stored::Nothing => State::empty(),
            Stored::Document(body) => records::document(objects, &client, &body.bytes).await?,
            Stored::Records {
                header, generation, ..
            } => records::read(objects, &client, header, generation, slugs).await?,
        };
        if let (Some(slugs), None) = (slugs, &state.scope) {
            state.narrow_to(slugs);
        }
        Ok(state)
    }
}

#[async_trait]
impl StateBackend for S3Backend {
    fn describe(&self) -> String {
        self.objects.describe()
    }

    async fn load(&self) -> Result<State, StateError> {
        self.load_some(None).await
    }

    async fn load_tenants(&self, slugs: &BTreeSet<String>) -> Result<State, StateError> {
        self.load_some(Some(slugs)).await
    }

    async fn lock(&self, info: LockInfo, wait: &Wait) -> Result<Box<dyn StateLock>, StateError> {
        let objects = &self.objects;
        let client = objects.client("lock the state").await?;
        let body = lock_object::body(&info, self.lease);
        let lock_etag = lock_object::take(objects, &client, &info, &body, wait).await?;
        // A state in the one-document format is converted now, under the lock.
        let header_etag = async {
            Ok(match records::stored(objects, &client).await? {
                Stored::Nothing => None,
                Stored::Document(body) => Some(records::convert(objects, &client, body).await?),
                Stored::Records { etag, .. } => Some(etag),
            })
        }
        .await;
        let header_etag = match header_etag {
            Ok(etag) => etag,
            Err(e) => {
                let _ = lock_object::release(objects, &client, &info.id).await;
                return Err(e);
            }
        };
        let (renewed, renewal) = S3Lock::renewing(objects, &client, body, lock_etag, self.lease);
        Ok(Box::new(S3Lock {
            objects: objects.clone(),
            client,
            id: info.id,
            lease: self.lease,
            renewed,
            renewal,
            header_etag,
            checked: std::sync::Mutex::new(Instant::now()),
        }))
    }

    async fn force_unlock(&self, id: &str) -> Result<String, StateError> {
        lock_object::force_unlock(&self.objects, id).await
    }
}

//! The lock of a state in S3, held: renewed in the background, each checkpoint writing its
//! tenant's record alone, and a whole write the records not written yet and the header,
//! each conditionally.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::lock_object;
use super::objects::{store_error, Condition, Objects};
use super::records::{self, CONCURRENCY};
use crate::state::backend::{StateError, StateLock};
use crate::state::whole_write::WholeWrite;
use crate::state::{Checkpoint, State};

/// How often a running apply makes sure its lock is still its own.
const RECHECK_LOCK: Duration = Duration::from_secs(5);

pub struct S3Lock {
    pub objects: Objects,
    pub client: Client,
    pub id: String,
    pub lease: Duration,
    /// How the lock's renewal stands, and the task renewing it.
    pub renewed: Arc<Mutex<Renewed>>,
    pub renewal: tokio::task::JoinHandle<()>,
    /// The header as this run last saw it (None: there was none). The header is written
    /// only over that version, so a run whose lock was taken away and given to another can
    /// never overwrite what the other wrote.
    pub header_etag: Option<String>,
    /// When the lock was last seen to be ours.
    pub checked: Mutex<Instant>,
}

/// A lock dropped without being let go of (its run stopped on an error) stops being renewed:
/// its lease then runs out, and another run may take it over.
impl Drop for S3Lock {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// When the lock was last renewed, and whether it was found to be another's.
pub struct Renewed {
    at: Instant,
    lost: bool,
}

impl S3Lock {
    /// Renews the lock (its object `body`, at `etag` now) three times a lease until the lock
    /// is let go of, or found to be another's.
    pub fn renewing(
        objects: &Objects,
        client: &Client,
        body: Vec<u8>,
        etag: String,
        lease: Duration,
    ) -> (Arc<Mutex<Renewed>>, tokio::task::JoinHandle<()>) {
        let renewed = Arc::new(Mutex::new(Renewed {
            at: Instant::now(),
            lost: false,
        }));
        let (objects, client, status) = (objects.clone(), client.clone(), renewed.clone());
        let task = tokio::spawn(async move {
            let mut pause = lease / 3;
            loop {
                tokio::time::sleep(pause).await;
                match lock_object::renew(&objects, &client, &body, &etag).await {
                    Ok(true) => {
                        status.lock().expect("never poisoned").at = Instant::now();
                        pause = lease / 3;
                    }
                    Ok(false) => {
                        status.lock().expect("never poisoned").lost = true;
                        return;
                    }
                    // Tried again soon; the lease says how long that may go on.
                    Err(e) => {
                        tracing::debug!(
                            "renewing the state's lock failed: {}",
                            crate::causes::chain(&e)
                        );
                        pause = Duration::from_secs(1).min(lease / 3);
                    }
                }
            }
        });
        (renewed, task)
    }
}

#[async_trait]
impl StateLock for S3Lock {
    fn holds(&self) -> Result<(), StateError> {
        let renewed = self.renewed.lock().expect("never poisoned");
        if renewed.lost {
            return Err(StateError::LockLost {
                holder: "another run, or nobody (it was taken over or removed)".into(),
            });
        }
        // Stopped before another run may take it over (two leases unrenewed), whatever the
        // clocks: what this run writes after that is refused by its conditions anyway.
        if renewed.at.elapsed() > self.lease {
            return Err(StateError::LockLost {
                holder: format!(
                    "nobody yet: this run could not renew it for {}, and another run may take it over",
                    humantime::format_duration(self.lease)
                ),
            });
        }
        Ok(())
    }

    /// What it writes is each record and the header, whose count of live tenants it moves by
    /// what its own became.
    fn writes_some(&self) -> bool {
        true
    }

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
            lock_object::still_held(&self.objects, &self.client, &self.id).await?;
        }
        records::write_record(
            &self.objects,
            &self.client,
            &entry.slug,
            entry.expected,
            entry.generation,
            &entry.tenant,
        )
        .await
    }

    async fn persist(&mut self, state: &mut State) -> Result<(), StateError> {
        self.holds()?;
        lock_object::still_held(&self.objects, &self.client, &self.id).await?;
        let header = records::header_of(state);
        let write = WholeWrite::of(state, header);
        let written = write.written();
        let (objects, client) = (&self.objects, &self.client);
        // Removed a thousand to a request.
        let removed: Vec<String> = write
            .removed
            .iter()
            .map(|(slug, _)| objects.record_key(slug))
            .collect();
        objects
            .delete_all(client, &removed)
            .await
            .map_err(store_error("remove tenants' records"))?;
        for (slug, _) in &write.removed {
            objects.saw(slug, None);
        }
        // The futures are made before they are streamed: a stream that makes them from
        // borrowed items is not `Send` for every lifetime, as the lock's trait needs.
        let writes: Vec<_> = write
            .writes
            .iter()
            .map(|w| {
                records::write_record(objects, client, w.slug, w.expected, w.generation, w.tenant)
            })
            .collect();
        stream::iter(writes)
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        if let Some((header, _, generation)) = write.header {
            let condition = match &self.header_etag {
                Some(etag) => Condition::Matches(etag),
                None => Condition::Absent,
            };
            let etag = records::write_header(objects, client, header, generation, condition)
                .await?
                .ok_or_else(|| StateError::LockLost {
                    holder: "another run, which wrote the state since this one took the lock"
                        .into(),
                })?;
            self.header_etag = Some(etag);
        }
        written.done(state);
        Ok(())
    }

    async fn unlock(self: Box<Self>) -> Result<(), StateError> {
        self.renewal.abort();
        // Only our own lock is removed: after a force-unlock it may be someone else's.
        lock_object::release(&self.objects, &self.client, &self.id).await
    }
}

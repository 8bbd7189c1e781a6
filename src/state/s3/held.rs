//! The lock of a state in S3, held: each checkpoint writes its tenant's record alone, and a
//! whole write the records not written yet and the header, each conditionally.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::lock_object;
use super::objects::{Condition, Objects};
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
    /// The header as this run last saw it (None: there was none). The header is written
    /// only over that version, so a run whose lock was taken away and given to another can
    /// never overwrite what the other wrote.
    pub header_etag: Option<String>,
    /// When the lock was last seen to be ours.
    pub checked: Mutex<Instant>,
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
        lock_object::still_held(&self.objects, &self.client, &self.id).await?;
        let header = records::header_of(state);
        let write = WholeWrite::of(state, header);
        let written = write.written();
        let (objects, client) = (&self.objects, &self.client);
        // The futures are made before they are streamed: a stream that makes them from
        // borrowed items is not `Send` for every lifetime, as the lock's trait needs.
        let removals: Vec<_> = write
            .removed
            .iter()
            .map(|(slug, _)| records::remove_record(objects, client, slug))
            .collect();
        stream::iter(removals)
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
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
        // Only our own lock is removed: after a force-unlock it may be someone else's.
        lock_object::release(&self.objects, &self.client, &self.id).await
    }
}

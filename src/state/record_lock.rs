//! The lock of a state kept as records (`records.rs`), the local and Postgres backends'
//! alike: checkpoints of tenants applied at once written together, each record only at the
//! generation this run last saw, and whole writes in one transaction.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;

use super::backend::{LockInfo, StateError, StateLock, Wait};
use super::header::merge_header;
use super::leases::{self, Held};
use super::record_writer::RecordWriter;
use super::records::{self, parse_header, Records};
use super::whole_write::RecordWrite;
use super::{Checkpoint, State};
use crate::clients::group_commit::GroupCommit;

pub struct RecordLock {
    records: Arc<Records>,
    writer: Arc<dyn RecordWriter>,
    /// Checkpoints of tenants applied at once go in one statement: a tenant has one in
    /// flight at most, so a batch names each tenant once.
    queue: GroupCommit<Checkpoint>,
    /// The leases of a run that holds some tenants only; `None` for the whole state.
    held: Option<Held>,
    /// Where the state is, for messages.
    describe: String,
    /// Whether unlocking lets go of the writer too: not when it is a claiming runner's,
    /// which holds it from one batch of tenants to the next.
    owns_writer: bool,
}

impl RecordLock {
    /// The whole state, held through `writer`.
    pub fn whole(records: Records, writer: Arc<dyn RecordWriter>, describe: String) -> RecordLock {
        RecordLock {
            records: Arc::new(records),
            writer,
            queue: GroupCommit::default(),
            held: None,
            describe,
            owns_writer: true,
        }
    }

    /// `slugs` only, held through `writer` (which holds the state's lock shared): waits as
    /// `wait` says for a lease on each.
    pub async fn tenants(
        records: Records,
        writer: Arc<dyn RecordWriter>,
        describe: String,
        info: &LockInfo,
        wait: &Wait,
        slugs: &BTreeSet<String>,
    ) -> Result<RecordLock, StateError> {
        let lock = Self::borrowing(records, writer.clone(), describe, info, wait, slugs).await;
        match lock {
            Ok(lock) => Ok(RecordLock {
                owns_writer: true,
                ..lock
            }),
            Err(e) => {
                let _ = writer.release().await;
                Err(e)
            }
        }
    }

    /// As [`RecordLock::tenants`], through a writer that outlives the lock (a claiming
    /// runner's, `claims.rs`): unlocking lets go of the leases only.
    pub async fn borrowing(
        records: Records,
        writer: Arc<dyn RecordWriter>,
        describe: String,
        info: &LockInfo,
        wait: &Wait,
        slugs: &BTreeSet<String>,
    ) -> Result<RecordLock, StateError> {
        let records = Arc::new(records);
        leases::take(&records, &*writer, slugs, info, wait).await?;
        let held = Held::start(
            records.clone(),
            writer.clone(),
            info.id.clone(),
            slugs.len(),
        );
        Ok(RecordLock {
            records,
            writer,
            queue: GroupCommit::default(),
            held: Some(held),
            describe,
            owns_writer: false,
        })
    }

    /// The header as it stands now merged into `state`, for a run that holds some tenants
    /// only: others write the header too.
    async fn merge_header(&self, state: &mut State) -> Result<(), StateError> {
        let row = self
            .writer
            .fetch(self.records.header_statement())
            .await?
            .into_iter()
            .next();
        if let Some((generation, header)) = parse_header(row, &self.describe)? {
            merge_header(state, generation, header, &self.describe)?;
        }
        Ok(())
    }
}

#[async_trait]
impl StateLock for RecordLock {
    async fn checkpoint(&self, entry: &Checkpoint) -> Result<(), StateError> {
        if let Some(held) = &self.held {
            held.check()?;
        }
        let run = self.held.as_ref().map(|h| h.run.clone());
        let entry = Checkpoint {
            lineage: String::new(),
            base_serial: 0,
            slug: entry.slug.clone(),
            tenant: entry.tenant.clone(),
            serial: 0,
            observation: entry.observation,
            expected: entry.expected,
            generation: entry.generation,
        };
        self.queue
            .write(entry, |entries| async move {
                let writes: Vec<RecordWrite<'_>> = entries
                    .iter()
                    .map(|e| RecordWrite {
                        slug: &e.slug,
                        expected: e.expected,
                        generation: e.generation,
                        tenant: &e.tenant,
                    })
                    .collect();
                let statements = self.records.write_records_as(&writes, run.as_deref());
                self.writer
                    .run(statements)
                    .await
                    .map_err(|e| crate::causes::chain(&e).into())
            })
            .await
            .map_err(|cause| StateError::Checkpoint(cause.to_string()))
    }

    async fn persist(&mut self, state: &mut State) -> Result<(), StateError> {
        let Some(held) = &self.held else {
            let (statements, written) = records::persist(&self.records, state, None);
            self.writer.run(statements).await?;
            written.done(state);
            return Ok(());
        };
        // Others write the header meanwhile: merged with it as it stands, and written
        // again from there when another got in first, after a pause of a random length so
        // runners that end together do not meet again.
        let mut tries: u64 = 0;
        loop {
            if tries > 0 {
                let mut byte = [0u8; 2];
                let _ = getrandom::fill(&mut byte);
                let pause = 10 + u64::from(u16::from_le_bytes(byte)) % (20 * tries.min(10));
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            held.check()?;
            self.merge_header(state).await?;
            let (statements, written) =
                records::persist(&self.records, state, Some(held.run.as_str()));
            match self.writer.run(statements).await {
                Ok(()) => {
                    written.done(state);
                    return Ok(());
                }
                Err(StateError::MovedOn(_)) if tries < 50 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// With a lease on each of its tenants; the whole state's lock writes the whole state.
    fn writes_some(&self) -> bool {
        self.held.is_some()
    }

    fn holds(&self) -> Result<(), StateError> {
        match &self.held {
            Some(held) => held.check(),
            None => Ok(()),
        }
    }

    async fn unlock(self: Box<Self>) -> Result<(), StateError> {
        let released = match self.held {
            Some(held) => held.release(&self.records, &*self.writer).await,
            None => Ok(()),
        };
        if !self.owns_writer {
            return released;
        }
        let unlocked = self.writer.release().await;
        released.and(unlocked)
    }
}

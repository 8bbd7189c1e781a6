//! The lock of a state kept as records (`records.rs`), the local and Postgres backends'
//! alike: checkpoints of tenants applied at once written together, each record only at the
//! generation this run last saw, and whole writes in one transaction.

use async_trait::async_trait;
use sqlx::{Connection, PgConnection, SqlitePool};

use super::backend::{StateError, StateLock};
use super::records::{moved_on, Checked, Persist, RecordWrite, Records};
use super::{Checkpoint, State};
use crate::clients::error::ProviderError;
use crate::clients::group_commit::GroupCommit;
use crate::clients::sql::Pool;

/// Where a backend's records are written: each statement checked (see [`Checked`]), the
/// statements of one write in one transaction, and the lock let go of at the end.
#[async_trait]
pub trait RecordWriter: Send + Sync {
    async fn run(&self, statements: Vec<Checked>) -> Result<(), StateError>;
    async fn release(self: Box<Self>) -> Result<(), StateError>;
}

fn failed(doing: &'static str) -> impl FnOnce(ProviderError) -> StateError {
    move |source| StateError::Store {
        context: doing.to_string(),
        source,
    }
}

fn check(changed: u64, must: u64, tenants: &[String]) -> Result<(), StateError> {
    match must == u64::MAX || changed == must {
        true => Ok(()),
        false => Err(moved_on(tenants)),
    }
}

/// Runs `statements` in one transaction on a SQLite file.
pub async fn run_sqlite(pool: &SqlitePool, statements: Vec<Checked>) -> Result<(), StateError> {
    let mut tx = Pool::Sqlite(pool.clone())
        .begin()
        .await
        .map_err(failed("begin writing the state"))?;
    for (statement, must, tenants) in statements {
        let changed = statement
            .execute(&mut tx)
            .await
            .map_err(failed("write the state"))?;
        check(changed, must, &tenants)?;
    }
    tx.commit().await.map_err(failed("commit the state"))
}

/// Runs `statements` on the lock's own Postgres connection: one alone as it is, more in one
/// transaction.
pub async fn run_postgres(
    conn: &mut PgConnection,
    statements: Vec<Checked>,
) -> Result<(), StateError> {
    if statements.len() == 1 {
        let (statement, must, tenants) = statements.into_iter().next().expect("one");
        let changed = statement
            .execute(&mut *conn)
            .await
            .map_err(failed("write the state"))?;
        return check(changed, must, &tenants);
    }
    let sql = |context: &str| {
        let context = context.to_string();
        move |source| StateError::Sql { context, source }
    };
    let mut tx = conn.begin().await.map_err(sql("begin writing the state"))?;
    for (statement, must, tenants) in statements {
        let changed = statement
            .execute(&mut *tx)
            .await
            .map_err(failed("write the state"))?;
        check(changed, must, &tenants)?;
    }
    tx.commit().await.map_err(sql("commit the state"))
}

pub struct RecordLock {
    pub records: Records,
    pub writer: Box<dyn RecordWriter>,
    /// Checkpoints of tenants applied at once go in one statement: a tenant has one in
    /// flight at most, so a batch names each tenant once.
    pub queue: GroupCommit<Checkpoint>,
}

impl RecordLock {
    pub fn new(records: Records, writer: Box<dyn RecordWriter>) -> RecordLock {
        RecordLock {
            records,
            writer,
            queue: GroupCommit::default(),
        }
    }
}

#[async_trait]
impl StateLock for RecordLock {
    async fn checkpoint(&self, entry: &Checkpoint) -> Result<(), StateError> {
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
                let statements = self
                    .records
                    .write_records(&writes)
                    .into_iter()
                    .map(|(s, tenants)| (s, tenants.len() as u64, tenants))
                    .collect();
                self.writer
                    .run(statements)
                    .await
                    .map_err(|e| crate::causes::chain(&e).into())
            })
            .await
            .map_err(|cause| StateError::Checkpoint(cause.to_string()))
    }

    async fn persist(&mut self, state: &mut State) -> Result<(), StateError> {
        let (statements, persist) = Persist::of(&self.records, state);
        self.writer.run(statements).await?;
        persist.done(state);
        Ok(())
    }

    async fn unlock(self: Box<Self>) -> Result<(), StateError> {
        self.writer.release().await
    }
}

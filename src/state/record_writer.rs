//! Where a state kept as records is written from, for the local and Postgres backends alike:
//! each write's statements in one transaction, each checked to change the rows it must.

use async_trait::async_trait;
use sqlx::{Connection, PgConnection, SqlitePool};

use super::backend::{LockInfo, StateError};
use super::records::{moved_on, Checked};
use crate::clients::error::ProviderError;
use crate::clients::sql::{Pool, Row, Statement};

/// Where a backend's records are written: each statement checked (see [`Checked`]), the
/// statements of one write in one transaction, and the lock let go of at the end.
#[async_trait]
pub trait RecordWriter: Send + Sync {
    async fn run(&self, statements: Vec<Checked>) -> Result<(), StateError>;
    /// The rows of a query, through the same connection.
    async fn fetch(&self, statement: Statement) -> Result<Vec<Row>, StateError>;
    /// Whether the run with lock id `run` (and these details) is still there.
    async fn alive(&self, run: &str, info: Option<&LockInfo>) -> bool;
    /// Lets go of the state's lock.
    async fn release(&self) -> Result<(), StateError>;
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

//! The state in PostgreSQL, in the admin schema: one row per state name, the checkpoints
//! written since its last full write, and the current lock holder's details.
//!
//! The lock is a session-level advisory lock keyed on the state's own name, held by a
//! connection of its own for the whole run: two unrelated states never block each other,
//! and a holder that dies (kill -9, lost network) lets go once the server notices its
//! connection dropped (a rerun on the same host waits a moment for that: `GONE_HOLDER_GRACE`).
//! Every write goes through that same connection, so a run that lost its lock cannot write.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use sqlx::{Connection, Executor as _, PgConnection};

use super::backend::{LockInfo, StateBackend, StateError, StateLock, Wait, GONE_HOLDER_GRACE};
use super::{Checkpoint, State};
use crate::clients::error::ProviderError;
use crate::clients::group_commit::GroupCommit;
use crate::clients::postgres::PgServer;

const TABLES: &str = r#"
CREATE SCHEMA IF NOT EXISTS {schema};
REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;
CREATE TABLE IF NOT EXISTS {schema}.states (
    name       text PRIMARY KEY,
    serial     bigint NOT NULL,
    body       text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {schema}.state_checkpoints (
    name  text NOT NULL,
    seq   bigserial,
    entry text NOT NULL,
    PRIMARY KEY (name, seq)
);
CREATE TABLE IF NOT EXISTS {schema}.state_locks (
    name text PRIMARY KEY,
    info text NOT NULL
);
"#;

pub struct PgBackend {
    server: Arc<PgServer>,
    name: String,
    schema: String,
}

fn pg(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StateError {
    let context = context.into();
    move |source| StateError::Sql { context, source }
}

fn provider(context: &str) -> impl FnOnce(ProviderError) -> StateError + '_ {
    move |source| StateError::Postgres {
        context: context.to_string(),
        source,
    }
}

impl PgBackend {
    pub fn new(server: Arc<PgServer>, name: String) -> PgBackend {
        PgBackend {
            schema: server.schema(),
            server,
            name,
        }
    }

    fn sql(&self, sql: &str) -> String {
        sql.replace("{schema}", &self.schema)
    }

    fn lock_key(&self) -> String {
        format!("tenant-reconcile/state/{}", self.name)
    }

    /// Who holds the lock, as it recorded itself; `None` when that cannot be read.
    async fn holder(&self, conn: &mut PgConnection) -> Option<LockInfo> {
        let row: Option<(String,)> =
            sqlx::query_as(&self.sql("SELECT info FROM {schema}.state_locks WHERE name = $1"))
                .bind(&self.name)
                .fetch_optional(&mut *conn)
                .await
                .ok()?;
        serde_json::from_str(&row?.0).ok()
    }
}

#[async_trait]
impl StateBackend for PgBackend {
    fn describe(&self) -> String {
        format!("state {:?} on {}", self.name, self.server.describe())
    }

    async fn load(&self) -> Result<State, StateError> {
        let pool = self
            .server
            .pool()
            .await
            .map_err(provider("read the state"))?;
        let (exists,): (bool,) = sqlx::query_as("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("{}.states", self.schema))
            .fetch_one(pool)
            .await
            .map_err(pg("read the state"))?;
        if !exists {
            return Ok(State::empty());
        }
        let body: Option<(String,)> =
            sqlx::query_as(&self.sql("SELECT body FROM {schema}.states WHERE name = $1"))
                .bind(&self.name)
                .fetch_optional(pool)
                .await
                .map_err(pg("read the state"))?;
        let mut state = match body {
            Some((body,)) => State::decode(body.as_bytes(), || self.describe())?,
            None => State::empty(),
        };
        let entries: Vec<(String,)> = sqlx::query_as(
            &self.sql("SELECT entry FROM {schema}.state_checkpoints WHERE name = $1 ORDER BY seq"),
        )
        .bind(&self.name)
        .fetch_all(pool)
        .await
        .map_err(pg("read the state's checkpoints"))?;
        state.replay(
            entries
                .iter()
                .filter_map(|(e,)| serde_json::from_str::<Checkpoint>(e).ok()),
        );
        Ok(state)
    }

    async fn lock(&self, info: LockInfo, wait: &Wait) -> Result<Box<dyn StateLock>, StateError> {
        let mut conn = self
            .server
            .connect()
            .await
            .map_err(provider("lock the state"))?;
        // Writing needs the tables; reading never creates them (plan writes nothing).
        let tables = self.sql(TABLES);
        let mut tx = conn.begin().await.map_err(pg("begin"))?;
        crate::clients::postgres::lock_ddl(tx.as_mut())
            .await
            .map_err(provider("create the state tables"))?;
        tx.as_mut()
            .execute(tables.as_str())
            .await
            .map_err(pg("create the state tables"))?;
        tx.commit().await.map_err(pg("commit"))?;
        let started = Instant::now();
        loop {
            let (got,): (bool,) =
                sqlx::query_as("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                    .bind(self.lock_key())
                    .fetch_one(&mut conn)
                    .await
                    .map_err(pg("lock the state"))?;
            if got {
                break;
            }
            if started.elapsed() >= wait.timeout {
                let holder = self.holder(&mut conn).await;
                // A run killed a moment ago holds the lock until the server notices its
                // connection is gone: a rerun started at once waits for that.
                let gone = holder.as_ref().is_some_and(LockInfo::holder_gone);
                if !(gone && started.elapsed() < GONE_HOLDER_GRACE) {
                    let _ = conn.close().await;
                    return Err(StateError::Locked {
                        holder: holder.map_or_else(|| "another run".into(), |h| h.describe()),
                    });
                }
            }
            wait.poll().await?;
        }
        sqlx::query(&self.sql(
            "INSERT INTO {schema}.state_locks (name, info) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET info = excluded.info",
        ))
        .bind(&self.name)
        .bind(serde_json::to_string(&info).expect("lock info serializes"))
        .execute(&mut conn)
        .await
        .map_err(pg("record the lock holder"))?;
        Ok(Box::new(PgLock {
            conn: tokio::sync::Mutex::new(conn),
            checkpoints: GroupCommit::default(),
            name: self.name.clone(),
            schema: self.schema.clone(),
            key: self.lock_key(),
        }))
    }
}

struct PgLock {
    /// The lock's own connection: every write goes through it.
    conn: tokio::sync::Mutex<PgConnection>,
    checkpoints: GroupCommit<String>,
    name: String,
    schema: String,
    key: String,
}

impl PgLock {
    fn sql(&self, sql: &str) -> String {
        sql.replace("{schema}", &self.schema)
    }
}

#[async_trait]
impl StateLock for PgLock {
    async fn checkpoint(&self, entry: &Checkpoint) -> Result<(), StateError> {
        let entry = serde_json::to_string(entry).expect("state serializes");
        // Every write goes through the lock's one connection: the checkpoints of tenants
        // applied at once are written together, one statement and one commit for all that
        // queued meanwhile, in the order they queued (a tenant has one in flight at most).
        let sql = self.sql(
            "INSERT INTO {schema}.state_checkpoints (name, entry)
             SELECT $1, e FROM unnest($2::text[]) WITH ORDINALITY AS u(e, i) ORDER BY i",
        );
        self.checkpoints
            .write(entry, |entries| async move {
                sqlx::query(&sql)
                    .bind(&self.name)
                    .bind(entries)
                    .execute(&mut *self.conn.lock().await)
                    .await
                    .map(drop)
                    .map_err(|e| crate::causes::chain(&e).into())
            })
            .await
            .map_err(|cause| StateError::Checkpoint(cause.to_string()))
    }

    async fn persist(&mut self, state: &State) -> Result<(), StateError> {
        let body = serde_json::to_string(state).expect("state serializes");
        let upsert = self.sql(
            "INSERT INTO {schema}.states (name, serial, body) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET serial = excluded.serial, body = excluded.body, updated_at = now()",
        );
        let clear = self.sql("DELETE FROM {schema}.state_checkpoints WHERE name = $1");
        let name = self.name.clone();
        let mut tx = self.conn.get_mut().begin().await.map_err(pg("begin"))?;
        sqlx::query(&upsert)
            .bind(&name)
            .bind(state.serial as i64)
            .bind(body)
            .execute(tx.as_mut())
            .await
            .map_err(pg("write the state"))?;
        // The snapshot now holds what the checkpoints said.
        sqlx::query(&clear)
            .bind(&name)
            .execute(tx.as_mut())
            .await
            .map_err(pg("clear the checkpoints"))?;
        tx.commit().await.map_err(pg("commit the state"))
    }

    async fn unlock(mut self: Box<Self>) -> Result<(), StateError> {
        let sql = self.sql("DELETE FROM {schema}.state_locks WHERE name = $1");
        let conn = self.conn.get_mut();
        sqlx::query(&sql)
            .bind(&self.name)
            .execute(&mut *conn)
            .await
            .map_err(pg("clear the lock holder"))?;
        sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind(&self.key)
            .execute(&mut *conn)
            .await
            .map_err(pg("unlock the state"))?;
        let _ = self.conn.into_inner().close().await;
        Ok(())
    }
}

//! The state in PostgreSQL, in the admin schema: records (`records.rs`: a header and a row
//! per tenant, each keyed by the state's name), and the current lock holder's details.
//!
//! A state an older tenant-reconcile wrote is one document per state name (`states`) with
//! the checkpoints written since its last full write (`state_checkpoints`). It is read as
//! it is until the first run that takes the lock converts it, in one transaction: the
//! document, with its checkpoints, is kept in `state_v1_backups`, written as records, and
//! replaced in `states` by a stub an older tenant-reconcile refuses as a newer format.
//!
//! The lock is a session-level advisory lock keyed on the state's own name, held by a
//! connection of its own for the whole run: two unrelated states never block each other,
//! and a holder that dies (kill -9, lost network) lets go once the server notices its
//! connection dropped (a rerun on the same host waits a moment for that: `GONE_HOLDER_GRACE`).
//! Every write goes through that same connection, so a run that lost its lock cannot write.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use sqlx::{Connection, Executor as _, PgConnection};

use super::backend::{
    LockInfo, PlanClaims, StateBackend, StateError, StateLock, Wait, GONE_HOLDER_GRACE,
};
use super::record_lock::RecordLock;
use super::record_writer::{run_postgres, RecordWriter};
use super::records::{self, Checked, Records};
use super::shared::{self, SharesRecords};
use super::{Checkpoint, State};
use crate::clients::error::ProviderError;
use crate::clients::postgres::PgServer;
use crate::clients::sql::Dialect;
use crate::clients::sql::{Row, Statement};

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
CREATE TABLE IF NOT EXISTS {schema}.state_v1_backups (
    name     text PRIMARY KEY,
    body     text NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now()
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
        self.load_some(None).await
    }

    async fn load_tenants(&self, slugs: &BTreeSet<String>) -> Result<State, StateError> {
        self.load_some(Some(slugs)).await
    }

    async fn lock(&self, info: LockInfo, wait: &Wait) -> Result<Box<dyn StateLock>, StateError> {
        let mut conn = self.connect_with_tables().await?;
        self.advisory(&mut conn, wait, false).await?;
        sqlx::query(&self.sql(
            "INSERT INTO {schema}.state_locks (name, info) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET info = excluded.info",
        ))
        .bind(&self.name)
        .bind(serde_json::to_string(&info).expect("lock info serializes"))
        .execute(&mut conn)
        .await
        .map_err(pg("record the lock holder"))?;
        self.convert(&mut conn).await?;
        Ok(Box::new(RecordLock::whole(
            self.records(),
            Arc::new(self.writer(conn, None)),
            self.describe(),
        )))
    }

    async fn lock_tenants(
        &self,
        info: LockInfo,
        wait: &Wait,
        slugs: &BTreeSet<String>,
    ) -> Result<Box<dyn StateLock>, StateError> {
        shared::lock_tenants(self, info, wait, slugs).await
    }

    async fn claims(
        &self,
        info: LockInfo,
        wait: &Wait,
        plan: &str,
        slugs: &[String],
    ) -> Result<Box<dyn PlanClaims>, StateError> {
        shared::claims(self, info, wait, plan, slugs).await
    }
}

#[async_trait]
impl SharesRecords for PgBackend {
    fn records(&self) -> Records {
        PgBackend::records(self)
    }

    /// A writer for a run that holds some tenants only: the state's lock held shared, and
    /// the run's own key, which says it is alive while its connection lasts. `None` when
    /// the state cannot be shared: not kept as records, or not written yet (its conversion
    /// and first write are the whole state's).
    async fn shared_writer(
        &self,
        info: &LockInfo,
        wait: &Wait,
    ) -> Result<Option<Arc<dyn RecordWriter>>, StateError> {
        let mut conn = self.connect_with_tables().await?;
        self.advisory(&mut conn, wait, true).await?;
        let converted = self.load_document(&mut conn).await?.is_none();
        let header = self
            .records()
            .header_statement()
            .first(&mut conn)
            .await
            .map_err(provider("read the state's header"))?;
        if !converted || header.is_none() {
            let _ = conn.close().await;
            return Ok(None);
        }
        sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
            .bind(run_key(&info.id))
            .execute(&mut conn)
            .await
            .map_err(pg("lock the state"))?;
        Ok(Some(Arc::new(self.writer(conn, Some(run_key(&info.id))))))
    }
}

/// The advisory lock key a run holds while it lives.
fn run_key(run: &str) -> String {
    format!("tenant-reconcile/run/{run}")
}

impl PgBackend {
    /// A connection of the lock's own, with the state's tables made.
    async fn connect_with_tables(&self) -> Result<PgConnection, StateError> {
        let mut conn = self
            .server
            .connect()
            .await
            .map_err(provider("lock the state"))?;
        // Writing needs the tables; reading never creates them (plan writes nothing).
        let mut tables = self.sql(TABLES);
        for table in records::TABLES {
            tables.push_str(&self.records().dialect.sql(table));
            tables.push_str(";\n");
        }
        let mut tx = conn.begin().await.map_err(pg("begin"))?;
        crate::clients::postgres::lock_ddl(tx.as_mut())
            .await
            .map_err(provider("create the state tables"))?;
        tx.as_mut()
            .execute(tables.as_str())
            .await
            .map_err(pg("create the state tables"))?;
        tx.commit().await.map_err(pg("commit"))?;
        Ok(conn)
    }

    /// Takes the state's advisory lock on `conn`: alone, or `shared` beside runs that hold
    /// some tenants. Waits as `wait` says for a holder it cannot go beside.
    async fn advisory(
        &self,
        conn: &mut PgConnection,
        wait: &Wait,
        shared: bool,
    ) -> Result<(), StateError> {
        let try_lock = match shared {
            true => "SELECT pg_try_advisory_lock_shared(hashtextextended($1, 0))",
            false => "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
        };
        let started = Instant::now();
        loop {
            let (got,): (bool,) = sqlx::query_as(try_lock)
                .bind(self.lock_key())
                .fetch_one(&mut *conn)
                .await
                .map_err(pg("lock the state"))?;
            if got {
                return Ok(());
            }
            if started.elapsed() >= wait.timeout {
                // The row names a holder of the whole state; runs that hold some tenants
                // write none.
                let holder = self.holder(conn).await;
                // A run killed a moment ago holds the lock until the server notices its
                // connection is gone: a rerun started at once waits for that.
                let gone = holder.as_ref().is_some_and(LockInfo::holder_gone);
                if !(gone && started.elapsed() < GONE_HOLDER_GRACE) {
                    return Err(StateError::Locked {
                        holder: holder.map_or_else(
                            || {
                                "runs applying some of its tenants (`apply --tenant` or `--shard`)"
                                    .into()
                            },
                            |h| h.describe(),
                        ),
                    });
                }
            }
            wait.poll().await?;
        }
    }

    fn writer(&self, conn: PgConnection, run_key: Option<String>) -> PgWriter {
        PgWriter {
            conn: tokio::sync::Mutex::new(conn),
            name: self.name.clone(),
            schema: self.schema.clone(),
            key: self.lock_key(),
            run_key,
        }
    }
}

impl PgBackend {
    fn records(&self) -> Records {
        Records {
            dialect: Dialect::Postgres {
                schema: self.schema.clone(),
            },
            name: self.name.clone(),
        }
    }

    /// The state, or with `slugs` the records of those tenants only (beside the header).
    async fn load_some(&self, slugs: Option<&BTreeSet<String>>) -> Result<State, StateError> {
        let pool = self
            .server
            .pool()
            .await
            .map_err(provider("read the state"))?;
        let (records, document): (bool, bool) =
            sqlx::query_as("SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL")
                .bind(format!("{}.state_header", self.schema))
                .bind(format!("{}.states", self.schema))
                .fetch_one(pool)
                .await
                .map_err(pg("read the state"))?;
        if records {
            let describe = self.describe();
            let pool = crate::clients::sql::Pool::Postgres(pool.clone());
            let read = match slugs {
                Some(slugs) => self.records().read_some(&pool, &describe, slugs).await?,
                None => self.records().read(&pool, &describe).await?,
            };
            if let Some(state) = read {
                return Ok(state);
            }
        }
        if !document {
            let mut state = State::empty();
            if let Some(slugs) = slugs {
                state.narrow_to(slugs);
            }
            return Ok(state);
        }
        let mut conn = pool.acquire().await.map_err(pg("read the state"))?;
        let mut state = self
            .load_document(&mut conn)
            .await?
            .unwrap_or_else(State::empty);
        if let Some(slugs) = slugs {
            state.narrow_to(slugs);
        }
        Ok(state)
    }

    /// The one-document state, with its checkpoints replayed; `None` when there is no
    /// document, or only the stub left by its conversion.
    async fn load_document(&self, conn: &mut PgConnection) -> Result<Option<State>, StateError> {
        let body: Option<(String,)> =
            sqlx::query_as(&self.sql("SELECT body FROM {schema}.states WHERE name = $1"))
                .bind(&self.name)
                .fetch_optional(&mut *conn)
                .await
                .map_err(pg("read the state"))?;
        let Some((body,)) = body else {
            return Ok(None);
        };
        if records::is_stub(body.as_bytes()) {
            return Ok(None);
        }
        let mut state = State::decode(body.as_bytes(), || self.describe())?;
        let entries: Vec<(String,)> = sqlx::query_as(
            &self.sql("SELECT entry FROM {schema}.state_checkpoints WHERE name = $1 ORDER BY seq"),
        )
        .bind(&self.name)
        .fetch_all(&mut *conn)
        .await
        .map_err(pg("read the state's checkpoints"))?;
        state.replay(
            entries
                .iter()
                .filter_map(|(e,)| serde_json::from_str::<Checkpoint>(e).ok()),
        );
        Ok(Some(state))
    }

    /// Makes a one-document state records, in one transaction: kept as a backup, written
    /// as records, its document a stub and its checkpoints gone. Nothing when there is no
    /// document to convert.
    async fn convert(&self, conn: &mut PgConnection) -> Result<(), StateError> {
        let mut tx = conn.begin().await.map_err(pg("begin"))?;
        let stub =
            String::from_utf8(records::stub(&format!("{} records", self.schema))).expect("utf-8");
        let Some(mut state) = self.load_document(&mut tx).await? else {
            // A state kept as records from its start gets the stub too, so an earlier
            // tenant-reconcile finds a newer format here, not an empty state to write.
            sqlx::query(&self.sql(
                "INSERT INTO {schema}.states (name, serial, body) VALUES ($1, 0, $2)
                 ON CONFLICT (name) DO NOTHING",
            ))
            .bind(&self.name)
            .bind(&stub)
            .execute(tx.as_mut())
            .await
            .map_err(pg("write the state's stub"))?;
            return tx.commit().await.map_err(pg("commit the state's stub"));
        };
        let header = self
            .records()
            .header_statement()
            .first(tx.as_mut())
            .await
            .map_err(provider("read the state's header"))?;
        if header.is_some() {
            return Err(StateError::Corrupt {
                path: self.describe(),
                message: "its one-document row in `states` was written by an earlier tenant-reconcile after this state became records; nothing was done\n  hint: the records are the state; keep what that row holds apart, delete it, and run again".into(),
            });
        }
        let whole = serde_json::to_string(&state).expect("state serializes");
        sqlx::query(&self.sql(
            "INSERT INTO {schema}.state_v1_backups (name, body) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET body = excluded.body, taken_at = now()",
        ))
        .bind(&self.name)
        .bind(whole)
        .execute(tx.as_mut())
        .await
        .map_err(pg("back up the state"))?;
        for (statement, must, tenants) in records::conversion(&self.records(), &mut state) {
            let changed = statement
                .execute(tx.as_mut())
                .await
                .map_err(provider("convert the state to records"))?;
            if must != u64::MAX && changed != must {
                return Err(records::moved_on(&tenants));
            }
        }
        sqlx::query(&self.sql("UPDATE {schema}.states SET body = $2 WHERE name = $1"))
            .bind(&self.name)
            .bind(&stub)
            .execute(tx.as_mut())
            .await
            .map_err(pg("convert the state to records"))?;
        sqlx::query(&self.sql("DELETE FROM {schema}.state_checkpoints WHERE name = $1"))
            .bind(&self.name)
            .execute(tx.as_mut())
            .await
            .map_err(pg("convert the state to records"))?;
        tx.commit()
            .await
            .map_err(pg("commit the state's conversion"))
    }
}

/// The connection that holds the advisory lock: every write goes through it, so a run that
/// lost its lock (and with it this connection) cannot write. Letting go clears the holder's
/// row and the lock through it.
struct PgWriter {
    conn: tokio::sync::Mutex<PgConnection>,
    name: String,
    schema: String,
    key: String,
    /// The run's own key, for a run that holds some tenants (the state's lock shared);
    /// `None` for the whole state's holder.
    run_key: Option<String>,
}

#[async_trait]
impl RecordWriter for PgWriter {
    async fn run(&self, statements: Vec<Checked>) -> Result<(), StateError> {
        run_postgres(&mut *self.conn.lock().await, statements).await
    }

    async fn fetch(&self, statement: Statement) -> Result<Vec<Row>, StateError> {
        statement
            .fetch(&mut *self.conn.lock().await)
            .await
            .map_err(provider("read the state"))
    }

    async fn alive(&self, run: &str, _info: Option<&LockInfo>) -> bool {
        // A run holds its own key while its connection lives: had it gone, the key is free.
        let mut conn = self.conn.lock().await;
        let free: Result<(bool,), _> =
            sqlx::query_as("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(run_key(run))
                .fetch_one(&mut *conn)
                .await;
        match free {
            Ok((true,)) => {
                let _ = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
                    .bind(run_key(run))
                    .execute(&mut *conn)
                    .await;
                false
            }
            _ => true,
        }
    }

    async fn release(&self) -> Result<(), StateError> {
        let mut conn = self.conn.lock().await;
        let Some(own) = &self.run_key else {
            sqlx::query(&format!(
                "DELETE FROM {}.state_locks WHERE name = $1",
                self.schema
            ))
            .bind(&self.name)
            .execute(&mut *conn)
            .await
            .map_err(pg("clear the lock holder"))?;
            sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
                .bind(&self.key)
                .execute(&mut *conn)
                .await
                .map_err(pg("unlock the state"))?;
            return Ok(());
        };
        for (unlock, key) in [
            ("SELECT pg_advisory_unlock(hashtextextended($1, 0))", own),
            (
                "SELECT pg_advisory_unlock_shared(hashtextextended($1, 0))",
                &self.key,
            ),
        ] {
            sqlx::query(unlock)
                .bind(key)
                .execute(&mut *conn)
                .await
                .map_err(pg("unlock the state"))?;
        }
        Ok(())
    }
}

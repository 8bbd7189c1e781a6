//! One way to send a statement to SQLite or PostgreSQL, for code written once over both (the
//! control plane). sqlx binds `$N` on both; what differs is a handful of spellings (a time
//! column, a JSON column, a bound list, a row lock), which a statement names as tokens and
//! [`Dialect::sql`] spells for its server:
//!
//! - `{schema}.table`: the admin schema's table on Postgres, `main.table` on SQLite;
//! - `{time $N}`: a bound RFC 3339 text as a value of a time column;
//! - `{now}`: the server's clock as a value of a time column (`now()` on Postgres, the
//!   transaction's start; whole seconds on SQLite, as every time there is written);
//! - `{stamp col}`: a time column as RFC 3339 text, to the second;
//! - `{json $N}`: a bound JSON text as a value of a JSON column;
//! - `{each $N}`: a subquery of the texts in a bound JSON array;
//! - `{rows $N a b …}`: a table of a bound JSON array of arrays, its columns named `a`, `b`, …
//!   (as text; a statement casts a column it needs as another type), and `i`, each row's
//!   place in the array;
//! - `{entries $N}`: a table of a bound JSON object's `key` and `value`;
//! - `{later $N}`: a bound time plus the relay's lease ([`LEASE_MINUTES`]);
//! - `{unleased alias $N}`: on Postgres, that the row's lease is over at the bound time; true
//!   on SQLite, whose file is one machine's;
//! - `{lock alias}`: on Postgres, `FOR UPDATE OF alias SKIP LOCKED`; SQLite has one writer;
//! - `{locked}`: on Postgres, `FOR UPDATE`: the rows read are this transaction's until it ends;
//! - `{erase col key}`: the JSON in `col` with `key` set to null;
//! - `{horizon}`: a mark of how far the outbox has been read (as text), below which nothing
//!   can still appear: on SQLite, whose writers take ids in the order they commit, the
//!   largest id; on Postgres, where a row taking an id commits whenever its transaction
//!   does, the oldest transaction still writing: every row of a transaction below it is
//!   committed, or never will be;
//! - `{unseen o s}`: that outbox row `o` may be one subscriber `s` was not yet given (a row
//!   given already is found by the delivery's key);
//! - `{seen $N}`: the assignment that moves a subscriber's mark to the horizon bound, read
//!   before what it marks;
//! - `{json_list}`, `{json_map}`: the aggregates that fold rows into a JSON array, or an
//!   object of key and value (null over no rows); `{json_array}`: a JSON array of values;
//! - `{json_column col}`: a JSON column (or value) as JSON within those, not as its text;
//! - `{json_bool col}`: a boolean column as JSON `true` or `false`;
//! - `{lbrace}`, `{rbrace}`: the texts `{` and `}` (a brace in a statement opens a token);
//! - `{part $N $M}`: that the row is in part `$M` of `$N` parts of its table, for reading a
//!   large table side by side (on SQLite by its row id, on Postgres by a hash of `slug`);
//! - `{text_list}`: the aggregate that joins texts with a separator (`{text_list}(x, ',')`);
//! - `{json_quote col}`: a text column as a JSON string;
//! - `{epoch}`: the server's clock in whole seconds since 1970, as an integer;
//! - `{outbox turn}`: a statement that makes the transaction wait its turn among those that
//!   make deliveries from the outbox or prune it (an advisory lock of the schema's on
//!   Postgres; SQLite's write transaction already has the file to itself).
//!
//! Values are bound as text, integers and booleans only ([`Statement`]), the types both servers
//! read alike; a row is read back the same way ([`Row`]).

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{PgPool, Postgres, Row as _, Sqlite, SqlitePool, Transaction};

use crate::clients::error::ProviderError;

/// How long a relay's claim on a delivery holds: longer than any webhook's timeout (at most
/// 5 minutes).
pub const LEASE_MINUTES: u32 = 6;

/// The server a statement is spelled for.
#[derive(Clone, Debug)]
pub enum Dialect {
    Sqlite,
    /// With the admin schema, quoted: a checked identifier.
    Postgres {
        schema: String,
    },
}

/// A bound list's rows limited to their own count, which is no limit at all, but tells the
/// planner how many there are. A set-returning function counts as 100 rows to it, and with
/// 100 to look up in a table of a few thousand, reading the table whole seemed cheaper than
/// its key: each checkpoint or step marker of one tenant read every tenant's row. A plan
/// made for the values bound counts the list exactly; a plan made once for any values
/// counts it as a tenth of 100.
fn counted(param: &str) -> String {
    format!("LIMIT jsonb_array_length(CAST({param} AS jsonb))")
}

impl Dialect {
    /// `text` with its tokens spelled for this server. Tokens are written by this crate,
    /// never taken from input; an unknown one is a bug, and panics in every test that sends it.
    pub fn sql(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 64);
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close = open + rest[open..].find('}').expect("a token is closed");
            let token = &rest[open + 1..close];
            let (name, arg) = token.split_once(' ').unwrap_or((token, ""));
            out.push_str(&self.spell(name, arg));
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        out
    }

    fn spell(&self, name: &str, arg: &str) -> String {
        match (self, name) {
            (_, "schema") => self.schema().into(),
            (Dialect::Sqlite, "time" | "json" | "stamp") => arg.into(),
            (Dialect::Sqlite, "now") => "strftime('%Y-%m-%dT%H:%M:%SZ', 'now')".into(),
            (Dialect::Postgres { .. }, "now") => "now()".into(),
            (Dialect::Postgres { .. }, "time") => format!("CAST({arg} AS timestamptz)"),
            (Dialect::Postgres { .. }, "json") => format!("CAST({arg} AS jsonb)"),
            (Dialect::Postgres { .. }, "stamp") => {
                format!("to_char({arg} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
            }
            (Dialect::Sqlite, "each") => format!("SELECT value FROM json_each({arg})"),
            (Dialect::Postgres { .. }, "each") => format!(
                "SELECT jsonb_array_elements_text(CAST({arg} AS jsonb)) {}",
                counted(arg)
            ),
            (Dialect::Sqlite, "rows") => {
                let (param, columns) = arg.split_once(' ').expect("{rows $N columns}");
                let columns: Vec<String> = columns
                    .split(' ')
                    .enumerate()
                    .map(|(n, c)| format!("json_extract(value, '$[{n}]') AS {c}"))
                    .collect();
                format!(
                    "(SELECT {}, key AS i FROM json_each({param}))",
                    columns.join(", ")
                )
            }
            (Dialect::Postgres { .. }, "rows") => {
                let (param, columns) = arg.split_once(' ').expect("{rows $N columns}");
                let columns: Vec<String> = columns
                    .split(' ')
                    .enumerate()
                    .map(|(n, c)| format!("r->>{n} AS {c}"))
                    .collect();
                format!(
                    "(SELECT {}, e.n AS i FROM jsonb_array_elements(CAST({param} AS jsonb)) WITH ORDINALITY AS e (r, n) {})",
                    columns.join(", "),
                    counted(param)
                )
            }
            (Dialect::Sqlite, "entries") => format!("json_each({arg})"),
            (Dialect::Postgres { .. }, "entries") => {
                format!("jsonb_each_text(CAST({arg} AS jsonb))")
            }
            (Dialect::Sqlite, "later") => {
                format!("strftime('%Y-%m-%dT%H:%M:%SZ', {arg}, '+{LEASE_MINUTES} minutes')")
            }
            (Dialect::Postgres { .. }, "later") => {
                format!("CAST({arg} AS timestamptz) + interval '{LEASE_MINUTES} minutes'")
            }
            (Dialect::Sqlite, "unleased") => "true".into(),
            (Dialect::Postgres { .. }, "unleased") => {
                let (alias, at) = arg.split_once(' ').expect("{unleased alias $N}");
                format!("({alias}.lease_until IS NULL OR {alias}.lease_until < CAST({at} AS timestamptz))")
            }
            (Dialect::Sqlite, "locked") => String::new(),
            (Dialect::Postgres { .. }, "locked") => "FOR UPDATE".into(),
            (Dialect::Sqlite, "erase") => {
                let (column, key) = arg.split_once(' ').expect("{erase column key}");
                format!("json_set({column}, '$.{key}', NULL)")
            }
            (Dialect::Postgres { .. }, "erase") => {
                let (column, key) = arg.split_once(' ').expect("{erase column key}");
                format!("jsonb_set({column}, ARRAY['{key}'], 'null')")
            }
            (Dialect::Sqlite, "horizon") => {
                format!(
                    "SELECT CAST(coalesce(max(id), 0) AS TEXT) FROM {}.outbox",
                    self.schema()
                )
            }
            (Dialect::Postgres { .. }, "horizon") => {
                "SELECT CAST(pg_snapshot_xmin(pg_current_snapshot()) AS TEXT)".into()
            }
            (Dialect::Sqlite, "unseen") => {
                let (o, s) = arg.split_once(' ').expect("{unseen o s}");
                format!("{o}.id > {s}.outbox_id")
            }
            // Read by the index on `tx` from the mark. A subscriber marked before marks were
            // transactions is read by id once.
            (Dialect::Postgres { .. }, "unseen") => {
                let (o, s) = arg.split_once(' ').expect("{unseen o s}");
                format!(
                    "{o}.tx >= coalesce({s}.horizon, CAST('0' AS xid8)) \
                     AND ({s}.horizon IS NOT NULL OR {o}.id > {s}.outbox_id)"
                )
            }
            (Dialect::Sqlite, "seen") => {
                format!("outbox_id = max(outbox_id, CAST({arg} AS INTEGER))")
            }
            (Dialect::Postgres { .. }, "seen") => {
                format!("horizon = GREATEST(horizon, CAST({arg} AS xid8))")
            }
            (Dialect::Sqlite, "outbox") => {
                assert_eq!(arg, "turn", "{{outbox turn}}");
                "SELECT 1".into()
            }
            (Dialect::Postgres { schema }, "outbox") => {
                assert_eq!(arg, "turn", "{{outbox turn}}");
                format!(
                    "SELECT pg_advisory_xact_lock(hashtext('{}.outbox'))",
                    schema.replace('\'', "''")
                )
            }
            (Dialect::Sqlite, "json_list") => "json_group_array".into(),
            (Dialect::Postgres { .. }, "json_list") => "json_agg".into(),
            (Dialect::Sqlite, "json_map") => "json_group_object".into(),
            (Dialect::Postgres { .. }, "json_map") => "json_object_agg".into(),
            (Dialect::Sqlite, "json_array") => "json_array".into(),
            (Dialect::Postgres { .. }, "json_array") => "json_build_array".into(),
            (Dialect::Sqlite, "json_column") => format!("json({arg})"),
            (Dialect::Postgres { .. }, "json_column") => arg.into(),
            (Dialect::Sqlite, "lbrace") => "char(123)".into(),
            (Dialect::Postgres { .. }, "lbrace") => "chr(123)".into(),
            (Dialect::Sqlite, "rbrace") => "char(125)".into(),
            (Dialect::Postgres { .. }, "rbrace") => "chr(125)".into(),
            (Dialect::Sqlite, "part") => {
                let (count, part) = arg.split_once(' ').expect("{part $N $M}");
                format!("rowid % {count} = {part}")
            }
            (Dialect::Postgres { .. }, "part") => {
                let (count, part) = arg.split_once(' ').expect("{part $N $M}");
                format!("mod(abs(CAST(hashtext(slug) AS bigint)), {count}) = {part}")
            }
            (Dialect::Sqlite, "text_list") => "group_concat".into(),
            (Dialect::Postgres { .. }, "text_list") => "string_agg".into(),
            (Dialect::Sqlite, "json_quote") => format!("json_quote({arg})"),
            (Dialect::Postgres { .. }, "json_quote") => format!("CAST(to_json({arg}) AS text)"),
            (Dialect::Sqlite, "epoch") => "CAST(strftime('%s', 'now') AS INTEGER)".into(),
            (Dialect::Postgres { .. }, "epoch") => {
                "CAST(extract(epoch FROM now()) AS bigint)".into()
            }
            (Dialect::Sqlite, "json_bool") => {
                format!("json(CASE WHEN {arg} THEN 'true' ELSE 'false' END)")
            }
            (Dialect::Postgres { .. }, "json_bool") => arg.into(),
            // SQLite names the schema on the index, Postgres on the table.
            (_, "index") => {
                let (index, table) = arg.split_once(' ').expect("{index name table}");
                match self {
                    Dialect::Sqlite => format!("{}.{index} ON {table}", self.schema()),
                    Dialect::Postgres { .. } => format!("{index} ON {}.{table}", self.schema()),
                }
            }
            (Dialect::Sqlite, "lock") => String::new(),
            (Dialect::Postgres { .. }, "lock") => format!("FOR UPDATE OF {arg} SKIP LOCKED"),
            _ => panic!("no such statement token: {{{name}}}"),
        }
    }

    /// The schema tables are named in: the admin schema (quoted) on Postgres, `main` on SQLite.
    /// Whether an `INSERT`, `UPDATE` or `DELETE` may run inside `WITH`, so that writes a
    /// transaction would make one after the other go as one statement (one round trip):
    /// Postgres allows it, SQLite does not.
    pub fn writes_in_with(&self) -> bool {
        matches!(self, Dialect::Postgres { .. })
    }

    pub fn schema(&self) -> &str {
        match self {
            Dialect::Sqlite => "main",
            Dialect::Postgres { schema } => schema,
        }
    }

    /// A moment as the time columns compare it: whole seconds on SQLite, where times are
    /// text compared as text; microseconds on Postgres, where an event written within this
    /// second is due now.
    pub fn moment(&self, at: std::time::SystemTime) -> String {
        match self {
            Dialect::Sqlite => humantime::format_rfc3339_seconds(at).to_string(),
            Dialect::Postgres { .. } => humantime::format_rfc3339_micros(at).to_string(),
        }
    }
}

/// A pool of either server.
#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Pool {
    /// A transaction that writes. On SQLite it takes the write lock at once: a deferred one
    /// that read first would be refused its first write (`SQLITE_BUSY_SNAPSHOT`) had another
    /// process written in between, where waiting for the lock is what is meant.
    pub async fn begin(&self) -> Result<Tx, ProviderError> {
        match self {
            Pool::Sqlite(p) => p.begin_with("BEGIN IMMEDIATE").await.map(Tx::Sqlite),
            Pool::Postgres(p) => p.begin().await.map(Tx::Postgres),
        }
        .map_err(ProviderError::sql("begin"))
    }
}

impl Pool {
    /// Closes the pool's connections, waiting for them: for a pool opened for one task alone.
    pub async fn close(&self) {
        match self {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

/// A transaction of either server; dropped without [`Tx::commit`], it rolls back.
pub enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    /// The Postgres connection beneath, for a statement only Postgres has.
    pub fn postgres(&mut self) -> Option<&mut sqlx::PgConnection> {
        match self {
            Tx::Postgres(t) => Some(t.as_mut()),
            Tx::Sqlite(_) => None,
        }
    }

    pub async fn commit(self) -> Result<(), ProviderError> {
        match self {
            Tx::Sqlite(t) => t.commit().await,
            Tx::Postgres(t) => t.commit().await,
        }
        .map_err(ProviderError::sql("commit"))
    }
}

/// Where a statement runs: on a pool's connection of its own, or in a transaction.
pub enum On<'a> {
    Pool(&'a Pool),
    Tx(&'a mut Tx),
    /// A Postgres connection of the caller's own (a state lock's, which holds the lock), or
    /// a transaction on it.
    Conn(&'a mut sqlx::PgConnection),
}

impl<'a> From<&'a Pool> for On<'a> {
    fn from(pool: &'a Pool) -> On<'a> {
        On::Pool(pool)
    }
}

impl<'a> From<&'a mut sqlx::PgConnection> for On<'a> {
    fn from(conn: &'a mut sqlx::PgConnection) -> On<'a> {
        On::Conn(conn)
    }
}

impl<'a> From<&'a mut Tx> for On<'a> {
    fn from(tx: &'a mut Tx) -> On<'a> {
        On::Tx(tx)
    }
}

/// A bound value.
#[derive(Clone, Debug)]
enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(bool),
}

/// A statement and its bound values, and what to call it when it fails.
#[must_use]
pub struct Statement {
    sql: String,
    args: Vec<Arg>,
    doing: &'static str,
}

/// The binds of one statement on one server: each value in turn.
macro_rules! bound {
    ($query:expr, $args:expr) => {{
        let mut q = $query;
        for arg in $args {
            q = match arg {
                Arg::Text(v) => q.bind(v.clone()),
                Arg::Int(v) => q.bind(*v),
                Arg::Bool(v) => q.bind(*v),
            };
        }
        q
    }};
}

/// The statement sent with sqlx's `$method` where `$on` says, on the server of its pool or
/// transaction, and its answer made the same for both by `$sqlite` and `$postgres`.
macro_rules! sent {
    ($st:ident, $on:expr, $method:ident, $sqlite:expr, $postgres:expr) => {{
        match $on {
            On::Pool(Pool::Sqlite(p)) => bound!(sqlx::query(&$st.sql), &$st.args)
                .$method(p)
                .await
                .map($sqlite),
            On::Pool(Pool::Postgres(p)) => bound!(sqlx::query(&$st.sql), &$st.args)
                .$method(p)
                .await
                .map($postgres),
            On::Tx(Tx::Sqlite(t)) => bound!(sqlx::query(&$st.sql), &$st.args)
                .$method(t.as_mut())
                .await
                .map($sqlite),
            On::Tx(Tx::Postgres(t)) => bound!(sqlx::query(&$st.sql), &$st.args)
                .$method(t.as_mut())
                .await
                .map($postgres),
            On::Conn(c) => bound!(sqlx::query(&$st.sql), &$st.args)
                .$method(c)
                .await
                .map($postgres),
        }
    }};
}

impl Statement {
    /// The same statement asked how the server would run it (SQLite's `EXPLAIN QUERY PLAN`,
    /// Postgres's `EXPLAIN`), for tests that hold a statement to the lookups it must make.
    pub fn explained(mut self, dialect: &Dialect) -> Statement {
        let prefix = match dialect {
            Dialect::Sqlite => "EXPLAIN QUERY PLAN ",
            Dialect::Postgres { .. } => "EXPLAIN ",
        };
        self.sql.insert_str(0, prefix);
        self
    }

    /// `text` spelled for `dialect`; `doing` says what a failure was doing ("read the registry").
    pub fn new(dialect: &Dialect, doing: &'static str, text: &str) -> Statement {
        Statement {
            sql: dialect.sql(text),
            args: Vec::new(),
            doing,
        }
    }

    pub fn text(mut self, value: impl Into<String>) -> Statement {
        self.args.push(Arg::Text(Some(value.into())));
        self
    }

    pub fn maybe_text(mut self, value: Option<impl Into<String>>) -> Statement {
        self.args.push(Arg::Text(value.map(Into::into)));
        self
    }

    pub fn int(mut self, value: i64) -> Statement {
        self.args.push(Arg::Int(Some(value)));
        self
    }

    pub fn maybe_int(mut self, value: Option<i64>) -> Statement {
        self.args.push(Arg::Int(value));
        self
    }

    pub fn bool(mut self, value: bool) -> Statement {
        self.args.push(Arg::Bool(value));
        self
    }

    /// A list, bound as a JSON array of its texts (read with `{each $N}`).
    pub fn list<T: AsRef<str>>(self, items: impl IntoIterator<Item = T>) -> Statement {
        let items: Vec<String> = items.into_iter().map(|i| i.as_ref().to_owned()).collect();
        self.text(serde_json::to_string(&items).expect("texts serialize"))
    }

    /// Rows, bound as a JSON array of arrays (read with `{rows $N …}`).
    pub fn rows(self, rows: Vec<serde_json::Value>) -> Statement {
        self.text(serde_json::Value::Array(rows).to_string())
    }

    /// A JSON value, bound as its text (`{json $N}`, `{entries $N}`).
    pub fn json(self, value: &serde_json::Value) -> Statement {
        self.text(value.to_string())
    }

    /// Runs it; how many rows it changed.
    pub async fn execute<'a>(self, on: impl Into<On<'a>>) -> Result<u64, ProviderError> {
        let done = sent!(self, on.into(), execute, |d| d.rows_affected(), |d| d
            .rows_affected());
        done.map_err(ProviderError::sql(self.doing))
    }

    /// Runs it; every row it returns.
    pub async fn fetch<'a>(self, on: impl Into<On<'a>>) -> Result<Vec<Row>, ProviderError> {
        let rows = sent!(
            self,
            on.into(),
            fetch_all,
            |r| r.into_iter().map(Row::Sqlite).collect(),
            |r| r.into_iter().map(Row::Postgres).collect()
        );
        rows.map_err(ProviderError::sql(self.doing))
    }

    /// Runs it; its first row, if it returns one.
    pub async fn first<'a>(self, on: impl Into<On<'a>>) -> Result<Option<Row>, ProviderError> {
        Ok(self.fetch(on).await?.into_iter().next())
    }
}

/// The one JSON document a statement folds a table into (`{json_list}`, `{json_map}`), read on
/// a task of its own so the reads of one refresh overlap (on SQLite, each on a connection's
/// thread) and each parses its document apart; await the result. `None` for an empty table
/// on Postgres, whose aggregate is then null. A driver hands rows over one at a time: at
/// 10,000 tenants that hand-off, not the server, was most of a refresh, and one row makes it
/// vanish.
pub fn spawn_json<T: serde::de::DeserializeOwned + Send + 'static>(
    dialect: &Dialect,
    pool: &Pool,
    doing: &'static str,
    sql: &'static str,
) -> impl std::future::Future<Output = Result<Option<T>, ProviderError>> {
    spawn_json_of(pool, Statement::new(dialect, doing, sql))
}

/// [`spawn_json`] of a statement with its parameters bound.
pub fn spawn_json_of<T: serde::de::DeserializeOwned + Send + 'static>(
    pool: &Pool,
    statement: Statement,
) -> impl std::future::Future<Output = Result<Option<T>, ProviderError>> {
    let doing = statement.doing;
    let pool = pool.clone();
    let task = tokio::spawn(async move {
        let row = statement.first(&pool).await?;
        let text = row
            .map(|r| r.maybe_text(0))
            .transpose()
            .map_err(ProviderError::sql(doing))?
            .flatten();
        text.map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(ProviderError::failed(format!("{doing}: unexpected shape")))
    });
    async move {
        task.await
            .map_err(ProviderError::failed(format!("{doing}: the query stopped")))?
    }
}

/// Runs `statements` in `tx`, in order: on Postgres as one statement, each but the last a
/// data-modifying `WITH` part, so the server parses and plans once (a mass purge's drops make
/// it plan every statement anew, in every session); on SQLite, which has no such parts, one
/// after another. Each must only change rows (no `WITH` of its own); on Postgres they all see
/// the rows as they were before any of them, so none may depend on another's changes.
pub async fn execute_together(
    tx: &mut Tx,
    doing: &'static str,
    statements: Vec<Statement>,
) -> Result<(), ProviderError> {
    if matches!(tx, Tx::Sqlite(_)) {
        for statement in statements {
            statement.execute(&mut *tx).await?;
        }
        return Ok(());
    }
    let mut parts = Vec::new();
    let mut args = Vec::new();
    for statement in statements {
        parts.push(renumbered(&statement.sql, args.len()));
        args.extend(statement.args);
    }
    let Some(last) = parts.pop() else {
        return Ok(());
    };
    let sql = match parts.is_empty() {
        true => last,
        false => {
            let with: Vec<String> = parts
                .iter()
                .enumerate()
                .map(|(n, part)| format!("s{n} AS ({part})"))
                .collect();
            format!("WITH {} {last}", with.join(", "))
        }
    };
    Statement { sql, args, doing }.execute(tx).await.map(drop)
}

/// `sql` with each placeholder `$N` as `$(N + by)`.
fn renumbered(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            let n: usize = rest[..digits].parse().expect("digits");
            out.push_str(&(n + by).to_string());
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    out
}

/// A row of either server, read by column index as text, integer or boolean.
pub enum Row {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

macro_rules! column {
    ($row:expr, $i:expr, $t:ty) => {
        match $row {
            Row::Sqlite(r) => r.try_get::<$t, _>($i),
            Row::Postgres(r) => r.try_get::<$t, _>($i),
        }
    };
}

impl Row {
    pub fn text(&self, i: usize) -> Result<String, sqlx::Error> {
        column!(self, i, String)
    }

    pub fn maybe_text(&self, i: usize) -> Result<Option<String>, sqlx::Error> {
        column!(self, i, Option<String>)
    }

    /// A text column as the row holds it, not copied: for a large one read once.
    pub fn maybe_str(&self, i: usize) -> Result<Option<&str>, sqlx::Error> {
        column!(self, i, Option<&str>)
    }

    /// An integer column, read as a 64-bit one: a statement casts a narrower Postgres
    /// column (`CAST(attempts AS BIGINT)`).
    pub fn int(&self, i: usize) -> Result<i64, sqlx::Error> {
        column!(self, i, i64)
    }

    pub fn maybe_int(&self, i: usize) -> Result<Option<i64>, sqlx::Error> {
        column!(self, i, Option<i64>)
    }

    pub fn bool(&self, i: usize) -> Result<bool, sqlx::Error> {
        column!(self, i, bool)
    }
}

/// Each row made into a `T` by `read`; a column that does not read fails as `doing`.
pub fn read_rows<T>(
    rows: &[Row],
    doing: &'static str,
    read: impl Fn(&Row) -> Result<T, sqlx::Error>,
) -> Result<Vec<T>, ProviderError> {
    rows.iter()
        .map(read)
        .collect::<Result<_, _>>()
        .map_err(ProviderError::sql(doing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_spelled_for_each_server() {
        let text =
            "SELECT {stamp at} FROM {schema}.t WHERE at < {time $1} AND n IN ({each $2}) {lock t}";
        assert_eq!(
            Dialect::Sqlite.sql(text),
            "SELECT at FROM main.t WHERE at < $1 AND n IN (SELECT value FROM json_each($2)) "
        );
        let pg = Dialect::Postgres {
            schema: "\"admin\"".into(),
        };
        assert_eq!(
            pg.sql(text),
            "SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM \"admin\".t \
             WHERE at < CAST($1 AS timestamptz) AND n IN (SELECT jsonb_array_elements_text(CAST($2 AS jsonb)) \
             LIMIT jsonb_array_length(CAST($2 AS jsonb))) FOR UPDATE OF t SKIP LOCKED"
        );
    }

    #[test]
    fn tables_of_bound_json_read_alike() {
        let text = "SELECT a, b FROM {rows $1 a b} AS r, {entries $2} WHERE {unleased d $3} \
                    AND x = {erase payload owner_email} {locked}";
        assert_eq!(
            Dialect::Sqlite.sql(text),
            "SELECT a, b FROM (SELECT json_extract(value, '$[0]') AS a, json_extract(value, '$[1]') AS b, \
             key AS i FROM json_each($1)) AS r, json_each($2) WHERE true \
             AND x = json_set(payload, '$.owner_email', NULL) "
        );
        let pg = Dialect::Postgres { schema: "s".into() };
        assert_eq!(
            pg.sql(text),
            "SELECT a, b FROM (SELECT r->>0 AS a, r->>1 AS b, e.n AS i FROM \
             jsonb_array_elements(CAST($1 AS jsonb)) WITH ORDINALITY AS e (r, n) \
             LIMIT jsonb_array_length(CAST($1 AS jsonb))) AS r, \
             jsonb_each_text(CAST($2 AS jsonb)) WHERE (d.lease_until IS NULL OR \
             d.lease_until < CAST($3 AS timestamptz)) \
             AND x = jsonb_set(payload, ARRAY['owner_email'], 'null') FOR UPDATE"
        );
    }

    #[test]
    fn a_table_folds_into_one_json_document_on_both_servers() {
        let text = "SELECT CAST({json_map}(id, {json_column m}) AS TEXT) FROM \
                    (SELECT id, {json_map}(k, {json_bool enabled}) AS m FROM t GROUP BY id) AS f; \
                    SELECT CAST({json_list}({json_array}(id, {json_column labels})) AS TEXT) FROM t";
        assert_eq!(
            Dialect::Sqlite.sql(text),
            "SELECT CAST(json_group_object(id, json(m)) AS TEXT) FROM (SELECT id, \
             json_group_object(k, json(CASE WHEN enabled THEN 'true' ELSE 'false' END)) AS m FROM t \
             GROUP BY id) AS f; SELECT CAST(json_group_array(json_array(id, json(labels))) AS TEXT) FROM t"
        );
        let pg = Dialect::Postgres { schema: "s".into() };
        assert_eq!(
            pg.sql(text),
            "SELECT CAST(json_object_agg(id, m) AS TEXT) FROM (SELECT id, json_object_agg(k, enabled) \
             AS m FROM t GROUP BY id) AS f; SELECT CAST(json_agg(json_build_array(id, labels)) AS TEXT) FROM t"
        );
    }

    #[test]
    fn placeholders_move_past_the_statements_before() {
        assert_eq!(
            renumbered("UPDATE t SET a = $1 WHERE b = $12 AND c = '$[0]'", 3),
            "UPDATE t SET a = $4 WHERE b = $15 AND c = '$[0]'"
        );
    }

    #[test]
    fn the_outbox_is_read_from_a_mark() {
        let text = "{horizon}; SELECT 1 FROM o, s WHERE {unseen o s}; UPDATE s SET {seen $1}";
        assert_eq!(
            Dialect::Sqlite.sql(text),
            "SELECT CAST(coalesce(max(id), 0) AS TEXT) FROM main.outbox; SELECT 1 FROM o, s \
             WHERE o.id > s.outbox_id; UPDATE s SET outbox_id = max(outbox_id, CAST($1 AS INTEGER))"
        );
        let pg = Dialect::Postgres { schema: "s".into() };
        assert_eq!(
            pg.sql(text),
            "SELECT CAST(pg_snapshot_xmin(pg_current_snapshot()) AS TEXT); SELECT 1 FROM o, s \
             WHERE o.tx >= coalesce(s.horizon, CAST('0' AS xid8)) \
             AND (s.horizon IS NOT NULL OR o.id > s.outbox_id); \
             UPDATE s SET horizon = GREATEST(horizon, CAST($1 AS xid8))"
        );
    }

    #[test]
    #[should_panic(expected = "no such statement token")]
    fn an_unknown_token_is_a_bug() {
        Dialect::Sqlite.sql("SELECT {nope}");
    }
}

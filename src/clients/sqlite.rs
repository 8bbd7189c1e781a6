//! Opening SQLite databases for the local target.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::clients::error::ProviderError;

/// Opens (creating if asked) a database with one connection: the local target's writes are
/// serialized through it, so they never meet SQLite's busy errors.
pub async fn open(
    path: &Path,
    create: bool,
    journal: SqliteJournalMode,
) -> Result<SqlitePool, ProviderError> {
    connect(path, create, journal, 1).await
}

/// [`open`] for a database made with pages of `page_size` bytes (an existing one keeps its
/// own): the state's records, where a one-tenant change writes its record's page twice (its
/// write-ahead log, then the file), and a 4 KB page for a 1.5 KB record is most of what is
/// written.
pub async fn open_paged(
    path: &Path,
    journal: SqliteJournalMode,
    page_size: u32,
) -> Result<SqlitePool, ProviderError> {
    make_private(path)?;
    paged_pool(path, true, journal, 1, Some(page_size))
        .await
        .map_err(ProviderError::sql(format!("open {}", path.display())))
}

/// Opens an existing database read-only with `connections` connections, so a refresh can run
/// its queries side by side (readers never block each other in WAL mode). `None` when the
/// database holds nothing at all: its creation was cut short, and it is read as absent.
///
/// A writer killed mid-transaction leaves a hot rollback journal, which only a connection
/// that may write can roll back: a read-only one fails with `SQLITE_READONLY_ROLLBACK`.
/// The first read here finds it; the database is then opened once to write, which rolls it
/// back, and read-only again. A file with no hot journal is never opened to write, so a plan
/// leaves it as it was.
pub async fn open_reader(
    path: &Path,
    connections: u32,
) -> Result<Option<SqlitePool>, ProviderError> {
    narrow(path)?;
    let opened = |path| async move {
        let pool = pool(path, false, SqliteJournalMode::Wal, connections).await?;
        match first_read(&pool).await {
            Ok(0) => {
                pool.close().await;
                Ok(None)
            }
            Ok(_) => Ok(Some(pool)),
            Err(e) => {
                pool.close().await;
                Err(e)
            }
        }
    };
    match opened(path).await {
        Ok(pool) => Ok(pool),
        Err(e) if left_by_a_kill(&e) => {
            recover(path).await?;
            opened(path)
                .await
                .map_err(ProviderError::sql(format!("open {}", path.display())))
        }
        Err(e) => Err(ProviderError::sql(format!("open {}", path.display()))(e)),
    }
}

/// How many tables, indexes and views the database has: a read that takes SQLite's shared
/// lock, which is when SQLite looks for a hot journal.
async fn first_read(pool: &SqlitePool) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM sqlite_master")
        .fetch_one(pool)
        .await?;
    Ok(n)
}

/// Whether a read-only connection failed because the file needs a writer first: a hot
/// journal to roll back, or a write-ahead log to recover (`SQLITE_READONLY_*`, extended
/// codes of `SQLITE_READONLY`, 8).
fn left_by_a_kill(e: &sqlx::Error) -> bool {
    let Some(code) = e
        .as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<i32>().ok())
    else {
        return false;
    };
    code & 0xff == 8 && code != 8
}

/// Opens the database once with a connection that may write, without changing its journal
/// mode, and reads from it: SQLite rolls a hot journal back (or recovers its log) then.
async fn recover(path: &Path) -> Result<(), ProviderError> {
    let what = || format!("roll back what a killed writer left in {}", path.display());
    let opts = SqliteConnectOptions::from_str("sqlite://")
        .map_err(ProviderError::sql("sqlite options"))?
        .filename(path)
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(30));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .map_err(ProviderError::sql(what()))?;
    let read = first_read(&pool).await;
    pool.close().await;
    read.map(drop).map_err(ProviderError::sql(what()))
}

/// Opens an existing database with one connection that may write, for a smoke test, whose
/// writes are rolled back; a database that is not there is an error, never created.
pub async fn open_existing(path: &Path) -> Result<SqlitePool, ProviderError> {
    narrow(path)?;
    let opts = SqliteConnectOptions::from_str("sqlite://")
        .map_err(ProviderError::sql("sqlite options"))?
        .filename(path)
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(30));
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .map_err(ProviderError::sql(format!("open {}", path.display())))
}

async fn connect(
    path: &Path,
    create: bool,
    journal: SqliteJournalMode,
    connections: u32,
) -> Result<SqlitePool, ProviderError> {
    if create {
        make_private(path)?;
    } else {
        narrow(path)?;
    }
    pool(path, create, journal, connections)
        .await
        .map_err(ProviderError::sql(format!("open {}", path.display())))
}

/// A pool that may write and create the file (`create`), or only reads it.
async fn pool(
    path: &Path,
    create: bool,
    journal: SqliteJournalMode,
    connections: u32,
) -> Result<SqlitePool, sqlx::Error> {
    paged_pool(path, create, journal, connections, None).await
}

async fn paged_pool(
    path: &Path,
    create: bool,
    journal: SqliteJournalMode,
    connections: u32,
    page_size: Option<u32>,
) -> Result<SqlitePool, sqlx::Error> {
    let mut opts = SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .create_if_missing(create)
        .read_only(!create)
        .busy_timeout(Duration::from_secs(30));
    // Set before the journal mode, whose setting makes the file: a file already made keeps
    // the size it has.
    if let Some(size) = page_size {
        opts = opts.page_size(size);
    }
    // Setting the journal mode writes to the file, so only writers set it.
    if create {
        opts = opts.journal_mode(journal);
    }
    SqlitePoolOptions::new()
        .max_connections(connections)
        .connect_with(opts)
        .await
}

/// Runs `sql` (statements separated by `;`) in one transaction.
pub async fn in_one_transaction(pool: &SqlitePool, sql: &str) -> Result<(), sqlx::Error> {
    use sqlx::Executor as _;
    let mut tx = pool.begin().await?;
    tx.as_mut().execute(sql).await?;
    tx.commit().await
}

/// The database file made (empty, which SQLite takes as a new database) before SQLite opens
/// it, readable by its owner only: SQLite gives its journal and write-ahead log the
/// database file's own mode. A database made by an older version is narrowed, its
/// journal and log with it.
fn make_private(path: &Path) -> Result<(), ProviderError> {
    let failed = |what: &Path| ProviderError::io(format!("create {}", what.display()));
    if let Some(dir) = path.parent() {
        crate::private_files::own_dir(dir).map_err(failed(dir))?;
    }
    crate::private_files::touch(path).map_err(failed(path))?;
    narrow(path)
}

/// A database that is there, its journal and log, and its folder, narrowed to their owner
/// (made by an older version); what is missing is left missing.
fn narrow(path: &Path) -> Result<(), ProviderError> {
    let failed = |what: &Path| ProviderError::io(format!("narrow the mode of {}", what.display()));
    if !path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        crate::private_files::tighten(dir).map_err(failed(dir))?;
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let file = std::path::PathBuf::from(file);
        crate::private_files::tighten(&file).map_err(failed(&file))?;
    }
    Ok(())
}

/// The tenant's own tables in its database, by name: not SQLite's, not ours.
pub async fn user_tables(pool: &SqlitePool) -> Result<Vec<String>, ProviderError> {
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'table'
           AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_tenant\\_reconcile\\_%' ESCAPE '\\'
         ORDER BY name",
    )
    .fetch_all(pool)
    .await
    .map_err(ProviderError::sql("list the tables"))?;
    Ok(tables.into_iter().map(|(t,)| t).collect())
}

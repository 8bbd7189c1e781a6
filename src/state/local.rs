//! The local state backend: a SQLite file of records (`records.rs`) beside the path the
//! config names, and a lock file.
//!
//! - `state.db` (the named path with the extension `db`) holds the header and a record per
//!   tenant; a step's checkpoint writes its tenant's record alone. SQLite over a file per
//!   tenant: one read loads 100,000 records where a folder would need 100,000 opens, a
//!   write is a transaction whatever it changes, and `sqlite3 state.db` or
//!   `tenant-reconcile show --json` reads it.
//! - `state.json` (the named path) is what an older tenant-reconcile wrote, one document
//!   with a journal of checkpoints beside it (`state.json.journal`). It is read as it is
//!   until the first run that takes the lock converts it: the document, with the journal's
//!   entries, is copied to `state.json.v1-backup`, written as records in one transaction,
//!   and then replaced by a stub that says where the records are, which an older
//!   tenant-reconcile refuses as a newer format. A conversion cut short leaves the document
//!   in place and is done again from it.
//! - `state.json.lock` is held with an OS file lock, which the kernel releases when the
//!   holder dies, and holds the holder's details for whoever is kept waiting.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use sqlx::sqlite::SqliteJournalMode;
use sqlx::SqlitePool;

use super::backend::{LockInfo, PlanClaims, StateBackend, StateError, StateLock, Wait};
use super::record_lock::RecordLock;
use super::record_writer::{run_sqlite, RecordWriter};
use super::records::{self, Checked, Records};
use super::shared::{self, SharesRecords};
use super::{Checkpoint, State};
use crate::clients::error::ProviderError;
use crate::clients::sql::Row;
use crate::clients::sql::{Dialect, Pool, Statement};
use crate::private_files;

pub struct LocalBackend {
    path: PathBuf,
}

impl LocalBackend {
    pub fn new(path: PathBuf) -> LocalBackend {
        LocalBackend { path }
    }

    fn io<'a>(
        action: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(std::io::Error) -> StateError + 'a {
        move |source| StateError::Io {
            action,
            path: path.display().to_string(),
            source,
        }
    }
}

#[async_trait]
impl StateBackend for LocalBackend {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    async fn load(&self) -> Result<State, StateError> {
        self.load_some(None).await
    }

    async fn load_tenants(&self, slugs: &BTreeSet<String>) -> Result<State, StateError> {
        self.load_some(Some(slugs)).await
    }

    async fn lock(&self, info: LockInfo, wait: &Wait) -> Result<Box<dyn StateLock>, StateError> {
        let mut file = self.lock_file(wait, false).await?;
        let lock_path = sibling(&self.path, ".lock");
        file.set_len(0).map_err(Self::io("write", &lock_path))?;
        file.seek(SeekFrom::Start(0))
            .map_err(Self::io("write", &lock_path))?;
        let body = serde_json::to_vec_pretty(&info).expect("lock info serializes");
        file.write_all(&body)
            .map_err(Self::io("write", &lock_path))?;
        let writer = self.writer(file, true);
        // A state in the one-document format is converted now; a new one is made by its
        // first write, so a run that writes nothing (declined, refused) leaves no file.
        if let Some(bytes) = self.document()?.filter(|b| !records::is_stub(b)) {
            self.convert(&bytes, &writer).await?;
        }
        Ok(Box::new(RecordLock::whole(
            self.records(),
            Arc::new(writer),
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
impl SharesRecords for LocalBackend {
    fn records(&self) -> Records {
        LocalBackend::records(self)
    }

    /// A writer for a run that holds some tenants only: the lock file held shared, and the
    /// run's own file, which says it is alive. `None` when the state cannot be shared: not
    /// kept as records, or not written yet (its conversion and first write are the whole
    /// state's).
    async fn shared_writer(
        &self,
        info: &LockInfo,
        wait: &Wait,
    ) -> Result<Option<Arc<dyn RecordWriter>>, StateError> {
        let shared = match self.document()? {
            Some(bytes) => records::is_stub(&bytes) && self.db().exists(),
            None => false,
        };
        if !shared {
            return Ok(None);
        }
        let file = self.lock_file(wait, true).await?;
        let mut writer = self.writer(file, false);
        writer.run_file = Some(RunFile::hold(&self.runs(), &info.id)?);
        let writer = Arc::new(writer);
        let header = writer.fetch(self.records().header_statement()).await;
        if !matches!(&header, Ok(rows) if !rows.is_empty()) {
            writer.release().await?;
            header?;
            return Ok(None);
        }
        Ok(Some(writer))
    }
}

impl LocalBackend {
    /// The lock file, locked: alone (`shared` false: the whole state), or beside others
    /// that hold some tenants. Waits as `wait` says for a holder it cannot go beside.
    async fn lock_file(&self, wait: &Wait, shared: bool) -> Result<File, StateError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        private_files::create_dir_all(dir).map_err(Self::io("create", dir))?;
        // The state names every tenant's owner: a state made by an older version with
        // looser modes is narrowed the first time it is locked again.
        for suffix in ["", ".backup", ".journal", ".v1-backup"] {
            let path = sibling(&self.path, suffix);
            private_files::tighten(&path).map_err(Self::io("narrow the mode of", &path))?;
        }
        let lock_path = sibling(&self.path, ".lock");
        let mut file = private_files::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(Self::io("open", &lock_path))?;
        private_files::narrow(&file).map_err(Self::io("narrow the mode of", &lock_path))?;
        let started = Instant::now();
        loop {
            let tried = match shared {
                true => file.try_lock_shared(),
                false => file.try_lock(),
            };
            match tried {
                Ok(()) => return Ok(file),
                Err(fs::TryLockError::WouldBlock) => {
                    if started.elapsed() >= wait.timeout {
                        // The file names a holder of the whole state; runs that hold some
                        // tenants write nothing there.
                        let mut text = String::new();
                        let _ = file.read_to_string(&mut text);
                        let holder = serde_json::from_str::<LockInfo>(&text)
                            .map(|i| i.describe())
                            .unwrap_or_else(|_| {
                                "runs applying some of its tenants (`apply --tenant` or `--shard`)"
                                    .to_string()
                            });
                        return Err(StateError::Locked { holder });
                    }
                    wait.poll().await?;
                }
                Err(fs::TryLockError::Error(e)) => return Err(Self::io("lock", &lock_path)(e)),
            }
        }
    }

    fn writer(&self, lock: File, whole: bool) -> LocalWriter {
        LocalWriter {
            db: self.db(),
            stub: self.path.clone(),
            pool: tokio::sync::OnceCell::new(),
            lock,
            whole,
            runs: self.runs(),
            run_file: None,
        }
    }

    /// Where runs that hold some tenants keep a file locked while they live.
    fn runs(&self) -> PathBuf {
        sibling(&self.path, ".runs")
    }
}

impl LocalBackend {
    /// Where the records are: the named path with the extension `db`.
    fn db(&self) -> PathBuf {
        self.path.with_extension("db")
    }

    fn records(&self) -> Records {
        Records {
            dialect: Dialect::Sqlite,
            name: "state".into(),
        }
    }

    /// The document at the named path, if there is one.
    fn document(&self) -> Result<Option<Vec<u8>>, StateError> {
        match fs::read(&self.path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io("read", &self.path)(e)),
        }
    }

    /// A one-document state, with the journal's checkpoints on top.
    fn load_document(&self, bytes: &[u8]) -> Result<State, StateError> {
        let mut state = State::decode(bytes, || self.describe())?;
        let journal = sibling(&self.path, ".journal");
        match fs::read_to_string(&journal) {
            Ok(text) => replay(&mut state, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Self::io("read", &journal)(e)),
        }
        Ok(state)
    }

    /// The state, or with `slugs` the records of those tenants only (beside the header).
    async fn load_some(&self, slugs: Option<&BTreeSet<String>>) -> Result<State, StateError> {
        let mut state = match self.document()? {
            Some(bytes) if !records::is_stub(&bytes) => self.load_document(&bytes)?,
            // The stub is written when the records' file is made, before any record: a
            // file without a header is a state not written yet.
            Some(_) if self.db().exists() => {
                self.read_records(slugs).await?.unwrap_or_else(State::empty)
            }
            Some(_) => {
                return Err(StateError::Corrupt {
                    path: self.describe(),
                    message: format!("its records are missing: {}", self.db().display()),
                })
            }
            None => State::empty(),
        };
        if let (Some(slugs), None) = (slugs, &state.scope) {
            state.narrow_to(slugs);
        }
        Ok(state)
    }

    async fn read_records(
        &self,
        slugs: Option<&BTreeSet<String>>,
    ) -> Result<Option<State>, StateError> {
        let db = self.db();
        let Some(pool) = crate::clients::sqlite::open_reader(&db, records::READ_PARTS as u32 + 1)
            .await
            .map_err(store("open the state's records"))?
        else {
            return Ok(None);
        };
        let pool = Pool::Sqlite(pool);
        let describe = db.display().to_string();
        let read = match slugs {
            Some(slugs) => self.records().read_some(&pool, &describe, slugs).await,
            None => self.records().read(&pool, &describe).await,
        };
        pool.close().await;
        read
    }

    /// Makes the one-document state in `bytes` records: backed up, written, then replaced
    /// by the stub. Each part may be done again, so a conversion cut short anywhere is
    /// finished by the next run.
    async fn convert(&self, bytes: &[u8], writer: &LocalWriter) -> Result<(), StateError> {
        let mut state = self.load_document(bytes)?;
        let backup = sibling(&self.path, ".v1-backup");
        let pool = writer.pool().await?;
        let header = Statement::fetch(
            self.records().header_statement(),
            &Pool::Sqlite(pool.clone()),
        )
        .await
        .map_err(store("read the state's header"))?;
        if !header.is_empty() {
            // Records stand already. The document is the one they were made from (a
            // conversion cut short before its stub), or one an earlier tenant-reconcile
            // wrote beside them, which neither may replace.
            let converted = fs::read(&backup)
                .ok()
                .and_then(|b| State::decode(&b, || self.describe()).ok())
                .is_some_and(|b| b.lineage == state.lineage && b.serial == state.serial);
            if !converted {
                return Err(StateError::Corrupt {
                    path: self.describe(),
                    message: format!(
                        "it was written by an earlier tenant-reconcile after this state became records ({}); nothing was done\n  hint: the records are the state; keep what the document holds apart, remove it, and run again",
                        self.db().display()
                    ),
                });
            }
        } else {
            let whole = serde_json::to_vec(&state).expect("state serializes");
            private_files::write_atomic(&backup, &whole).map_err(Self::io("back up", &backup))?;
            run_sqlite(pool, records::conversion(&self.records(), &mut state)).await?;
        }
        write_stub(&self.path, &self.db())?;
        let journal = sibling(&self.path, ".journal");
        match fs::remove_file(&journal) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Self::io("remove", &journal)(e))
            }
            _ => Ok(()),
        }
    }
}

/// The stub at `path` that says the records are in `db`.
fn write_stub(path: &Path, db: &Path) -> Result<(), StateError> {
    let name = db.file_name().unwrap_or_default().to_string_lossy();
    private_files::write_atomic(path, &records::stub(&name))
        .map_err(LocalBackend::io("write", path))
}

fn store(context: &'static str) -> impl FnOnce(ProviderError) -> StateError {
    move |source| StateError::Store {
        context: context.to_string(),
        source,
    }
}

/// The records' file, opened (and made, with the stub beside it, for a new state) by the
/// first write, and the lock file, let go of once that file is closed.
struct LocalWriter {
    db: PathBuf,
    stub: PathBuf,
    pool: tokio::sync::OnceCell<SqlitePool>,
    lock: File,
    /// Held alone, its holder's details written in it.
    whole: bool,
    /// Where runs keep their files ([`RunFile`]), and this run's, for a run that holds
    /// some tenants.
    runs: PathBuf,
    run_file: Option<RunFile>,
}

/// A file locked by a run while it lives, named by its lock id: the kernel lets go of the
/// lock when the run's process ends however it ends, so another run can tell a lease of a
/// run that is gone, on any host sharing the folder, in any process namespace.
struct RunFile {
    path: PathBuf,
    file: File,
}

impl RunFile {
    fn hold(dir: &Path, run: &str) -> Result<RunFile, StateError> {
        private_files::create_dir_all(dir).map_err(LocalBackend::io("create", dir))?;
        let path = dir.join(format!("{run}.lock"));
        let file = private_files::create(&path).map_err(LocalBackend::io("create", &path))?;
        file.try_lock().map_err(|e| StateError::Io {
            action: "lock",
            path: path.display().to_string(),
            source: e.into(),
        })?;
        Ok(RunFile { path, file })
    }

    /// Whether the run `run` still holds its file. A name that is not a lock id (not
    /// this tool's) is not looked for, and reads as alive: its lease then runs out.
    fn alive(dir: &Path, run: &str) -> bool {
        if uuid::Uuid::parse_str(run).is_err() {
            return true;
        }
        let path = dir.join(format!("{run}.lock"));
        let Ok(file) = File::open(&path) else {
            return false;
        };
        match file.try_lock() {
            Ok(()) => {
                let _ = fs::remove_file(&path);
                false
            }
            Err(_) => true,
        }
    }
}

impl Drop for RunFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

impl LocalWriter {
    async fn pool(&self) -> Result<&SqlitePool, StateError> {
        self.pool
            .get_or_try_init(|| async {
                let pool = crate::clients::sqlite::open_paged(
                    &self.db,
                    SqliteJournalMode::Wal,
                    records::PAGE_SIZE,
                )
                .await
                .map_err(store("open the state's records"))?;
                for table in records::TABLES {
                    Statement::new(&Dialect::Sqlite, "create the state's tables", table)
                        .execute(&Pool::Sqlite(pool.clone()))
                        .await
                        .map_err(store("create the state's tables"))?;
                }
                if !self.stub.exists() {
                    write_stub(&self.stub, &self.db)?;
                }
                Ok(pool)
            })
            .await
    }
}

#[async_trait]
impl RecordWriter for LocalWriter {
    async fn run(&self, statements: Vec<Checked>) -> Result<(), StateError> {
        run_sqlite(self.pool().await?, statements).await
    }

    async fn fetch(&self, statement: Statement) -> Result<Vec<Row>, StateError> {
        let pool = Pool::Sqlite(self.pool().await?.clone());
        statement
            .fetch(&pool)
            .await
            .map_err(store("read the state's records"))
    }

    async fn alive(&self, run: &str, _info: Option<&LockInfo>) -> bool {
        RunFile::alive(&self.runs, run)
    }

    async fn release(&self) -> Result<(), StateError> {
        if let Some(pool) = self.pool.get() {
            pool.close().await;
        }
        // Only the whole state's holder wrote its details into the file.
        if self.whole {
            let _ = self.lock.set_len(0);
        }
        self.lock.unlock().map_err(|source| StateError::Io {
            action: "unlock",
            path: "the state's lock file".into(),
            source,
        })
    }
}

/// Applies the journal's entries that belong on top of this snapshot. A torn last line
/// (the process died mid-write) is ignored: its step is simply seen again by refresh.
fn replay(state: &mut State, text: &str) {
    state.replay(
        text.lines()
            .filter_map(|line| serde_json::from_str::<Checkpoint>(line).ok()),
    );
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

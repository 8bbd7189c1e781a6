//! The local state backend: `state.json` in the local target's folder, beside a checkpoint
//! journal and a lock file.
//!
//! - `state.json` is replaced atomically (write a temporary file, fsync, rename), and the
//!   previous version is kept as `state.json.backup`.
//! - `state.json.journal` gets one JSON line per checkpoint. A line costs one `write`, so
//!   every step is recorded the moment it succeeds even across 10,000 tenants; a process
//!   killed with -9 leaves its lines in the page cache, where the next load finds them.
//! - `state.json.lock` is held with an OS file lock, which the kernel releases when the
//!   holder dies, and holds the holder's details for whoever is kept waiting.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use async_trait::async_trait;

use super::backend::{LockInfo, StateBackend, StateError, StateLock, Wait};
use super::{Checkpoint, State};
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
        let mut state = match fs::read(&self.path) {
            Ok(bytes) => State::decode(&bytes, || self.describe())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::empty(),
            Err(e) => return Err(Self::io("read", &self.path)(e)),
        };
        let journal = sibling(&self.path, ".journal");
        match fs::read_to_string(&journal) {
            Ok(text) => replay(&mut state, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Self::io("read", &journal)(e)),
        }
        Ok(state)
    }

    async fn lock(&self, info: LockInfo, wait: &Wait) -> Result<Box<dyn StateLock>, StateError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        private_files::create_dir_all(dir).map_err(Self::io("create", dir))?;
        // The state names every tenant's owner: a state made by an older version with
        // looser modes is narrowed the first time it is locked again.
        for suffix in ["", ".backup", ".journal"] {
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
            match file.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) => {
                    if started.elapsed() >= wait.timeout {
                        let mut text = String::new();
                        let _ = file.read_to_string(&mut text);
                        let holder = serde_json::from_str::<LockInfo>(&text)
                            .map(|i| i.describe())
                            .unwrap_or_else(|_| {
                                format!("another process (see {})", lock_path.display())
                            });
                        return Err(StateError::Locked { holder });
                    }
                    wait.poll().await?;
                }
                Err(fs::TryLockError::Error(e)) => return Err(Self::io("lock", &lock_path)(e)),
            }
        }
        file.set_len(0).map_err(Self::io("write", &lock_path))?;
        file.seek(SeekFrom::Start(0))
            .map_err(Self::io("write", &lock_path))?;
        let body = serde_json::to_vec_pretty(&info).expect("lock info serializes");
        file.write_all(&body)
            .map_err(Self::io("write", &lock_path))?;
        let journal_path = sibling(&self.path, ".journal");
        let journal = private_files::options()
            .create(true)
            .append(true)
            .open(&journal_path)
            .map_err(Self::io("open", &journal_path))?;
        Ok(Box::new(LocalLock {
            path: self.path.clone(),
            journal_path,
            journal,
            lock: file,
        }))
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

struct LocalLock {
    path: PathBuf,
    journal_path: PathBuf,
    journal: File,
    lock: File,
}

#[async_trait]
impl StateLock for LocalLock {
    async fn checkpoint(&self, entry: &Checkpoint) -> Result<(), StateError> {
        let mut line = serde_json::to_vec(entry).expect("state serializes");
        line.push(b'\n');
        // One append per entry: a kill between entries never leaves half of one behind
        // except at the very end, which `replay` skips; concurrent appends to a file opened
        // for appending never interleave.
        (&self.journal)
            .write_all(&line)
            .map_err(LocalBackend::io("write", &self.journal_path))
    }

    async fn persist(&mut self, state: &State) -> Result<(), StateError> {
        let tmp = sibling(&self.path, ".tmp");
        let body = serde_json::to_vec(state).expect("state serializes");
        {
            let mut f = private_files::create(&tmp).map_err(LocalBackend::io("write", &tmp))?;
            f.write_all(&body)
                .map_err(LocalBackend::io("write", &tmp))?;
            f.write_all(b"\n")
                .map_err(LocalBackend::io("write", &tmp))?;
            f.sync_all().map_err(LocalBackend::io("sync", &tmp))?;
        }
        if self.path.exists() {
            let backup = sibling(&self.path, ".backup");
            fs::copy(&self.path, &backup)
                .and_then(|_| private_files::tighten(&backup))
                .map_err(LocalBackend::io("back up", &self.path))?;
        }
        fs::rename(&tmp, &self.path).map_err(LocalBackend::io("replace", &self.path))?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        // Entries in the journal are now part of the snapshot; their base serial no longer
        // matches, so even if truncation fails they would be ignored.
        self.journal
            .set_len(0)
            .map_err(LocalBackend::io("truncate", &self.journal_path))
    }

    async fn unlock(self: Box<Self>) -> Result<(), StateError> {
        let _ = self.lock.set_len(0);
        self.lock
            .unlock()
            .map_err(LocalBackend::io("unlock", &self.path))
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

//! The seam every state backend implements: load, lock, then checkpoint and persist
//! through the lock.
//!
//! Writes go through [`StateLock`], so only the lock holder can write. A checkpoint records
//! one tenant the moment a step succeeds and must be cheap (the local and Postgres backends
//! write that tenant's record alone, `records.rs`); `persist` writes what the state holds
//! beyond its checkpoints (the header, tenants recorded in memory, removals). A state in
//! the one-document format (the s3 backend's, and the others' before their first lock
//! converts it) replays on load the checkpoints a killed run left behind, so nothing that
//! was done is forgotten.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Checkpoint, State};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the state is locked by {holder}\n  hint: wait for it to finish, or pass --lock-timeout 5m to wait")]
    Locked { holder: String },
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    // Each says what it was doing; its cause is said after it, by whoever reports it.
    #[error("{context}")]
    Sql {
        context: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("{context}")]
    Postgres {
        context: String,
        #[source]
        source: crate::clients::error::ProviderError,
    },
    #[error("{context}")]
    Store {
        context: String,
        #[source]
        source: crate::clients::error::ProviderError,
    },
    #[error("interrupted while waiting for the state's lock; nothing was done")]
    Interrupted,
    #[error("write a checkpoint: {0}")]
    Checkpoint(String),
    /// A record or the header was not where this run last saw it: another run wrote it.
    #[error("{0}")]
    MovedOn(String),
    #[error("{what} is not locked: there is nothing to unlock")]
    NotLocked { what: String },
    #[error(
        "the lock is not {given}: it is held by {holder}\n  hint: pass the lock id shown there"
    )]
    WrongLockId { given: String, holder: String },
    #[error("this run's lock on the state was removed (it is now held by {holder}); the state was not written\n  hint: run plan again to see where things stand")]
    LockLost { holder: String },
    #[error("{0}")]
    CannotForceUnlock(String),
    #[error("{0}")]
    CannotClaim(String),
    /// The store cannot keep the state safely (it ignores conditional writes).
    #[error("{0}")]
    Unsafe(String),
    #[error("lost the state while applying: {cause}; this run stopped starting tenants ({applied} applied, {failed} failed, {not_started} not started)\n  hint: nothing more was written, and a lock held by a lost connection is released; run apply again once the state backend is back: finished steps are not repeated")]
    Lost {
        cause: String,
        applied: usize,
        failed: usize,
        not_started: usize,
    },
    #[error("the state in {path} is not readable: {message}")]
    Corrupt { path: String, message: String },
    #[error("the state in {path} has format version {found}; this tenant-reconcile reads version {supported}\n  hint: upgrade tenant-reconcile")]
    Version {
        path: String,
        found: u32,
        supported: u32,
    },
}

/// Who holds a lock, written into it so a blocked run can say whom it waits for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    pub id: String,
    pub operation: String,
    pub who: String,
    pub host: String,
    pub pid: u32,
    pub created: String,
    pub version: String,
}

/// The process's user id, for a run whose environment names no user (a container, cron).
fn uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next().map(str::to_string))
        })
        .unwrap_or_else(|| "unknown".into())
}

impl LockInfo {
    pub fn new(operation: &str) -> LockInfo {
        let host = gethostname::gethostname().to_string_lossy().to_string();
        let user = ["USER", "LOGNAME"]
            .into_iter()
            .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| format!("uid-{}", uid()));
        LockInfo {
            id: uuid::Uuid::new_v4().to_string(),
            operation: operation.to_string(),
            who: format!("{user}@{host}"),
            host,
            pid: std::process::id(),
            created: super::now(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "`{}` run by {} (pid {}) since {} [lock id {}]",
            self.operation, self.who, self.pid, self.created, self.id
        )
    }

    /// Whether the run that wrote this is known to be gone: it ran on this host, and no
    /// process has its pid now. Only ever a reason to wait a little longer, never to take
    /// a lock: another host's run, or a pid taken again, reads as not gone.
    pub fn holder_gone(&self) -> bool {
        let this_host = gethostname::gethostname().to_string_lossy() == self.host.as_str();
        let Ok(pid) = libc::pid_t::try_from(self.pid) else {
            return false;
        };
        // Signal 0 checks only that the process exists.
        this_host
            && pid > 0
            && unsafe { libc::kill(pid, 0) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }
}

#[async_trait]
pub trait StateBackend: Send + Sync {
    /// Where the state lives, for messages.
    fn describe(&self) -> String;
    /// Reads the state, with any checkpoints a killed run left replayed on top.
    async fn load(&self) -> Result<State, StateError>;
    /// Reads the header and the records of `slugs` only (what a plan of some tenants
    /// needs), the result marked as such ([`State::scope`]). A backend that keeps one
    /// document reads it whole and keeps theirs.
    async fn load_tenants(
        &self,
        slugs: &std::collections::BTreeSet<String>,
    ) -> Result<State, StateError> {
        let mut state = self.load().await?;
        state.narrow_to(slugs);
        Ok(state)
    }
    /// Takes the lock, waiting as `wait` says for another holder to let go.
    async fn lock(&self, info: LockInfo, wait: &Wait) -> Result<Box<dyn StateLock>, StateError>;
    /// Takes the lock for a run that applies `slugs` only: runs on disjoint tenants hold it
    /// at the same time (`leases.rs`), and one on a tenant another holds waits as `wait`
    /// says. A backend that cannot share its lock takes it whole.
    async fn lock_tenants(
        &self,
        info: LockInfo,
        wait: &Wait,
        _slugs: &std::collections::BTreeSet<String>,
    ) -> Result<Box<dyn StateLock>, StateError> {
        self.lock(info, wait).await
    }
    /// Holds the claims of the saved plan `plan` (its digest) on `slugs`, for a runner
    /// that applies it beside others (`claims.rs`). Only a state kept as records in a
    /// database, and written already, can be shared so: an object store cannot hand each
    /// tenant to one runner of many.
    async fn claims(
        &self,
        _info: LockInfo,
        _wait: &Wait,
        _plan: &str,
        _slugs: &[String],
    ) -> Result<Box<dyn PlanClaims>, StateError> {
        Err(StateError::CannotClaim(format!(
            "runners cannot claim tenants from the state in {}: its store cannot hand each tenant to one runner of many\n  hint: keep the state on Postgres (state {{ backend = \"postgres\" }}) or locally, or split the plan's tenants with --shard K/N",
            self.describe()
        )))
    }
    /// Removes a lock its holder left behind, given the lock's id as a confirmation, and
    /// says whose it was. Only backends whose locks can outlive their holder have any.
    async fn force_unlock(&self, _id: &str) -> Result<String, StateError> {
        Err(StateError::CannotForceUnlock(format!(
            "the lock of {} is released by itself when its holder exits: there is never a stale one to remove",
            self.describe()
        )))
    }
}

#[async_trait]
pub trait StateLock: Send + Sync {
    /// Records one tenant's state right after a step succeeded. Called for many tenants
    /// at once (a remote store's latency must not serialize the run); one tenant's
    /// checkpoints come one after the other.
    async fn checkpoint(&self, entry: &Checkpoint) -> Result<(), StateError>;
    /// Writes the state beyond its checkpoints (a document backend writes it whole and
    /// forgets the checkpoints it includes), and marks it written.
    async fn persist(&mut self, state: &mut State) -> Result<(), StateError>;
    /// Whether this run still holds what it locked: a lock that can be lost on the way
    /// (leases on tenants) says so here, and no step starts after that.
    fn holds(&self) -> Result<(), StateError> {
        Ok(())
    }
    /// Whether a state read for some tenants ([`StateBackend::load_tenants`]) may be
    /// written through this lock, record by record: it holds each of them (a lease on each,
    /// or the whole state's lock where the store writes a record at a time). A run of some
    /// tenants then reads theirs alone, not the whole state.
    fn writes_some(&self) -> bool {
        false
    }
    async fn unlock(self: Box<Self>) -> Result<(), StateError>;
}

/// How a claimed tenant ended, as its row records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Applied,
    Failed,
    /// Its record moved since the plan was made (a runner that is gone had started it):
    /// the plan's steps for it are stale, and a fresh plan finishes it.
    Stale,
}

impl Ended {
    pub fn as_str(&self) -> &'static str {
        match self {
            Ended::Applied => "applied",
            Ended::Failed => "failed",
            Ended::Stale => "stale",
        }
    }
}

/// Where a plan's claims stand.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub tenants: usize,
    pub applied: usize,
    pub failed: usize,
    pub stale: usize,
    /// Claimed by runners still at work.
    pub in_hand: usize,
    /// How many runners claimed any of them.
    pub runners: usize,
}

impl Tally {
    pub fn open(&self) -> usize {
        self.tenants - self.applied - self.failed - self.stale
    }
}

/// A runner's hold on the claims of a saved plan's tenants (`claims.rs`), which it applies
/// a few at a time beside other runners.
#[async_trait]
pub trait PlanClaims: Send + Sync {
    /// Claims up to `count` tenants no one holds: first freeing the claims of runners found
    /// gone.
    async fn claim(&self, count: usize) -> Result<Vec<String>, StateError>;
    /// Holds `slugs` (claimed by this runner) to apply them: a lease on each, as
    /// [`StateBackend::lock_tenants`] takes.
    async fn lock(
        &self,
        slugs: &std::collections::BTreeSet<String>,
        wait: &Wait,
    ) -> Result<Box<dyn StateLock>, StateError>;
    /// Records how `slugs` (claimed by this runner) ended.
    async fn done(&self, slugs: &[String], ended: Ended) -> Result<(), StateError>;
    /// Where the plan's claims stand now.
    async fn tally(&self) -> Result<Tally, StateError>;
    /// Frees the claims this runner holds and has not finished, for any runner to take.
    async fn give_back(&self) -> Result<(), StateError>;
    /// Stops renewing, frees the claims this runner did not finish, and lets go.
    async fn close(self: Box<Self>) -> Result<(), StateError>;
}

/// How long to sleep between attempts while waiting for a lock.
pub const LOCK_POLL: Duration = Duration::from_millis(200);

/// How long a lock held by a run that is gone ([`LockInfo::holder_gone`]) is waited for: a
/// server lets go of a session's lock only once it notices the session's client died, a
/// moment after the kill, and a rerun started at once must not be refused meanwhile.
pub const GONE_HOLDER_GRACE: Duration = Duration::from_secs(5);

/// How long to wait for a lock another run holds, and what ends the wait early: an
/// interrupted run stops waiting at once, having taken nothing.
#[derive(Debug, Clone, Default)]
pub struct Wait {
    pub timeout: Duration,
    pub stop: tokio_util::sync::CancellationToken,
}

impl Wait {
    /// Waiting up to `timeout`, whatever happens meanwhile.
    pub fn up_to(timeout: Duration) -> Wait {
        Wait {
            timeout,
            stop: Default::default(),
        }
    }

    /// Sleeps between two attempts at the lock. Nothing is held between attempts, so an
    /// interrupt ends the wait here.
    pub async fn poll(&self) -> Result<(), StateError> {
        tokio::select! {
            () = tokio::time::sleep(LOCK_POLL) => Ok(()),
            () = self.stop.cancelled() => Err(StateError::Interrupted),
        }
    }
}

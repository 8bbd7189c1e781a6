//! The control plane written once, over SQLite and PostgreSQL alike: each rule of the
//! registry, the outbox and the audit is one statement here, spelled for its server by
//! [`Dialect`]. An implementation (`local`, `postgres`) says only how its tables are made
//! and reached ([`ControlDb`]).

pub mod control;
pub mod outbox;
pub mod purge_end;
pub mod refresh;

use async_trait::async_trait;

use crate::clients::error::ProviderError;
use crate::clients::sql::{Dialect, Pool};

/// How a control plane's tables are reached.
#[async_trait]
pub trait ControlDb: Send + Sync {
    fn dialect(&self) -> &Dialect;

    /// The pool writes and reads go through, its tables made on first use.
    async fn tables(&self) -> Result<Pool, ProviderError>;

    /// A pool to read the tables through that makes nothing, for a plan.
    async fn reader(&self) -> Result<Reading, ProviderError>;
}

/// A pool to read the control plane's tables through, if they exist.
pub struct Reading {
    /// `None` when there are no tables yet (a fleet never applied).
    pub pool: Option<Pool>,
    /// The calls it took to find out, for benchmarks.
    pub calls: usize,
    /// The pool was opened for this read alone, and is closed after it.
    pub close: bool,
}

//! What a run of some tenants holds on a state kept as records, written once for the local
//! and Postgres backends: their `lock_tenants` and `claims` differ only in how each gets a
//! writer that holds the state's lock shared ([`SharesRecords::shared_writer`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;

use super::backend::{LockInfo, PlanClaims, StateBackend, StateError, StateLock, Wait};
use super::claims::{Claims, NOT_SHARED};
use super::record_lock::RecordLock;
use super::record_writer::RecordWriter;
use super::records::Records;

/// A backend whose state can be held by several runs of disjoint tenants.
#[async_trait]
pub trait SharesRecords: StateBackend {
    fn records(&self) -> Records;
    /// A writer for a run that holds some tenants only: the state's lock held shared, and
    /// something of the run's own that says it is alive. `None` when the state cannot be
    /// shared: not kept as records, or not written yet (its conversion and first write are
    /// the whole state's).
    async fn shared_writer(
        &self,
        info: &LockInfo,
        wait: &Wait,
    ) -> Result<Option<Arc<dyn RecordWriter>>, StateError>;
}

/// [`StateBackend::lock_tenants`] of such a backend: the whole state when it cannot be
/// shared.
pub async fn lock_tenants(
    backend: &impl SharesRecords,
    info: LockInfo,
    wait: &Wait,
    slugs: &BTreeSet<String>,
) -> Result<Box<dyn StateLock>, StateError> {
    let Some(writer) = backend.shared_writer(&info, wait).await? else {
        return backend.lock(info, wait).await;
    };
    let lock = RecordLock::tenants(
        backend.records(),
        writer,
        backend.describe(),
        &info,
        wait,
        slugs,
    )
    .await?;
    Ok(Box::new(lock))
}

/// [`StateBackend::claims`] of such a backend: refused when it cannot be shared.
pub async fn claims(
    backend: &impl SharesRecords,
    info: LockInfo,
    wait: &Wait,
    plan: &str,
    slugs: &[String],
) -> Result<Box<dyn PlanClaims>, StateError> {
    let Some(writer) = backend.shared_writer(&info, wait).await? else {
        return Err(StateError::CannotClaim(NOT_SHARED.into()));
    };
    let claims = Claims::open(
        backend.records(),
        writer,
        backend.describe(),
        info,
        plan,
        slugs,
    )
    .await?;
    Ok(Box::new(claims))
}

//! Where a leaving tenant is in its offboarding, from its file and its recorded state:
//! revoked and exported, held until its plan's retention has passed since the export, then
//! purged, then a tombstone. The plan, refresh (which counts what a purge will destroy) and
//! `show` all ask here, so they agree on when a hold ends.

use std::time::{Duration, SystemTime};

use crate::desired::{Effective, Key, Kind};
use crate::repo::{Offboarding, Status};
use crate::state::{Lifecycle, TenantState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not leaving, or leaving and not yet revoked and exported.
    None,
    /// Exported; nothing is deleted before `until`.
    Held { until: SystemTime },
    /// The purge is due: the hold is over, or an erasure request skips it.
    Due,
    /// The purge began in an earlier run: it can only be finished.
    Purging,
    /// Purged: only the registry row and the audit are left.
    Tombstone,
}

/// What of a tenant's file its offboarding depends on.
#[derive(Debug, Clone, Copy)]
pub struct Leaving {
    pub status: Status,
    pub offboarding: Offboarding,
    /// Its plan's `retention_days`: how long the export is held before the purge.
    pub retention_days: u32,
}

/// The phase of a tenant whose file gives `tenant`, recorded as `recorded`, at `now`;
/// `lifecycle` is the one its registry row has, when refresh read it: a run stopped after
/// the row moved and before the state recorded it leaves the state a step behind.
pub fn phase(
    tenant: &Effective,
    recorded: Option<&TenantState>,
    lifecycle: Option<Lifecycle>,
    now: SystemTime,
) -> Phase {
    let leaving = Leaving {
        status: tenant.status,
        offboarding: tenant.offboarding,
        retention_days: tenant.retention_days,
    };
    phase_of(&leaving, recorded, lifecycle, now)
}

/// [`phase`] from the few settings it needs, for callers that have not compiled the tenant.
pub fn phase_of(
    tenant: &Leaving,
    recorded: Option<&TenantState>,
    lifecycle: Option<Lifecycle>,
    now: SystemTime,
) -> Phase {
    let Some(r) = recorded else {
        return Phase::None;
    };
    let lifecycle = lifecycle.unwrap_or(r.lifecycle);
    if r.lifecycle == Lifecycle::Deprovisioned || lifecycle == Lifecycle::Deprovisioned {
        return Phase::Tombstone;
    }
    if r.purge.is_some() {
        return Phase::Purging;
    }
    if tenant.status != Status::Deprovisioned || !provisioned(r, lifecycle) {
        return Phase::None;
    }
    if tenant.offboarding.erase {
        return Phase::Due;
    }
    if lifecycle != Lifecycle::Deprovisioning {
        return Phase::None;
    }
    match hold_until(r, tenant.retention_days) {
        Some(until) if now < until => Phase::Held { until },
        Some(_) => Phase::Due,
        // Deprovisioning without a recorded export: the export is still to be made.
        None => Phase::None,
    }
}

/// Whether a tenant went through provisioning, so there is something to offboard: it has
/// its registry row and got past provisioning (`lifecycle` is its best-known one).
pub fn provisioned(recorded: &TenantState, lifecycle: Lifecycle) -> bool {
    recorded.tenant_id.is_some()
        && matches!(
            lifecycle,
            Lifecycle::Active | Lifecycle::Suspended | Lifecycle::Deprovisioning
        )
}

/// When the hold of an exported tenant ends: its export's time plus the retention days.
pub fn hold_until(recorded: &TenantState, retention_days: u32) -> Option<SystemTime> {
    let export = recorded.resources.get(&Key::new(Kind::EXPORT))?;
    // An export recorded by a build that did not record its time counts from the tenant's
    // last recorded change, which is no earlier than the export.
    let at = match export.str("exported_at") {
        "" => recorded.updated_at.as_str(),
        at => at,
    };
    let at = humantime::parse_rfc3339(at).ok()?;
    Some(at + Duration::from_secs(u64::from(retention_days) * 86_400))
}

/// When the export of an erasure that purges `tenant` at `purged` is removed, as the state
/// records it: its plan's `erasure_export_days` later.
pub fn export_until(purged: SystemTime, tenant: &Effective) -> String {
    stamp(purged + Duration::from_secs(u64::from(tenant.erasure_export_days) * 86_400))
}

/// Whether the tombstone `recorded` still has an erasure's export whose end has come.
pub fn export_expired(recorded: &TenantState, now: SystemTime) -> bool {
    let Some(until) = recorded
        .purge
        .as_ref()
        .and_then(|p| p.export_until.as_deref())
    else {
        return false;
    };
    recorded.resources.contains_key(&Key::new(Kind::EXPORT))
        && humantime::parse_rfc3339(until).is_ok_and(|until| now >= until)
}

/// `2026-12-28`: the day a time falls on (UTC), as plans and `show` say it.
pub fn day(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()[..10].to_string()
}

/// `2026-12-28T10:00:00Z`: a time as the state records it.
pub fn stamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// When the hold of the copy a move left on a tenant's old server ends: the move's time plus
/// its plan's retention days, as long as an offboarded tenant's export is kept before its
/// purge. Until then the old copy is there, fenced, to go back to.
pub fn leftover_until(
    r: &crate::model::retired::Retired,
    retention_days: u32,
) -> Option<SystemTime> {
    let at = humantime::parse_rfc3339(&r.retired_at).ok()?;
    Some(at + Duration::from_secs(u64::from(retention_days) * 86_400))
}

/// The copies moves left on `recorded`'s old servers whose hold is over at `now`: the
/// scheduled apply removes them, audited as a purge is. A tenant that is leaving keeps
/// them for its own purge, which destroys everything it has.
pub fn leftovers_due(
    recorded: &TenantState,
    status: Status,
    retention_days: u32,
    now: SystemTime,
) -> impl Iterator<Item = &crate::model::retired::Retired> {
    recorded.retired.iter().filter(move |r| {
        status != Status::Deprovisioned
            && r.is_move_leftover()
            && leftover_until(r, retention_days).is_some_and(|until| now >= until)
    })
}

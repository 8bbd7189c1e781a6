//! The hook runs a tenant is owed and the last that succeeded, as the state records them, and
//! the moments of a tenant's life a hook runs at.

use serde::{Deserialize, Serialize};

use super::lifecycle::Lifecycle;

/// A moment of a tenant's life a hook can run at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Moment {
    /// It became active for the first time.
    Provisioned,
    /// Its plan (tier) changed.
    PlanChanged,
    Suspended,
    Resumed,
    /// Its offboarding began: access revoked, data exported.
    Offboarding,
    /// Purged; its tombstone is all that is left.
    Deprovisioned,
}

impl Moment {
    pub const ALL: [Moment; 6] = [
        Moment::Provisioned,
        Moment::PlanChanged,
        Moment::Suspended,
        Moment::Resumed,
        Moment::Offboarding,
        Moment::Deprovisioned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Moment::Provisioned => "provisioned",
            Moment::PlanChanged => "plan_changed",
            Moment::Suspended => "suspended",
            Moment::Resumed => "resumed",
            Moment::Offboarding => "offboarding",
            Moment::Deprovisioned => "deprovisioned",
        }
    }

    pub fn parse(s: &str) -> Option<Moment> {
        Moment::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl std::fmt::Display for Moment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A hook run owed to a tenant, recorded before its first try and kept until it succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRun {
    pub hook: String,
    pub moment: Moment,
    /// The same for every try of this run.
    pub idempotency_key: String,
    pub queued_at: String,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Not tried again before this time (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_try_at: Option<String>,
    /// The lifecycle its moment moves the tenant to (none for `plan_changed`): a run owed
    /// for a move that never happened, the file having changed its mind, is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    /// When it succeeded, while the tenant's move is not finished yet: kept so that the
    /// rerun of an apply stopped in between does not run it again under a new key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<String>,
}

impl HookRun {
    pub fn new(hook: &str, moment: Moment, lifecycle: Option<Lifecycle>) -> HookRun {
        HookRun {
            hook: hook.to_string(),
            moment,
            idempotency_key: uuid::Uuid::new_v4().to_string(),
            queued_at: super::lifecycle::now(),
            attempts: 0,
            last_error: None,
            next_try_at: None,
            lifecycle,
            done_at: None,
        }
    }

    /// Owed for a move the tenant is no longer making: it is neither in `to` (where the
    /// plan takes it) nor in `at` (where it is), so the moment never came.
    pub fn abandoned(&self, at: Lifecycle, to: Lifecycle) -> bool {
        self.lifecycle.is_some_and(|l| l != at && l != to)
    }

    /// Whether its wait after the last failure is over at `now`.
    pub fn due(&self, now: std::time::SystemTime) -> bool {
        self.next_try_at
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .is_none_or(|at| at <= now)
    }
}

/// The last run of a hook that succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookDone {
    pub moment: Moment,
    pub idempotency_key: String,
    pub at: String,
}

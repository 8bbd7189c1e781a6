//! Where a tenant is in its life, and the clock every record is stamped with.

use serde::{Deserialize, Serialize};

/// Where a tenant is in its life: pending → provisioning → active ↔ suspended →
/// deprovisioning (revoked, exported, held, then purged) → deprovisioned (a tombstone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    #[default]
    Pending,
    Provisioning,
    Active,
    Suspended,
    Deprovisioning,
    Deprovisioned,
}

impl Lifecycle {
    /// Every lifecycle, in the order a tenant meets them.
    pub const ALL: [Lifecycle; 6] = [
        Lifecycle::Pending,
        Lifecycle::Provisioning,
        Lifecycle::Active,
        Lifecycle::Suspended,
        Lifecycle::Deprovisioning,
        Lifecycle::Deprovisioned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Pending => "pending",
            Lifecycle::Provisioning => "provisioning",
            Lifecycle::Active => "active",
            Lifecycle::Suspended => "suspended",
            Lifecycle::Deprovisioning => "deprovisioning",
            Lifecycle::Deprovisioned => "deprovisioned",
        }
    }

    pub fn parse(s: &str) -> Option<Lifecycle> {
        Lifecycle::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

impl std::fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

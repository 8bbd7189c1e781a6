//! A tenant as its file asks for it, once checked: what every layer above reads of a tenant.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::slug::Slug;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Active,
    Suspended,
    Deprovisioned,
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    Shared,
    Schema,
    Database,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Shared => "shared",
            Isolation::Schema => "schema",
            Isolation::Database => "database",
        }
    }
}

/// What a leaving tenant asked for, beyond leaving: `offboarding: { erase: true }` is an
/// erasure request (GDPR Article 17), which skips the hold; with `export: false` it also
/// waives the export.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct Offboarding {
    #[serde(default)]
    pub erase: bool,
    #[serde(default = "yes")]
    pub export: bool,
}

impl Default for Offboarding {
    fn default() -> Self {
        Offboarding {
            erase: false,
            export: true,
        }
    }
}

impl Offboarding {
    pub fn is_default(&self) -> bool {
        *self == Offboarding::default()
    }
}

fn yes() -> bool {
    true
}

/// A tenant file that parsed and whose fields each passed their own checks. Checks that
/// need other files (the plan exists, overrides are declared by it) happen in `compile`.
#[derive(Debug, Clone)]
pub struct TenantSpec {
    pub slug: Slug,
    pub name: String,
    pub plan: String,
    pub status: Status,
    pub owner_email: String,
    pub region: String,
    pub locale: String,
    pub isolation: Option<Isolation>,
    pub features: BTreeMap<String, bool>,
    pub quotas: BTreeMap<String, u64>,
    pub labels: BTreeMap<String, String>,
    pub offboarding: Offboarding,
    /// The Postgres server its data must live on, by name, when the config names several.
    pub server: Option<String>,
    /// The file it came from, relative to the repo root.
    pub file: String,
    /// The file's text, kept so later checks can point at lines.
    pub source: String,
}

/// How long an erasure's export is kept when the plan does not say.
pub const DEFAULT_ERASURE_EXPORT_DAYS: u32 = 30;

/// What a tenant is, after its plan's defaults and its own overrides are merged. It is what
/// templates see as `tenant` and what lifecycle events carry.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Effective {
    pub slug: Slug,
    pub name: String,
    pub plan: String,
    pub status: Status,
    pub region: String,
    pub locale: String,
    pub isolation: Isolation,
    pub owner_email: String,
    pub retention_days: u32,
    /// Its plan's `erasure_export_days`: how long an erasure's export outlives the purge.
    #[serde(default = "default_erasure_export_days")]
    pub erasure_export_days: u32,
    pub features: BTreeMap<String, bool>,
    pub quotas: BTreeMap<String, u64>,
    pub labels: BTreeMap<String, String>,
    /// An erasure request, and whether it waives the export (only for `deprovisioned`).
    #[serde(default, skip_serializing_if = "Offboarding::is_default")]
    pub offboarding: Offboarding,
    /// What its hooks gave back, as the state records it (`tenant.outputs.billing_customer_id`
    /// in templates): a new value is an update of whatever renders it.
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
}

fn default_erasure_export_days() -> u32 {
    DEFAULT_ERASURE_EXPORT_DAYS
}

/// A region's name as tenant files and server blocks write it: `eu-west-1`.
pub fn valid_region(s: &str) -> bool {
    (2..=32).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-'))
}

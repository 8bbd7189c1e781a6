//! Drift: what changed outside tenant-reconcile, as `plan --refresh-only` reports it. The
//! recorded state is compared with the live resources only; the files are not consulted,
//! so a pending edit to a tenant file is not drift.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StateRef;
use crate::desired::Kind;
use crate::state::State;
use crate::targets::provider::LiveFleet;

/// Bumped whenever the JSON shape of a drift report changes incompatibly.
pub const DRIFT_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriftReport {
    pub format_version: u32,
    /// Always "drift", so a consumer reading several kinds of report can tell them apart.
    pub kind: String,
    pub tool_version: String,
    pub generated_at: String,
    pub state: StateRef,
    pub summary: DriftSummary,
    /// Only tenants with drift, sorted by slug.
    pub tenants: Vec<TenantDrift>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftSummary {
    pub tenants_checked: usize,
    pub tenants_drifted: usize,
    pub resources_drifted: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantDrift {
    pub slug: String,
    pub resources: Vec<ResourceDrift>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResourceDrift {
    /// `acme/bucket`
    pub address: String,
    pub status: DriftStatus,
    /// For `changed`: each field whose live value is not the recorded one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldDrift>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftStatus {
    /// Recorded, and gone from the live system.
    Missing,
    /// There, with fields that differ.
    Changed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FieldDrift {
    pub field: String,
    pub recorded: Option<Value>,
    pub live: Option<Value>,
}

impl DriftReport {
    pub fn has_drift(&self) -> bool {
        !self.tenants.is_empty()
    }
}

/// Compares what `state` recorded for `checked` tenants with what refresh found.
pub fn report<'a>(
    state: &State,
    live: &LiveFleet,
    checked: impl IntoIterator<Item = &'a crate::slug::Slug>,
) -> DriftReport {
    let mut summary = DriftSummary::default();
    let mut tenants = Vec::new();
    for slug in checked {
        // A tenant never applied has nothing recorded to drift from.
        let Some(recorded) = state.tenants.get(slug.as_str()) else {
            continue;
        };
        summary.tenants_checked += 1;
        let mut resources = Vec::new();
        for (key, attrs) in &recorded.resources {
            let address = format!("{slug}/{key}");
            let Some(now) = live.get(slug, key) else {
                resources.push(ResourceDrift {
                    address,
                    status: DriftStatus::Missing,
                    fields: Vec::new(),
                });
                continue;
            };
            let mut fields: Vec<FieldDrift> = attrs
                .iter()
                .filter(|(field, value)| now.attrs.get(field) != Some(value))
                .map(|(field, value)| FieldDrift {
                    field: field.to_string(),
                    recorded: Some(value.clone()),
                    live: now.attrs.get(field).cloned(),
                })
                .collect();
            // Flags and quotas are whole maps: one added by hand is drift too.
            if matches!(key.kind, Kind::FEATURES | Kind::QUOTAS) {
                fields.extend(
                    now.attrs
                        .iter()
                        .filter(|(field, _)| !attrs.contains_key(field))
                        .map(|(field, value)| FieldDrift {
                            field: field.to_string(),
                            recorded: None,
                            live: Some(value.clone()),
                        }),
                );
            }
            if !fields.is_empty() {
                resources.push(ResourceDrift {
                    address,
                    status: DriftStatus::Changed,
                    fields,
                });
            }
        }
        if !resources.is_empty() {
            summary.resources_drifted += resources.len();
            tenants.push(TenantDrift {
                slug: slug.to_string(),
                resources,
            });
        }
    }
    tenants.sort_by(|a, b| a.slug.cmp(&b.slug));
    summary.tenants_drifted = tenants.len();
    DriftReport {
        format_version: DRIFT_FORMAT_VERSION,
        kind: "drift".into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        generated_at: crate::state::now(),
        state: StateRef::of(state, ""),
        summary,
        tenants,
    }
}

//! What a tenant's file gives it beyond its plan's defaults: a stronger isolation, a flag
//! the plan leaves off, a bigger quota. A tenant file is edited in a pull request like any
//! other, so a reviewer sees each such upgrade in the blast radius, as a downgrade is; a
//! plan can also cap them (`limits` in `plans/*.hcl`, checked when the files load).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Action, ResourceChange};
use crate::desired::{DesiredTenant, Kind};
use crate::repo::TierPlan;

/// One setting of a tenant above its plan's default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upgrade {
    /// `isolation`, `feature sso` or `quota seats`: as the blast radius names it.
    pub what: String,
    /// The plan it is beyond.
    pub plan: String,
    pub plan_default: Value,
    pub value: Value,
}

/// The upgrades of tenant `d` that `changes` set: every one of a new tenant or of one that
/// moves to another plan, else those of the settings that change. One kept unchanged is
/// not repeated in every later plan.
pub fn upgrades(tier: &TierPlan, d: &DesiredTenant, changes: &[ResourceChange]) -> Vec<Upgrade> {
    let e = &d.effective;
    let registry = changes.iter().find(|c| c.key.kind == Kind::REGISTRY);
    let anew = registry.is_some_and(|c| {
        c.action == Action::Create || c.fields().iter().any(|f| f.field == "plan")
    });
    let sets = |kind: Kind, field: &str| {
        anew || changes.iter().any(|c| {
            c.key.kind == kind
                && (matches!(c.action, Action::Create | Action::Replace)
                    || c.fields().iter().any(|f| f.field == field))
        })
    };
    let upgrade = |what: String, plan_default: Value, value: Value| Upgrade {
        what,
        plan: tier.name.clone(),
        plan_default,
        value,
    };
    let mut out = Vec::new();
    if e.isolation > tier.isolation && sets(Kind::REGISTRY, "isolation") {
        out.push(upgrade(
            "isolation".into(),
            json!(tier.isolation.as_str()),
            json!(e.isolation.as_str()),
        ));
    }
    for (flag, on) in &e.features {
        let default = tier.features.get(flag).copied().unwrap_or(false);
        if *on && !default && sets(Kind::FEATURES, flag) {
            out.push(upgrade(
                format!("feature {flag}"),
                json!(default),
                json!(on),
            ));
        }
    }
    for (quota, value) in &e.quotas {
        let Some(default) = tier.quotas.get(quota) else {
            continue;
        };
        if value > default && sets(Kind::QUOTAS, quota) {
            out.push(upgrade(
                format!("quota {quota}"),
                json!(default),
                json!(value),
            ));
        }
    }
    out
}

impl Upgrade {
    /// `quota seats 900, beyond plan starter's 5`.
    pub fn text(&self) -> String {
        format!(
            "{} {}, beyond plan {}'s {}",
            self.what,
            value(&self.value),
            self.plan,
            value(&self.plan_default)
        )
    }

    /// Whether a field change of the blast radius (`quota seats`, `registry isolation`)
    /// says the same as this upgrade, which is shown instead.
    pub fn covers(&self, effect: &str) -> bool {
        effect == self.what
            || (self.what == "isolation"
                && matches!(effect, "registry isolation" | "database isolation"))
    }
}

fn value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

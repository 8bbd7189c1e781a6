//! The blast radius of a plan: what each changed input does to the tenants it reaches,
//! grouped, with downgrades (a feature taken away, a quota cut) and upgrades beyond a
//! tenant's plan (its file asking for more than the plan gives) called out, so a reviewer
//! sees "plans/growth.hcl: 312 tenants, quota api_calls_per_month 1000000 → 2000000" before
//! any per-tenant detail.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::desired::Kind;
use crate::plan::{Action, ChangedFile, Plan, TenantAction, TenantPlan};

/// Kinds of change listed under each changed input (downgrades and upgrades always are).
const MAX_LISTED: usize = 3;

/// What an effect is called out as; ordered as they are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mark {
    Downgrade,
    Upgrade,
    None,
}

/// One kind of change and how many tenants it happens to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    pub text: String,
    pub tenants: usize,
    pub downgrade: bool,
    /// A tenant given more than its plan's default by its own file.
    pub upgrade: bool,
}

impl Effect {
    /// Whether it is called out (a downgrade or an upgrade), and so always listed.
    pub fn marked(&self) -> bool {
        self.downgrade || self.upgrade
    }
}

/// What the tenants `tenants` undergo, most common first, downgrades and then upgrades
/// before all else.
pub fn effects<'a>(tenants: impl IntoIterator<Item = &'a TenantPlan>) -> Vec<Effect> {
    let mut counts: BTreeMap<(Mark, String), usize> = BTreeMap::new();
    for t in tenants {
        // Each effect counted once per tenant.
        let mut seen: Vec<(Mark, String)> = t
            .upgrades
            .iter()
            .map(|u| (Mark::Upgrade, u.text()))
            .collect();
        for c in &t.changes {
            if c.purged().is_some() {
                let (mark, what) = match t.action {
                    // A tenant that stays loses only the copy a move left behind.
                    TenantAction::Update => (
                        Mark::None,
                        "the copy a move left on its old server removed, its hold over",
                    ),
                    _ if t.tenant.offboarding.erase => (
                        Mark::Downgrade,
                        "PURGE (ERASURE request): its data destroyed for good",
                    ),
                    _ => (Mark::Downgrade, "PURGE: its data destroyed for good"),
                };
                if !seen.iter().any(|(_, w)| w == what) {
                    seen.push((mark, what.into()));
                }
                continue;
            }
            if c.action == Action::Create {
                if c.key.kind == Kind::REGISTRY {
                    seen.push((Mark::None, "new tenant".into()));
                }
                continue;
            }
            for f in c.fields().iter() {
                let (what, downgrade) = match c.key.kind {
                    Kind::FEATURES => (
                        format!("feature {}", f.field),
                        f.old == Some(Value::Bool(true)) && f.new != Some(Value::Bool(true)),
                    ),
                    Kind::QUOTAS => (
                        format!("quota {}", f.field),
                        matches!((number(&f.old), number(&f.new)), (Some(o), Some(n)) if n < o)
                            || (f.old.is_some() && f.new.is_none()),
                    ),
                    Kind::FILE => {
                        seen.push((Mark::None, format!("{} rendered again", c.key)));
                        continue;
                    }
                    // Offboarding takes the tenant's access away: flagged as a downgrade is.
                    Kind::REGISTRY if f.field == "lifecycle" => {
                        let leaves = f.new == Some(Value::String("deprovisioning".into()));
                        let what = if leaves {
                            "OFFBOARD: lifecycle"
                        } else {
                            "lifecycle"
                        };
                        (what.to_string(), leaves)
                    }
                    _ => (format!("{} {}", c.key, f.field), false),
                };
                if t.upgrades.iter().any(|u| u.covers(&what)) {
                    continue;
                }
                let text = format!(
                    "{what} {} → {}",
                    super::value(f.old.as_ref()),
                    super::value(f.new.as_ref())
                );
                let mark = if downgrade {
                    Mark::Downgrade
                } else {
                    Mark::None
                };
                seen.push((mark, text));
            }
        }
        seen.sort();
        seen.dedup();
        for key in seen {
            *counts.entry(key).or_default() += 1;
        }
    }
    let mut out: Vec<Effect> = counts
        .into_iter()
        .map(|((mark, text), tenants)| Effect {
            text,
            tenants,
            downgrade: mark == Mark::Downgrade,
            upgrade: mark == Mark::Upgrade,
        })
        .collect();
    out.sort_by(|a, b| {
        b.downgrade
            .cmp(&a.downgrade)
            .then(b.upgrade.cmp(&a.upgrade))
            .then(b.tenants.cmp(&a.tenants))
            .then(a.text.cmp(&b.text))
    });
    out
}

fn number(v: &Option<Value>) -> Option<f64> {
    v.as_ref().and_then(Value::as_f64)
}

/// Every downgrade in the plan, grouped: `feature sso true → false` for 3 tenants.
pub fn downgrades(plan: &Plan) -> Vec<Effect> {
    effects(&plan.tenants)
        .into_iter()
        .filter(|e| e.downgrade)
        .collect()
}

/// Every upgrade beyond a tenant's plan in the plan, grouped.
pub fn upgrades(plan: &Plan) -> Vec<Effect> {
    effects(&plan.tenants)
        .into_iter()
        .filter(|e| e.upgrade)
        .collect()
}

/// An effect as a line: `quota seats 50 → 40 (2 tenants)`, downgrades and upgrades marked.
pub fn line(e: &Effect) -> String {
    format!(
        "{}{} ({} tenant{})",
        // An offboarding says so itself.
        if e.downgrade && !e.text.starts_with("OFFBOARD") && !e.text.starts_with("PURGE") {
            "DOWNGRADE: "
        } else if e.upgrade {
            "UPGRADE: "
        } else {
            ""
        },
        e.text,
        e.tenants,
        if e.tenants == 1 { "" } else { "s" }
    )
}

/// Per changed input (`--changed-since`): what it does to the tenants it pulled in, as the
/// effects worth listing (every downgrade, then the most common) and how many kinds of
/// change were left out. Text and markdown both show it.
pub fn per_input(plan: &Plan) -> Vec<(&ChangedFile, Vec<Effect>, usize)> {
    let Some(c) = &plan.changed_since else {
        return Vec::new();
    };
    c.files
        .iter()
        .map(|f| {
            let all = effects(
                plan.tenants
                    .iter()
                    .filter(|t| t.pulled_in_by.contains(&f.path)),
            );
            let total = all.len();
            let listed: Vec<Effect> = all
                .into_iter()
                .enumerate()
                .filter(|(i, e)| e.marked() || *i < MAX_LISTED)
                .map(|(_, e)| e)
                .collect();
            let hidden = total - listed.len();
            (f, listed, hidden)
        })
        .collect()
}

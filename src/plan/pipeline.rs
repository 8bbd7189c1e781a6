//! The steps of a tenant's plan that are not resources: the smoke tests that gate its move
//! to active, and the hooks run at the moments the plan reaches (and those owed from
//! earlier runs, retried once their wait is over).

use std::time::SystemTime;

use super::*;
use crate::desired::{DesiredTenant, Kind};
use crate::diagnostic::Diagnostic;
use crate::hooks::HookRun;
use crate::repo::checks::{self, CheckSpec, Probe};
use crate::repo::hooks::Moment;
use crate::repo::TenantRepo;
use crate::state::TenantState;

/// The step name a failed smoke test leaves on the tenant, as `show` and the registry say.
pub const SMOKE_STEP: &str = "smoke_test";

/// The checks `d` gets besides the built-in ones: its plan's, then the config's, each http
/// URL rendered for it and checked.
pub fn declared_checks(repo: &TenantRepo, d: &DesiredTenant) -> Result<Vec<CheckSpec>, Diagnostic> {
    let e = &d.effective;
    let tier = repo.plans.get(&e.plan);
    let declared = tier
        .map(|p| p.checks.as_slice())
        .unwrap_or_default()
        .iter()
        .chain(&repo.config.checks);
    let mut out: Vec<CheckSpec> = Vec::new();
    for c in declared {
        if out.iter().any(|o| o.name == c.name) {
            // The plan's check of a name wins over the config's.
            continue;
        }
        let mut c = c.clone();
        if let Probe::Http { url, .. } = &mut c.probe {
            *url = checks::render_url(url, e.slug.as_str(), &e.plan, &e.region).map_err(|m| {
                Diagnostic::new(
                    tier.map_or(crate::repo::config::CONFIG_FILE, |p| p.file.as_str()),
                    format!("check {:?} for {}: {m}", c.name, e.slug),
                )
                .field(format!("check.{}.http", c.name))
            })?;
        }
        out.push(c);
    }
    Ok(out)
}

/// The moments a tenant's plan reaches, in order.
pub fn moments(tp: &TenantPlan) -> Vec<Moment> {
    use Lifecycle::*;
    let (from, to) = (tp.lifecycle.from, tp.lifecycle.to);
    let mut out = Vec::new();
    if tp.action == TenantAction::Blocked {
        return out;
    }
    if matches!(from, Pending | Provisioning) && matches!(to, Active | Suspended) {
        out.push(Moment::Provisioned);
    }
    let plan_changed = matches!(from, Active | Suspended)
        && tp.changes.iter().any(|c| {
            c.key.kind == Kind::REGISTRY
                && c.fields()
                    .iter()
                    .any(|f| f.field == "plan" && f.old.is_some())
        });
    if plan_changed {
        out.push(Moment::PlanChanged);
    }
    match (from, to) {
        (_, Suspended) if from != Suspended => out.push(Moment::Suspended),
        (Suspended | Deprovisioning, Active) => out.push(Moment::Resumed),
        (Active | Suspended, Deprovisioning) => out.push(Moment::Offboarding),
        // An erasure request: offboarded and purged in one run.
        (Active | Suspended, Deprovisioned) => {
            out.extend([Moment::Offboarding, Moment::Deprovisioned])
        }
        (_, Deprovisioned) if from != Deprovisioned => out.push(Moment::Deprovisioned),
        _ => {}
    }
    // Provisioned straight into suspended: provisioned, then suspended.
    if matches!(from, Pending | Provisioning) && to == Suspended {
        out.retain(|m| *m != Moment::Suspended);
        out.push(Moment::Suspended);
    }
    out
}

/// Whether a change builds what a tenant is used through anew: its role, slice or bucket.
fn rebuilds(c: &ResourceChange) -> bool {
    crate::model::kind::of(c.key.kind).used_through
        && matches!(c.action, Action::Create | Action::Replace)
}

/// Whether the tenant's last apply stopped at its smoke tests.
fn smoke_failed(recorded: Option<&TenantState>) -> Option<&str> {
    recorded
        .and_then(|r| r.last_failure.as_ref())
        .filter(|f| f.step == SMOKE_STEP)
        .map(|f| f.error.as_str())
}

/// Adds the smoke tests and hooks to what the planner made of `d`. A tenant with nothing
/// else to do gets a plan of its own when its smoke tests failed last time or a hook run it
/// is owed is due; owed runs still waiting are only reported.
pub fn add(
    repo: &TenantRepo,
    d: &DesiredTenant,
    recorded: Option<&TenantState>,
    planned: Option<Planned>,
    live_lifecycle: Option<Lifecycle>,
    now: SystemTime,
) -> Result<Option<Planned>, Diagnostic> {
    let all_owed: &[HookRun] = recorded.map_or(&[], |r| r.hooks.as_slice());
    let at = live_lifecycle
        .or(recorded.map(|r| r.lifecycle))
        .unwrap_or_default();
    let mut tp = match planned {
        Some(Planned::Changes(tp)) => tp,
        None | Some(Planned::Held(_)) if recorded.is_some() => {
            let r = recorded.expect("checked");
            let lifecycle = live_lifecycle.unwrap_or(r.lifecycle);
            let retest = smoke_failed(recorded).is_some()
                && lifecycle == Lifecycle::Active
                && d.target_lifecycle() == Lifecycle::Active;
            let owed: Vec<&HookRun> = all_owed
                .iter()
                .filter(|run| run.done_at.is_none() && !run.abandoned(at, lifecycle))
                .collect();
            let due = owed.iter().any(|run| {
                repo.config
                    .hooks
                    .iter()
                    .any(|h| h.name == run.hook && (h.gating || run.due(now)))
            });
            if !retest && !due {
                let waiting: Vec<WaitingHook> = owed
                    .iter()
                    .filter(|run| configured(repo, run))
                    .map(|run| WaitingHook {
                        slug: d.slug().clone(),
                        run: (*run).clone(),
                    })
                    .collect();
                return Ok(match planned {
                    Some(p) => Some(p),
                    None if waiting.is_empty() => None,
                    None => Some(Planned::Waiting(waiting)),
                });
            }
            Box::new(TenantPlan::of_recorded(
                d,
                r.tenant_id.clone(),
                TenantAction::Update,
                LifecycleChange {
                    from: lifecycle,
                    to: lifecycle,
                },
                Vec::new(),
            ))
        }
        other => return Ok(other),
    };
    if tp.action == TenantAction::Blocked {
        return Ok(Some(Planned::Changes(tp)));
    }
    let becomes_active = tp.lifecycle.to == Lifecycle::Active;
    let reason = if !becomes_active {
        None
    } else {
        let rebuilt: Vec<Kind> = tp
            .changes
            .iter()
            .filter(|c| rebuilds(c))
            .map(|c| c.key.kind)
            .collect();
        let why = if tp.lifecycle.from != Lifecycle::Active {
            Some("before it becomes active".to_string())
        } else if rebuilt.is_empty() {
            None
        } else if rebuilt
            .iter()
            .all(|k| [Kind::ROLE, Kind::DATABASE, Kind::BUCKET].contains(k))
        {
            Some("its role, slice or bucket is built anew".to_string())
        } else {
            // A slot's own kind (a tenant's limits) is named as it is.
            let names: Vec<&str> = rebuilt.iter().map(|k| k.as_str()).collect();
            Some(format!(
                "what it is used through is built anew ({})",
                names.join(", ")
            ))
        };
        match (why, smoke_failed(recorded)) {
            (Some(why), Some(e)) => Some(format!("{why}; last time {e}")),
            (Some(why), None) => Some(why),
            (None, Some(e)) => Some(format!("last time {e}")),
            (None, None) => None,
        }
    };
    if let Some(reason) = reason {
        tp.smoke = Some(Smoke {
            checks: declared_checks(repo, d)?,
            reason,
        });
    }
    let owed = all_owed
        .iter()
        .filter(|r| r.done_at.is_none() && !r.abandoned(at, tp.lifecycle.to));
    for run in owed.filter(|r| configured(repo, r)) {
        let spec = repo.config.hooks.iter().find(|h| h.name == run.hook);
        let spec = std::sync::Arc::clone(spec.expect("configured"));
        // A gating hook holds its tenant's step: it is tried again by every apply, as a
        // failed step is, not left to wait.
        let due = spec.gating || run.due(now);
        tp.hooks.push(PlannedHook {
            spec,
            moment: run.moment,
            run: Some(run.clone()),
            due,
            lifecycle: run.lifecycle,
        });
    }
    for moment in moments(&tp) {
        for spec in repo.config.hooks.iter().filter(|h| h.on.contains(&moment)) {
            // Owed already, or done by a run stopped before the tenant's move was: that
            // run reaches the moment again, and the run it made stands.
            let known = |r: &HookRun| {
                r.hook == spec.name && r.moment == moment && !r.abandoned(at, tp.lifecycle.to)
            };
            let planned = tp
                .hooks
                .iter()
                .any(|h| h.spec.name == spec.name && h.moment == moment);
            if planned || all_owed.iter().any(known) {
                continue;
            }
            tp.hooks.push(PlannedHook {
                spec: std::sync::Arc::clone(spec),
                moment,
                run: None,
                due: true,
                lifecycle: moment_lifecycle(moment, tp.lifecycle.to),
            });
        }
    }
    Ok(Some(Planned::Changes(tp)))
}

/// The lifecycle a moment moves the tenant to, for a plan taking it to `to`.
fn moment_lifecycle(moment: Moment, to: Lifecycle) -> Option<Lifecycle> {
    match moment {
        Moment::Provisioned if to == Lifecycle::Suspended => Some(Lifecycle::Suspended),
        Moment::Provisioned | Moment::Resumed => Some(Lifecycle::Active),
        Moment::PlanChanged => None,
        Moment::Suspended => Some(Lifecycle::Suspended),
        Moment::Offboarding => Some(Lifecycle::Deprovisioning),
        Moment::Deprovisioned => Some(Lifecycle::Deprovisioned),
    }
}

/// Whether the hook an owed run is of is still in the config; a run of a hook taken out of
/// it is forgotten by the tenant's next apply.
fn configured(repo: &TenantRepo, run: &HookRun) -> bool {
    repo.config.hooks.iter().any(|h| h.name == run.hook)
}

//! `apply`: a plan, made now or saved, carried out under the state's lock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::debug;

use super::plan::{make_plan, KeyUse, PlanOptions};
use crate::apply::{progress::Progress, ApplyReport, Executor};
use crate::credentials::MasterKey;
use crate::plan::{self, Plan};
use crate::slug::Slug;
use crate::state::{LockInfo, State, Wait};
use crate::workspace::Workspace;
use crate::Error;

pub struct ApplyOptions {
    pub plan: PlanOptions,
    /// This runner's share of the fleet (`--shard K/N`): only its tenants are planned,
    /// locked and applied.
    pub shard: Option<super::Shard>,
    pub parallelism: usize,
    pub lock_timeout: Duration,
    /// Cancelled to interrupt the run: see [`crate::apply`]'s guarantees.
    pub stop: tokio_util::sync::CancellationToken,
}

pub enum ApplyOutcome {
    NoChanges(Plan),
    Declined,
    /// The plan without its tenants' changes, which the run took and let go of as each
    /// tenant ended: its summary and what the tenants shared.
    Applied {
        plan: Plan,
        report: ApplyReport,
    },
}

/// Applies a saved plan, or a fresh one that `confirm` approves. The whole run, the
/// confirmation included, holds the state lock.
pub async fn apply(
    ws: &Workspace,
    saved: Option<Plan>,
    opts: &ApplyOptions,
    confirm: impl FnOnce(&Plan) -> bool,
    progress: &Progress,
) -> Result<ApplyOutcome, Error> {
    let backend = ws.backend();
    let info = LockInfo::new("apply");
    let run_by = info.who.clone();
    let wait = Wait {
        timeout: opts.lock_timeout,
        stop: opts.stop.clone(),
    };
    // A run of some tenants (named, or a shard's) holds only those, beside other such runs;
    // any other run, and a rotation of the master key, holds the whole state.
    let mut opts_plan = opts.plan.clone();
    if let Some(shard) = opts.shard {
        if opts_plan.rotate_master_key {
            return Err(Error::Usage(format!(
                "--shard {shard} with --rotate-master-key: a rotation re-keys every tenant, so one runner carries it out for the whole state\n  hint: run the rotation without --shard"
            )));
        }
        if let Some(outside) = opts_plan.tenants.iter().flatten().find(|s| !shard.holds(s)) {
            return Err(Error::Usage(format!(
                "--tenant {outside} is not in shard {shard}: another runner's share holds it"
            )));
        }
        let share = ws
            .repo
            .tenants
            .iter()
            .map(|t| &t.slug)
            .filter(|s| shard.holds(s))
            .filter(|s| {
                opts_plan
                    .tenants
                    .as_ref()
                    .is_none_or(|only| only.contains(s))
            })
            .cloned()
            .collect();
        opts_plan.tenants = Some(share);
    }
    let opts_plan = &opts_plan;
    let scope: Option<std::collections::BTreeSet<String>> = match &saved {
        _ if opts_plan.rotate_master_key => None,
        Some(p) if !p.rotates_master_key => {
            Some(p.tenants.iter().map(|t| t.slug.to_string()).collect())
        }
        Some(_) => None,
        None => opts_plan
            .tenants
            .as_ref()
            .map(|only| only.iter().map(Slug::to_string).collect()),
    };
    // A saved plan already stale is refused before anything is locked, so the refusal
    // writes nothing (a lease is a write); it is checked again under the lock.
    if let Some(p) = &saved {
        stale(p, &backend.load().await?)?;
    }
    let lock = match &scope {
        Some(slugs) => backend.lock_tenants(info, &wait, slugs).await?,
        None => backend.lock(info, &wait).await?,
    };
    let prepared = async {
        // A run of some tenants that holds each reads their records alone (a tenant's change
        // costs one tenant); a saved plan is checked against the state it was made from.
        let mut state = match (&scope, &saved) {
            (Some(slugs), None) if lock.writes_some() => {
                let mut state = backend.load_tenants(slugs).await?;
                state.held_by_this_run();
                state
            }
            _ => backend.load().await?,
        };
        tracing::debug!(records = state.tenants.len(), "read the state to apply");
        let plan = match saved {
            Some(p) => {
                stale(&p, &state)?;
                p
            }
            None => {
                let p = make_plan(ws, &state, opts_plan, KeyUse::Needed).await?;
                if p.has_changes() && !confirm(&p) {
                    return Ok(None);
                }
                forget_settled_failures(&mut state, ws, opts_plan, &p);
                p
            }
        };
        Ok(Some((plan, state)))
    }
    .await;
    let (plan, state) = match prepared {
        Ok(Some(r)) => r,
        Ok(None) => {
            lock.unlock().await?;
            return Ok(ApplyOutcome::Declined);
        }
        Err(e) => {
            let _ = lock.unlock().await;
            return Err(e);
        }
    };
    if !plan.has_changes() {
        // Checkpoints a killed run left in a document (s3) are folded into one snapshot, so
        // they are not listed and read by every later run; failures forgotten are written.
        let mut lock = lock;
        let mut state = state;
        // A state written before keys were recorded learns its key here, and a rotation
        // that re-keys nobody (no tenant has a role yet) still moves the state to the key.
        let settled = state.checkpoints > 0
            || state.observations > 0
            || !state.unwritten.is_empty()
            || state.header_behind;
        let learns_key = !state.is_new()
            && plan.master_key_id.is_some()
            && state.master_key_id != plan.master_key_id
            && (state.master_key_id.is_none() || plan.rotates_master_key);
        if learns_key {
            state.master_key_id = plan.master_key_id.clone();
        }
        if settled || learns_key {
            state.prepare_snapshot();
            if let Err(e) = lock.persist(&mut state).await {
                let _ = lock.unlock().await;
                return Err(e.into());
            }
        }
        lock.unlock().await?;
        return Ok(ApplyOutcome::NoChanges(plan));
    }
    let checked = check_replacements(&plan, opts.plan.allow_replace).and_then(|()| {
        check_purges(
            &plan,
            // Runners of shards purge side by side: each may purge its share of the most.
            ws.repo.config.safety.max_purges_per_run / opts.shard.map_or(1, |s| s.count as usize),
            opts.plan.allow_mass_purge,
        )
    });
    if let Err(e) = checked {
        let _ = lock.unlock().await;
        return Err(e);
    }
    let key = match ws.key().and_then(|k| check_plan_key(&plan, &state, k)) {
        Ok(k) => k,
        Err(e) => {
            let _ = lock.unlock().await;
            return Err(e);
        }
    };
    let targets = Arc::new(ws.targets(plan.migrations.clone()));
    if !plan.tenants.is_empty() {
        // Before this run writes events: a subscriber added with it is given them.
        let subscribers = ws.repo.config.subscribers();
        if let Err(e) = targets.control.register_subscribers(&subscribers).await {
            let _ = lock.unlock().await;
            return Err(Error::failed("recording the event subscribers", e));
        }
    }
    let mut executor = executor(ws, &plan, opts, targets, key, run_by);
    let started = Instant::now();
    let mut lock = lock;
    let mut state = state;
    let begun = crate::rollout::gate::begin(&mut state, &plan, scope.is_none());
    if let Some(e) = begun.completed.as_ref().and_then(|c| c.event.as_ref()) {
        // Before the state says it, as at the end of a run (`Executor::run`).
        if let Err(err) = executor
            .targets
            .control
            .emit_fleet_event(&e.event_id, e.kind, e.detail.clone())
            .await
        {
            tracing::warn!(error = %crate::causes::chain(&err), "the rollout's event was not written");
        }
    }
    if begun.changed {
        // Before any tenant starts: the wave it goes in, and no attempt of a run that died
        // left open to count against the wave's limit.
        state.prepare_snapshot();
        if let Err(e) = lock.persist(&mut state).await {
            let _ = lock.unlock().await;
            return Err(e.into());
        }
    }
    executor.rollout = begun.gate;
    // The run owns the tenants' plans, and drops each as it is done; the plan keeps its
    // summary for the report.
    let mut plan = plan;
    let tenants = std::mem::take(&mut plan.tenants);
    let report = executor
        .run(&plan, tenants, state, lock.as_mut(), progress)
        .await;
    // Let go of the lock whatever happened: a lock object (s3) would outlive this run.
    let unlocked = lock.unlock().await;
    let mut report = report?;
    unlocked?;
    if let Some(c) = begun.completed {
        report.rollout.get_or_insert(c.said);
    }
    // A run that only records the rollout's step says which.
    if report.rollout.is_none() {
        report.rollout = plan
            .rollout
            .as_ref()
            .filter(|r| r.writes)
            .and_then(|r| r.said.last().cloned());
    }
    debug!(elapsed = ?started.elapsed(), s3_requests = ws.s3_requests(), "applied");
    // Each plugged slot's as a line of its own (`broker_requests: 12`), for benchmarks.
    for (slot, requests) in ws.plugged_requests() {
        debug!("{slot}_requests: {requests}");
    }
    Ok(ApplyOutcome::Applied { plan, report })
}

/// What carries out `plan`'s tenants for this run.
pub(super) fn executor(
    ws: &Workspace,
    plan: &Plan,
    opts: &ApplyOptions,
    targets: Arc<crate::configured::Targets>,
    key: MasterKey,
    run_by: String,
) -> Executor {
    Executor {
        targets,
        run_by,
        key,
        state_name: ws.repo.config.state.name.clone(),
        parallelism: opts.parallelism,
        // What the plan was made from (a saved plan's own commit), not what is checked out.
        git_commit: plan.git_commit.clone().or_else(|| ws.git_commit.clone()),
        root: ws.repo.root.clone(),
        stop: opts.stop.clone(),
        rollout: None,
    }
}

/// Refuses `plan` when the state moved since it was made.
fn stale(plan: &Plan, state: &State) -> Result<(), Error> {
    let Some(moved) = plan.state.moved(state) else {
        return Ok(());
    };
    let of_some = plan.state.records.as_ref().is_some_and(|r| !r.whole);
    if of_some && plan.state.lineage == state.lineage {
        return Err(Error::StaleRecords { moved });
    }
    Err(Error::StalePlan {
        planned: plan.state.serial,
        planned_lineage: or_none(&plan.state.lineage),
        current: state.serial,
        current_lineage: or_none(&state.lineage),
    })
}

/// A tenant whose last apply failed and that the plan now finds as its file asks (the
/// cause was reverted, or mended by hand) has nothing left that failed: its failure is
/// forgotten, recorded as a checkpoint like any other change of the state.
pub(super) fn forget_settled_failures(
    state: &mut State,
    ws: &Workspace,
    opts: &PlanOptions,
    plan: &Plan,
) {
    // Sets, not scans: after a bad migration every tenant of a large fleet has failed.
    let planned: std::collections::HashSet<&str> = match &opts.tenants {
        Some(only) => only.iter().map(Slug::as_str).collect(),
        None => ws.repo.tenants.iter().map(|t| t.slug.as_str()).collect(),
    };
    let changing: std::collections::HashSet<&str> =
        plan.tenants.iter().map(|p| p.slug.as_str()).collect();
    let settled: Vec<String> = state
        .tenants
        .iter()
        .filter(|(slug, t)| {
            t.last_failure.is_some()
                && planned.contains(slug.as_str())
                && !changing.contains(slug.as_str())
        })
        .map(|(slug, _)| slug.clone())
        .collect();
    for slug in settled {
        let mut t = state.tenants[&slug].clone();
        t.last_failure = None;
        state.record(slug, t);
    }
}

/// The key to apply `plan` with: the one it was made with, and (unless it rotates the key)
/// the one the state records. A saved plan may be applied in another job than the one that
/// made it, with other secrets.
pub(super) fn check_plan_key(
    plan: &Plan,
    state: &State,
    key: MasterKey,
) -> Result<MasterKey, Error> {
    let id = key.id();
    let expected = match &plan.master_key_id {
        Some(planned) => Some(planned.as_str()),
        None if plan.rotates_master_key => None,
        None => state.master_key_id.as_deref(),
    };
    match expected {
        Some(e) if e != id => Err(Error::KeyMismatch {
            recorded: e.to_string(),
            found: id,
            from: key.source().to_string(),
        }),
        _ => Ok(key),
    }
}

/// A replace builds a new slice beside the old one; it is never done without being asked.
pub(super) fn check_replacements(plan: &Plan, allowed: bool) -> Result<(), Error> {
    let replaced: Vec<String> = plan
        .tenants
        .iter()
        .flat_map(|t| {
            t.changes
                .iter()
                .filter(|c| c.action == plan::Action::Replace)
                .map(move |c| format!("{}/{}", t.slug, c.key))
        })
        .collect();
    if replaced.is_empty() || allowed {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "the plan replaces {}; nothing was applied\n  hint: a replace builds a new slice and keeps the old one with its data; pass --allow-replace to go ahead",
        replaced.join(", ")
    )))
}

/// A purge destroys a whole tenant's data for good: more of them in one run than the
/// config allows (a bulk edit of tenant files, a hold miscounted) needs saying so.
pub(super) fn check_purges(plan: &Plan, max: usize, allowed: bool) -> Result<(), Error> {
    let purged: Vec<&str> = plan
        .tenants
        .iter()
        .filter(|t| t.action == plan::TenantAction::Purge)
        .map(|t| t.slug.as_str())
        .collect();
    if purged.len() <= max || allowed {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "the plan purges {} tenants ({}), more than safety.max_purges_per_run ({max}); nothing was applied\n  hint: check that every one of them is meant to go; pass --allow-mass-purge to go ahead",
        purged.len(),
        purged.join(", ")
    )))
}

pub(super) fn or_none(lineage: &str) -> String {
    if lineage.is_empty() {
        "no state yet".into()
    } else {
        format!("lineage {lineage}")
    }
}

/// Reads a plan saved with `plan --out`.
pub fn read_plan_file(path: &std::path::Path) -> Result<Plan, Error> {
    let bad = |message: String| Error::BadPlanFile {
        path: path.display().to_string(),
        message,
    };
    /// The version alone, read before the rest: a plan of another version may not parse.
    /// (Not the whole document as a JSON value first: a large plan would be held twice.)
    #[derive(serde::Deserialize)]
    struct Version {
        format_version: Option<u64>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let version = serde_json::from_str::<Version>(&text)
        .map_err(|e| bad(e.to_string()))?
        .format_version;
    if version != Some(plan::PLAN_FORMAT_VERSION as u64) {
        return Err(bad(format!(
            "format version {version:?}; this tenant-reconcile reads {}",
            plan::PLAN_FORMAT_VERSION
        )));
    }
    serde_json::from_str(&text).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    /// A plan file of another format version is refused by its version, whatever else it
    /// holds; one that is not a plan at all, by what is wrong with it.
    #[test]
    fn a_plan_file_is_read_by_its_version_first() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plan.json");
        std::fs::write(&file, r#"{"format_version": 9, "tenants": "not a list"}"#).unwrap();
        let e = super::read_plan_file(&file).unwrap_err().to_string();
        assert!(e.contains("format version Some(9)"), "{e}");
        std::fs::write(&file, "not json").unwrap();
        let e = super::read_plan_file(&file).unwrap_err().to_string();
        assert!(e.contains("expected ident"), "{e}");
        std::fs::write(&file, r#"{"format_version": 1}"#).unwrap();
        let e = super::read_plan_file(&file).unwrap_err().to_string();
        assert!(e.contains("missing field"), "{e}");
    }
}

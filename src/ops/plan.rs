//! `plan`: the desired state compiled, the recorded state and the live resources read, and
//! the difference between them.

use std::time::Instant;

use rayon::prelude::*;
use tracing::debug;

use super::key::{check_key, keyless_note};
use crate::credentials::MasterKey;
use crate::desired;
use crate::plan::{self, Plan, PlanInput};
use crate::repo::TenantRepo;
use crate::slug::Slug;
use crate::state::State;
use crate::targets::provider::{ProviderError, RefreshTarget};
use crate::workspace::Workspace;
use crate::Error;

#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub refresh: bool,
    /// Only these tenants (all when `None`; none at all when an empty list, as a
    /// `--changed-since` that reaches nobody selects).
    pub tenants: Option<Vec<Slug>>,
    pub allow_missing_tenants: bool,
    /// Tenants whose database password changes: their credentials version goes up by one.
    pub rotate_credentials: Vec<Slug>,
    /// Apply may replace resources (a tenant moving to another isolation mode).
    pub allow_replace: bool,
    /// The master key differs from the one the state records on purpose: every tenant's
    /// role is re-keyed.
    pub rotate_master_key: bool,
    /// Tenants whose resources that exist but are not this state's are adopted, as
    /// terraform's import adopts: the plan shows each, and apply marks it ours.
    pub import: Vec<Slug>,
    /// Apply may purge more tenants than `safety.max_purges_per_run`.
    pub allow_mass_purge: bool,
    /// `tenants` are every tenant the inputs changed since a base reach (`--changed-since`),
    /// read with the whole state: a rollout the change starts is planned whole among them.
    pub reach_of_changes: bool,
}

/// Makes a plan from the files, the recorded `state` (read without its lock, as
/// [`Workspace::open_with_state`] reads it) and, with refresh, the live resources.
///
/// The master key is not needed: what is derived from it shows as known after apply, so the
/// plan of a pull request runs without the pipeline's key. Apply needs it.
pub async fn plan(ws: &Workspace, state: State, opts: &PlanOptions) -> Result<Plan, Error> {
    let plan = make_plan(ws, &state, opts, KeyUse::IfAny).await;
    drop_in_background(state);
    // What was sent to S3 (the state's reads and the buckets' refresh), for benchmarks.
    debug!(s3_requests = ws.s3_requests(), "planned");
    plan
}

/// Frees `value` on a thread of its own. The state and the live resources of a large fleet
/// are hundreds of thousands of small allocations, and freeing them is work nobody waits for:
/// the command prints the plan (or applies it) meanwhile, and exits.
pub(super) fn drop_in_background<T: Send + 'static>(value: T) {
    std::thread::spawn(move || drop(value));
}

/// Whether a plan is made to be applied at once (with the key the passwords come from), or
/// to be shown (with the key if there is one).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyUse {
    Needed,
    IfAny,
}

pub(super) async fn make_plan(
    ws: &Workspace,
    state: &State,
    opts: &PlanOptions,
    key_use: KeyUse,
) -> Result<Plan, Error> {
    check_selected(ws, "--tenant", opts.tenants.as_deref().unwrap_or_default())?;
    check_selected(ws, "--rotate-credentials", &opts.rotate_credentials)?;
    check_selected(ws, "--import", &opts.import)?;
    let from_config: Vec<Slug> = ws
        .repo
        .config
        .import
        .iter()
        .filter_map(|s| Slug::parse(s).ok())
        .collect();
    check_selected(ws, "tenant-reconcile.hcl: import", &from_config)?;
    let import: Vec<Slug> = opts.import.iter().chain(&from_config).cloned().collect();
    let key = match ws.find_key() {
        Err(Error::Key(e)) if key_use == KeyUse::IfAny && e.is_absent() => None,
        found => found?,
    };
    let rekey = match &key {
        None if key_use == KeyUse::IfAny && !opts.rotate_master_key => keyless_note(state),
        _ => check_key(ws, state, key.as_ref(), opts.rotate_master_key)?,
    };
    let targets = ws.targets(ws.repo.migrations.clone());
    let placements = place(ws, state, opts, &targets).await?;
    // Refresh starts first and runs while the plan is checked. Compiling waits for it: each
    // tenant is diffed the moment it is compiled, so the whole desired fleet is never held.
    let refresh = opts.refresh.then(|| {
        let targets = targets.clone();
        let wanted = refresh_targets(&ws.repo, opts.tenants.as_deref(), state, &placements);
        let whole_fleet = opts.tenants.is_none();
        tokio::spawn(async move {
            let started = Instant::now();
            let live = targets.refresh(wanted, whole_fleet).await;
            debug!(elapsed = ?started.elapsed(), "refreshed the live state");
            live
        })
    });
    // Refused plans (an edited migration, too many tenant files gone) need not wait for
    // the refresh.
    let planner = match plan::Planner::new(PlanInput {
        repo: &ws.repo,
        state,
        live: None,
        targets: &targets,
        git_commit: ws.git_commit.clone(),
        allow_missing_tenants: opts.allow_missing_tenants,
        import: &import,
    }) {
        Ok(p) => p,
        Err(e) => {
            if let Some(task) = refresh {
                task.abort();
            }
            return Err(e.into());
        }
    };
    // Which tenants plan from which shared inputs, while the refresh runs.
    // A plan of some tenants neither starts a rollout nor moves one on: it cannot see the
    // whole of a wave. The tenants a change reaches, with the whole state, can.
    let some = state.scope.is_some()
        || ws.repo.listed.is_some()
        || (opts.tenants.is_some() && !opts.reach_of_changes);
    let decision = match crate::rollout::decide(ws, state, some) {
        Ok(d) => d,
        Err(e) => {
            if let Some(task) = refresh {
                task.abort();
            }
            return Err(e);
        }
    };
    let live = match refresh {
        Some(task) => Some(
            task.await
                .map_err(|e| Error::Refresh(ProviderError::failed("the refresh stopped")(e)))?
                .map_err(Error::Refresh)?,
        ),
        None => None,
    };
    let planner = planner.with_live(live.as_ref());
    // Each tenant is compiled and diffed at once, and only its changes are kept.
    let started = Instant::now();
    let compiling = Compiling {
        state,
        key: key.as_ref(),
        select: desired::Selection {
            only: None,
            rotate: &opts.rotate_credentials,
            defer_seed: true,
            placements: Some(&placements),
        },
    };
    let planned = match decision.from_repo.is_some() {
        false => compiling.run(&ws.repo, &planner, opts.tenants.as_deref(), &decision)?,
        true => compiling.in_waves(ws, &planner, opts.tenants.as_deref(), decision)?,
    };
    let (planned, said) = planned;
    let mut plan = planner.finish(planned);
    plan.rollout = said;
    plan.master_key_id = key.as_ref().map(MasterKey::id);
    plan.rotates_master_key = opts.rotate_master_key;
    if let Some(rekey) = rekey {
        plan.warnings.insert(0, rekey);
    }
    debug!(elapsed = ?started.elapsed(), "compiled and diffed");
    drop_in_background(live);
    Ok(plan)
}

/// What every compile of a plan shares.
struct Compiling<'a> {
    state: &'a State,
    key: Option<&'a MasterKey>,
    select: desired::Selection<'a>,
}

type Compiled = (
    Vec<plan::Planned>,
    Option<crate::model::rollout::RolloutPlan>,
);

impl Compiling<'_> {
    /// Every selected tenant compiled from the head (no rollout splits the fleet).
    fn run(
        &self,
        repo: &TenantRepo,
        planner: &plan::Planner<'_>,
        only: Option<&[Slug]>,
        decision: &crate::rollout::Decision,
    ) -> Result<Compiled, Error> {
        let planned = self.tenants(repo, planner, only, decision)?;
        let said = (repo.config.rollout.is_some() || !decision.plan.said.is_empty())
            .then(|| decision.plan.clone());
        Ok((planned.into_iter().map(|(_, p)| p).collect(), said))
    }

    /// The tenants the rollout reached compiled from the head, the others from the shared
    /// inputs they run on; the rollout moved on as far as what they need lets it, and the
    /// changes that must wait taken out.
    fn in_waves(
        &self,
        ws: &Workspace,
        planner: &plan::Planner<'_>,
        only: Option<&[Slug]>,
        mut decision: crate::rollout::Decision,
    ) -> Result<Compiled, Error> {
        let mut from_repo = decision.from_repo.take().expect("a rollout's inputs");
        // Looked up once per tenant file: a pull request's plan selects thousands.
        let only: Option<std::collections::HashSet<&Slug>> = only.map(|o| o.iter().collect());
        let selected = ws
            .repo
            .tenants
            .iter()
            .filter(|t| only.as_ref().is_none_or(|o| o.contains(&t.slug)));
        // A tenant whose file names a plan the old inputs do not have takes the head's.
        let (pinned, head): (Vec<&crate::repo::TenantSpec>, Vec<_>) = selected.partition(|t| {
            decision.pinned(t.slug.as_str()) && from_repo.plans.contains_key(&t.plan)
        });
        let head: Vec<Slug> = head.iter().map(|t| t.slug.clone()).collect();
        from_repo.tenants = pinned.iter().map(|t| (*t).clone()).collect();
        from_repo.listed = ws.repo.listed.clone();
        let pinned: Vec<Slug> = pinned.iter().map(|t| t.slug.clone()).collect();
        let mut planned = self.tenants(&ws.repo, planner, Some(&head), &decision)?;
        planned.extend(self.tenants(
            &from_repo,
            &planner.for_repo(&from_repo),
            Some(&pinned),
            &decision,
        )?);
        loop {
            let changing: std::collections::HashSet<String> = planned
                .iter()
                .filter(|(_, p)| matches!(p, plan::Planned::Changes(_)))
                .map(|(s, _)| s.to_string())
                .collect();
            let reached: std::collections::HashSet<String> =
                decision.settle(&changing).into_iter().collect();
            let reached: Vec<Slug> = ws
                .repo
                .tenants
                .iter()
                .map(|t| &t.slug)
                .filter(|s| reached.contains(s.as_str()))
                .filter(|s| only.as_ref().is_none_or(|o| o.contains(s)))
                .cloned()
                .collect();
            if reached.is_empty() {
                break;
            }
            planned.retain(|(s, _)| !reached.contains(s));
            planned.extend(self.tenants(&ws.repo, planner, Some(&reached), &decision)?);
        }
        let mut held = Vec::new();
        let running = decision.running().is_some();
        planned.retain_mut(|(slug, p)| {
            let plan::Planned::Changes(tp) = p else {
                return true;
            };
            if decision.holds(slug.as_str(), self.state) {
                held.push(slug.to_string());
                return false;
            }
            // A purge is no change of inputs: it goes its own way (in waves of purges).
            let purge = matches!(
                tp.action,
                plan::TenantAction::Purge | plan::TenantAction::ExpireExport
            );
            tp.in_rollout = running && !purge && decision.reached(slug.as_str());
            true
        });
        decision.say_held(held);
        decision.headline();
        planned.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((
            planned.into_iter().map(|(_, p)| p).collect(),
            Some(decision.plan),
        ))
    }

    /// The tenants of `repo` (`only` those), each compiled and diffed; a tenant a running
    /// rollout takes on gets its smoke tests, which say whether its wave may go on.
    fn tenants(
        &self,
        repo: &TenantRepo,
        planner: &plan::Planner<'_>,
        only: Option<&[Slug]>,
        decision: &crate::rollout::Decision,
    ) -> Result<Vec<(Slug, plan::Planned)>, Error> {
        let select = desired::Selection {
            only,
            ..self.select.clone()
        };
        let running = decision.running();
        Ok(desired::compile_each(
            repo,
            self.state,
            self.key,
            &select,
            |d| {
                let mut planned = planner.tenant(&d)?;
                if let (Some(r), Some(plan::Planned::Changes(tp))) = (running, &mut planned) {
                    let active = tp.lifecycle.to == crate::state::Lifecycle::Active;
                    if active && tp.smoke.is_none() && decision.reached(d.slug().as_str()) {
                        tp.smoke = Some(plan::Smoke {
                            checks: plan::declared_checks(repo, &d)?,
                            reason: format!("rollout {} checks it before its wave goes on", r.id),
                        });
                    }
                }
                Ok(planned.map(|p| (d.slug().clone(), p)))
            },
        )?)
    }
}

/// Where the tenants not placed yet go, when the config names several Postgres servers:
/// decided before the refresh, which reads each tenant's data on its server, from the
/// tenants the placement catalog counts on each (the state's count without refresh).
async fn place(
    ws: &Workspace,
    state: &State,
    opts: &PlanOptions,
    targets: &crate::configured::Targets,
) -> Result<desired::placement::Decisions, Error> {
    if ws.repo.config.servers.is_empty() {
        return Ok(Default::default());
    }
    let loads = match opts.refresh {
        true => targets
            .placement_loads()
            .await
            .map_err(Error::Refresh)?
            .unwrap_or_default(),
        false => desired::placement::recorded_loads(state),
    };
    Ok(desired::placement::decide(
        &ws.repo,
        state,
        opts.tenants.as_deref(),
        loads,
    ))
}

pub(super) fn check_selected(ws: &Workspace, flag: &str, slugs: &[Slug]) -> Result<(), Error> {
    for slug in slugs {
        if !ws.repo.has_file(slug.as_str()) {
            return Err(Error::Usage(format!(
                "{flag} {slug}: there is no tenants/{slug}.yaml"
            )));
        }
    }
    Ok(())
}

/// What refresh should look at: every selected tenant with a file, with the keys it
/// will want (known from the repo before compiling) and any it had.
pub(super) fn refresh_targets(
    repo: &TenantRepo,
    only: Option<&[Slug]>,
    state: &State,
    placements: &desired::placement::Decisions,
) -> Vec<RefreshTarget> {
    let wanted = desired::resource_keys(repo);
    let now = std::time::SystemTime::now();
    repo.tenants
        .par_iter()
        .filter(|t| only.is_none_or(|o| o.contains(&t.slug)))
        .map(|t| {
            let recorded = state.tenants.get(t.slug.as_str());
            let unclaimed =
                recorded.is_none_or(|r| wanted.iter().any(|k| !r.resources.contains_key(k)));
            // Only a leaving tenant has an export to look for (one called back keeps its
            // last export recorded, unread).
            let leaving = t.status == crate::repo::Status::Deprovisioned;
            let export = desired::Key::new(desired::Kind::EXPORT);
            let mut keys = wanted.clone();
            if let Some(r) = recorded {
                keys.extend(
                    r.resources
                        .keys()
                        .filter(|k| !wanted.contains(k) && **k != export)
                        .cloned(),
                );
            }
            if leaving {
                keys.push(export);
            }
            let mut buckets = vec![crate::targets::buckets::name(
                &repo.config.targets.buckets,
                &repo.config.s3,
                t,
            )];
            let recorded_bucket = recorded
                .and_then(|r| r.resources.get(&desired::Key::new(desired::Kind::BUCKET)))
                .and_then(|a| match a.value_of("name") {
                    Some(serde_json::Value::String(n)) => Some(n),
                    _ => None,
                })
                .filter(|n| !n.is_empty() && *n != buckets[0]);
            buckets.extend(recorded_bucket);
            let plan = &repo.plans[&t.plan];
            let purge = leaving && {
                let effective = crate::offboarding::Leaving {
                    status: t.status,
                    offboarding: t.offboarding,
                    retention_days: plan.retention_days,
                };
                // Before refresh only the state is known: a tenant it records as exported
                // is looked at as one held, in case a run moved its registry row on and
                // stopped before recording that (counting more than needed costs reads).
                let exported = recorded
                    .filter(|r| {
                        r.resources
                            .contains_key(&desired::Key::new(desired::Kind::EXPORT))
                    })
                    .map(|_| crate::state::Lifecycle::Deprovisioning);
                matches!(
                    crate::offboarding::phase_of(&effective, recorded, exported, now),
                    crate::offboarding::Phase::Due | crate::offboarding::Phase::Purging
                )
            };
            let decided = match placements.get(&t.slug) {
                Some(Ok(placed)) => Some(placed.server.clone()),
                _ => None,
            };
            let recorded_server = desired::placement::recorded_server(recorded);
            let server = recorded_server.map(str::to_string).or(decided.clone());
            RefreshTarget {
                // Placed, and given another server by this plan: a move.
                moving_to: decided.filter(|_| recorded_server.is_some()),
                server,
                // What a purge destroys with the rest, or the moved copies whose hold is
                // over: each target may count what they hold.
                retired: match recorded {
                    Some(r) if purge => r.retired.clone(),
                    Some(r) => {
                        crate::offboarding::leftovers_due(r, t.status, plan.retention_days, now)
                            .cloned()
                            .collect()
                    }
                    None => Vec::new(),
                },
                purge,
                // The loader checked that the plan exists.
                isolation: t.isolation.unwrap_or(repo.plans[&t.plan].isolation),
                unclaimed,
                slug: t.slug.clone(),
                region: t.region.clone(),
                tenant_id: recorded.and_then(|r| r.tenant_id.clone()),
                keys,
                buckets,
            }
        })
        .collect()
}

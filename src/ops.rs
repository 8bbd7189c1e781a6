//! The operations behind the commands. The binary parses arguments, calls one of these and
//! prints; all decisions live here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use tracing::debug;

use crate::apply::{progress::Progress, ApplyReport, Executor};
use crate::credentials::MasterKey;
use crate::desired;
use crate::plan::{self, Plan, PlanInput};
use crate::repo::TenantRepo;
use crate::slug::Slug;
use crate::state::{LockInfo, Released, State, Wait};
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
}

/// Makes a plan from the files, the recorded `state` (read without its lock, as
/// [`Workspace::open_with_state`] reads it) and, with refresh, the live resources.
///
/// The master key is not needed: what is derived from it shows as known after apply, so the
/// plan of a pull request runs without the pipeline's key. Apply needs it.
pub async fn plan(ws: &Workspace, state: State, opts: &PlanOptions) -> Result<Plan, Error> {
    let plan = make_plan(ws, &state, opts, KeyUse::IfAny).await;
    drop_in_background(state);
    plan
}

/// Frees `value` on a thread of its own. The state and the live resources of a large fleet
/// are hundreds of thousands of small allocations, and freeing them is work nobody waits for:
/// the command prints the plan (or applies it) meanwhile, and exits.
fn drop_in_background<T: Send + 'static>(value: T) {
    std::thread::spawn(move || drop(value));
}

/// Whether a plan is made to be applied at once (with the key the passwords come from), or
/// to be shown (with the key if there is one).
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyUse {
    Needed,
    IfAny,
}

async fn make_plan(
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
    // Refresh starts first and runs while the plan is checked. Compiling waits for it: each
    // tenant is diffed the moment it is compiled, so the whole desired fleet is never held.
    let refresh = opts.refresh.then(|| {
        let targets = targets.clone();
        let wanted = refresh_targets(&ws.repo, opts.tenants.as_deref(), state);
        tokio::spawn(async move {
            let started = Instant::now();
            let live = targets.refresh(wanted).await;
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
    let live = match refresh {
        Some(task) => Some(
            task.await
                .map_err(|e| {
                    Error::Refresh(ProviderError::Message(format!("refresh stopped: {e}")))
                })?
                .map_err(Error::Refresh)?,
        ),
        None => None,
    };
    let planner = planner.with_live(live.as_ref());
    // Each tenant is compiled and diffed at once, and only its changes are kept.
    let started = Instant::now();
    let planned = desired::compile_each(
        &ws.repo,
        state,
        key.as_ref(),
        &desired::Selection {
            only: opts.tenants.as_deref(),
            rotate: &opts.rotate_credentials,
            defer_seed: true,
        },
        |d| planner.tenant(&d),
    )?;
    let mut plan = planner.finish(planned);
    plan.master_key_id = key.as_ref().map(MasterKey::id);
    plan.rotates_master_key = opts.rotate_master_key;
    if let Some(rekey) = rekey {
        plan.warnings.insert(0, rekey);
    }
    debug!(elapsed = ?started.elapsed(), "compiled and diffed");
    drop_in_background(live);
    Ok(plan)
}

/// What changed outside tenant-reconcile: the recorded state against the live resources,
/// for every tenant with a file (or only `tenants`). Writes nothing.
pub async fn drift(
    ws: &Workspace,
    tenants: Option<&[Slug]>,
) -> Result<plan::drift::DriftReport, Error> {
    check_selected(ws, "--tenant", tenants.unwrap_or_default())?;
    let state = ws.backend().load().await?;
    let targets = ws.targets(ws.repo.migrations.clone());
    let wanted = refresh_targets(&ws.repo, tenants, &state);
    let slugs: Vec<Slug> = wanted.iter().map(|t| t.slug.clone()).collect();
    let live = targets.refresh(wanted).await.map_err(Error::Refresh)?;
    Ok(plan::drift::report(&state, &live, &slugs))
}

/// Refuses a master key other than the one the state's passwords were derived from: with a
/// wrong key (a typo in a CI secret) every tenant's password would be replaced, and every
/// tenant locked out of its data. A deliberate change (`rotate`) passes, and returns the
/// warning the plan shows.
pub(crate) fn check_key(
    ws: &Workspace,
    state: &State,
    key: Option<&MasterKey>,
    rotate: bool,
) -> Result<Option<String>, Error> {
    let Some(recorded) = state.master_key_id.as_deref() else {
        // A state from before keys were recorded (or rewritten by such a build): the key
        // is tried on one recorded password instead.
        return match key {
            Some(k) if !rotate => check_key_by_fingerprint(state, k).map(|()| None),
            _ => Ok(None),
        };
    };
    match key {
        Some(k) if k.id() == recorded => Ok(None),
        Some(k) if rotate => Ok(Some(format!(
            "the master key changes from {recorded} to {} (from {}): every tenant's role gets a password derived from the new key",
            k.id(),
            k.source()
        ))),
        Some(k) => Err(Error::KeyMismatch {
            recorded: recorded.to_string(),
            found: k.id(),
            from: k.source().to_string(),
        }),
        None => Err(Error::Usage(format!(
            "this state's passwords were derived from the master key {recorded}, and there is no master key here ({} does not exist); nothing was done\n  hint: restore the key file, or set {}",
            ws.local_key_path().display(),
            crate::credentials::MASTER_KEY_ENV
        ))),
    }
}

/// What a plan made without the master key says: what it could not compare, and that
/// apply will need the key. Nothing for a state that has recorded nothing yet.
fn keyless_note(state: &State) -> Option<String> {
    if state.tenants.is_empty() {
        return None;
    }
    Some(format!(
        "there is no master key here ({} or master_key_file): the passwords derived from it are not compared, and show as known after apply where they change; apply needs the key{}",
        crate::credentials::MASTER_KEY_ENV,
        state
            .master_key_id
            .as_deref()
            .map(|id| format!(" this state was applied with ({id})"))
            .unwrap_or_default()
    ))
}

/// Whether `key` derives the password the state recorded for some tenant's role.
fn check_key_by_fingerprint(state: &State, key: &MasterKey) -> Result<(), Error> {
    let role = crate::desired::Key::new(crate::desired::Kind::Role);
    let sample = state.tenants.iter().find_map(|(slug, t)| {
        let attrs = t.resources.get(&role)?;
        let fingerprint = attrs.str("password_fingerprint");
        let version = attrs.get("credentials_version")?.as_u64()?;
        fingerprint.starts_with("sha256:").then_some((
            slug,
            t.tenant_id.as_deref()?,
            t.incarnation.as_deref(),
            attrs.str("name"),
            version,
            fingerprint,
        ))
    });
    let Some((slug, tenant_id, incarnation, name, version, fingerprint)) = sample else {
        return Ok(());
    };
    let derived = crate::credentials::fingerprint(&key.password(
        tenant_id,
        incarnation,
        name,
        version as u32,
    ));
    if derived == fingerprint {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "the master key from {} ({}) does not derive the password recorded for {slug}'s role, so it is not the key this state was applied with; nothing was done\n  hint: a wrong key would replace every tenant's password; check the secret, or pass --rotate-master-key to change the key on purpose",
        key.source(),
        key.id()
    )))
}

fn check_selected(ws: &Workspace, flag: &str, slugs: &[Slug]) -> Result<(), Error> {
    for slug in slugs {
        if !ws.repo.tenants.iter().any(|t| &t.slug == slug) {
            return Err(Error::Usage(format!(
                "{flag} {slug}: there is no tenants/{slug}.yaml"
            )));
        }
    }
    Ok(())
}

/// What refresh should look at: every selected tenant with a file, with the keys it
/// will want (known from the repo before compiling) and any it had.
fn refresh_targets(repo: &TenantRepo, only: Option<&[Slug]>, state: &State) -> Vec<RefreshTarget> {
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
            let export = desired::Key::new(desired::Kind::Export);
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
                .and_then(|r| r.resources.get(&desired::Key::new(desired::Kind::Bucket)))
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
                            .contains_key(&desired::Key::new(desired::Kind::Export))
                    })
                    .map(|_| crate::state::Lifecycle::Deprovisioning);
                matches!(
                    crate::offboarding::phase_of(&effective, recorded, exported, now),
                    crate::offboarding::Phase::Due | crate::offboarding::Phase::Purging
                )
            };
            RefreshTarget {
                retired: match recorded {
                    Some(r) if purge => r.retired.clone(),
                    _ => Vec::new(),
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

/// A tenant's database login as its target spells it: a connection URL on Postgres, the
/// role and password on the local target. Derived from the master key; never stored.
/// A tenant's login as `credentials` prints it, and why it would not work now.
pub struct Login {
    /// `role=… password=…` or a connection URL, then the broker's AMQP URL if it has one.
    pub text: String,
    /// Set when the login is refused as things stand (a suspended or leaving tenant).
    pub refused: Option<String>,
}

/// Why a tenant's login is refused in `lifecycle`, if it is.
fn refused_because(slug: &Slug, lifecycle: crate::state::Lifecycle) -> Option<String> {
    use crate::state::Lifecycle;
    match lifecycle {
        Lifecycle::Suspended => Some(format!(
            "{slug} is suspended: its login is refused until it is resumed (its file's status: active, then apply)"
        )),
        Lifecycle::Deprovisioning | Lifecycle::Deprovisioned => Some(format!(
            "{slug} is offboarded: its access was revoked, and this login is refused"
        )),
        Lifecycle::Pending | Lifecycle::Provisioning => Some(format!(
            "{slug} is not active yet: its login is held until its smoke tests and gating hooks pass and it becomes active (`tenant-reconcile show` says where it stopped)"
        )),
        _ => None,
    }
}

/// A purged tenant (or one being purged) has no data to export and no login: what is left
/// of it is its tombstone and the export its offboarding made, which is where to send
/// whoever asks.
fn refuse_purged(slug: &Slug, t: &crate::state::TenantState) -> Result<(), Error> {
    let purge = match (t.lifecycle, &t.purge) {
        (crate::state::Lifecycle::Deprovisioned, p) => format!(
            "{slug} was purged on {}",
            day_of(
                p.as_ref()
                    .and_then(|p| p.finished_at.as_deref())
                    .unwrap_or(&t.updated_at)
            )
        ),
        (_, Some(p)) => format!("{slug} is being purged (since {})", day_of(&p.started_at)),
        _ => return Ok(()),
    };
    let export = t
        .resources
        .get(&crate::desired::Key::new(crate::desired::Kind::Export))
        .map(|e| e.str("location").to_string())
        .filter(|l| !l.is_empty());
    let until = t.purge.as_ref().and_then(|p| p.export_until.as_deref());
    let removed = t
        .purge
        .as_ref()
        .and_then(|p| p.export_removed_at.as_deref());
    Err(Error::Usage(match (export, until, removed) {
        (Some(at), Some(until), _) => format!(
            "{purge}; its offboarding export is at {at} (an erasure's: kept until {}, then removed)",
            day_of(until)
        ),
        (Some(at), None, _) => format!("{purge}; its offboarding export is at {at}"),
        (None, _, Some(removed)) => format!(
            "{purge}; its offboarding export was removed on {}: nothing of its data is left",
            day_of(removed)
        ),
        (None, _, None) => format!("{purge}; it left without an offboarding export"),
    }))
}

/// The day of an RFC 3339 time, as people say when something happened.
fn day_of(at: &str) -> &str {
    at.get(..10).unwrap_or(at)
}

pub async fn credentials(ws: &Workspace, slug: &Slug) -> Result<Login, Error> {
    let state = ws.backend().load().await?;
    let Some(t) = state.tenants.get(slug.as_str()) else {
        let has_file = ws.repo.tenants.iter().any(|t| &t.slug == slug);
        return Err(Error::Usage(if has_file {
            format!("{slug} has no recorded state yet: apply it first")
        } else {
            format!("there is no tenant {slug}: no tenants/{slug}.yaml and nothing recorded")
        }));
    };
    refuse_purged(slug, t)?;
    let key = ws.find_key()?;
    // A wrong key would print a password that does not log in.
    check_key(ws, &state, key.as_ref(), false)?;
    let (Some(tenant_id), Some(key)) = (t.tenant_id.as_deref(), key) else {
        return Err(Error::Usage(format!(
            "{slug} has no login yet: apply it first"
        )));
    };
    let naming = crate::targets::data::Naming::from(&ws.repo.config.postgres);
    let role = naming.role(slug);
    let incarnation = t.incarnation.as_deref();
    let password = key.password(tenant_id, incarnation, &role, t.credentials_version);
    // The broker's login, on a line of its own, when the tenant has a vhost.
    let broker = t
        .resources
        .get(&crate::desired::Key::new(crate::desired::Kind::Vhost))
        .map(|vhost| {
            let mq = &ws.repo.config.rabbitmq;
            let user = vhost.str("user");
            let password = crate::targets::broker::password(
                &key,
                tenant_id,
                incarnation,
                user,
                t.credentials_version,
            );
            format!(
                "\n{}",
                crate::targets::broker::amqp_url(mq, user, &password, vhost.str("vhost"))
            )
        })
        .unwrap_or_default();
    let refused = refused_because(slug, t.lifecycle);
    if ws.repo.config.targets.data != "postgres" {
        return Ok(Login {
            text: format!("role={role} password={password}{broker}"),
            refused,
        });
    }
    // Where its slice is now, as recorded; the file may already ask for another mode.
    let isolation = t
        .resources
        .get(&crate::desired::Key::new(crate::desired::Kind::Database))
        .and_then(|a| a.get("isolation"))
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or(crate::repo::Isolation::Schema);
    Ok(Login {
        text: ws
            .postgres()
            .tenant_url(&naming, slug, isolation, &role, &password)
            + &broker,
        refused,
    })
}

pub struct ApplyOptions {
    pub plan: PlanOptions,
    pub parallelism: usize,
    pub lock_timeout: Duration,
    /// Cancelled to interrupt the run: see [`crate::apply`]'s guarantees.
    pub stop: tokio_util::sync::CancellationToken,
}

pub enum ApplyOutcome {
    NoChanges(Plan),
    Declined,
    Applied { plan: Plan, report: ApplyReport },
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
    let lock = backend.lock(info, &wait).await?;
    let prepared = async {
        let mut state = backend.load().await?;
        let plan = match saved {
            Some(p) => {
                if p.state.lineage != state.lineage || p.state.serial != state.serial {
                    return Err(Error::StalePlan {
                        planned: p.state.serial,
                        planned_lineage: or_none(&p.state.lineage),
                        current: state.serial,
                        current_lineage: or_none(&state.lineage),
                    });
                }
                p
            }
            None => {
                let p = make_plan(ws, &state, &opts.plan, KeyUse::Needed).await?;
                if p.has_changes() && !confirm(&p) {
                    return Ok(None);
                }
                forget_settled_failures(&mut state, ws, &opts.plan, &p);
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
        // Checkpoints a killed run left are folded into one snapshot, so they are not
        // replayed (and, on s3, listed and read) by every later run.
        let mut lock = lock;
        let mut state = state;
        // A state written before keys were recorded learns its key here, and a rotation
        // that re-keys nobody (no tenant has a role yet) still moves the state to the key.
        let settled = state.checkpoints > 0 || state.observations > 0;
        let learns_key = !state.is_new()
            && plan.master_key_id.is_some()
            && state.master_key_id != plan.master_key_id
            && (state.master_key_id.is_none() || plan.rotates_master_key);
        if learns_key {
            state.master_key_id = plan.master_key_id.clone();
        }
        if settled || learns_key {
            state.prepare_snapshot();
            if let Err(e) = lock.persist(&state).await {
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
            ws.repo.config.safety.max_purges_per_run,
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
            return Err(Error::Usage(format!(
                "recording the event subscribers: {}",
                crate::causes::chain(&e)
            )));
        }
    }
    let executor = Executor {
        targets,
        run_by,
        key,
        state_name: ws.repo.config.state.name.clone(),
        parallelism: opts.parallelism,
        // What the plan was made from (a saved plan's own commit), not what is checked out.
        git_commit: plan.git_commit.clone().or_else(|| ws.git_commit.clone()),
        root: ws.repo.root.clone(),
        stop: opts.stop.clone(),
    };
    let started = Instant::now();
    let mut lock = lock;
    let report = executor.run(&plan, state, lock.as_mut(), progress).await;
    // Let go of the lock whatever happened: a lock object (s3) would outlive this run.
    let unlocked = lock.unlock().await;
    let report = report?;
    unlocked?;
    debug!(elapsed = ?started.elapsed(), s3_requests = ws.s3_requests(),
        broker_requests = ws.broker_requests(),
        dns_requests = ws.dns_requests(),
        "applied"
    );
    Ok(ApplyOutcome::Applied { plan, report })
}

/// A tenant whose last apply failed and that the plan now finds as its file asks (the
/// cause was reverted, or mended by hand) has nothing left that failed: its failure is
/// forgotten, recorded as a checkpoint like any other change of the state.
fn forget_settled_failures(state: &mut State, ws: &Workspace, opts: &PlanOptions, plan: &Plan) {
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
fn check_plan_key(plan: &Plan, state: &State, key: MasterKey) -> Result<MasterKey, Error> {
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
fn check_replacements(plan: &Plan, allowed: bool) -> Result<(), Error> {
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
    Err(Error::Usage(format!(
        "the plan replaces {}; nothing was applied\n  hint: a replace builds a new slice and keeps the old one with its data; pass --allow-replace to go ahead",
        replaced.join(", ")
    )))
}

/// A purge destroys a whole tenant's data for good: more of them in one run than the
/// config allows (a bulk edit of tenant files, a hold miscounted) needs saying so.
fn check_purges(plan: &Plan, max: usize, allowed: bool) -> Result<(), Error> {
    let purged: Vec<&str> = plan
        .tenants
        .iter()
        .filter(|t| t.action == plan::TenantAction::Purge)
        .map(|t| t.slug.as_str())
        .collect();
    if purged.len() <= max || allowed {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "the plan purges {} tenants ({}), more than safety.max_purges_per_run ({max}); nothing was applied\n  hint: check that every one of them is meant to go; pass --allow-mass-purge to go ahead",
        purged.len(),
        purged.join(", ")
    )))
}

/// Presigned download links to every file of a tenant's offboarding export (kept in S3),
/// valid for `lifetime` (at most 7 days, as SigV4 allows). The links are secrets: they are
/// returned to be printed, never stored or logged.
pub async fn export_links(
    ws: &Workspace,
    slug: &Slug,
    lifetime: Duration,
) -> Result<Vec<(String, String)>, Error> {
    use crate::export::s3::MAX_LINK_LIFETIME;
    if lifetime > MAX_LINK_LIFETIME || lifetime.is_zero() {
        return Err(Error::Usage(format!(
            "a link lasts from a second up to 7 days (SigV4's limit); {} was asked",
            humantime::format_duration(lifetime)
        )));
    }
    let state = ws.backend().load().await?;
    let tenant_id = state
        .tenants
        .get(slug.as_str())
        .and_then(|t| t.tenant_id.clone())
        .ok_or_else(|| {
            Error::Usage(format!(
                "there is no tenant {slug} in the state: nothing of it was ever exported"
            ))
        })?;
    let targets = ws.targets(ws.repo.migrations.clone());
    targets
        .exporter
        .links(slug, &tenant_id, lifetime)
        .await
        .map_err(|e| Error::Usage(crate::causes::chain(&e)))
}

/// The deletion audit of one tenant or all, from the control plane. Reads only.
pub async fn audit(
    ws: &Workspace,
    slug: Option<&Slug>,
) -> Result<Vec<crate::model::audit::AuditEntry>, Error> {
    let targets = ws.targets(ws.repo.migrations.clone());
    targets.control.audit_log(slug).await.map_err(|e| {
        Error::Usage(format!(
            "reading the deletion audit: {}",
            crate::causes::chain(&e)
        ))
    })
}

fn or_none(lineage: &str) -> String {
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
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let version = value.get("format_version").and_then(|v| v.as_u64());
    if version != Some(plan::PLAN_FORMAT_VERSION as u64) {
        return Err(bad(format!(
            "format version {version:?}; this tenant-reconcile reads {}",
            plan::PLAN_FORMAT_VERSION
        )));
    }
    serde_json::from_value(value).map_err(|e| bad(e.to_string()))
}

/// Forgets tenants without touching anything they have (terraform's `removed` with
/// `destroy = false`): their resources keep their data, they leave the plans and `show`,
/// and the state records who released them. A tenant whose file is still there is refused:
/// the next plan would bring it straight back.
pub async fn state_rm(
    ws: &Workspace,
    slugs: &[Slug],
    lock_timeout: Duration,
) -> Result<Vec<Released>, Error> {
    if let Some(slug) = slugs
        .iter()
        .find(|s| ws.repo.tenants.iter().any(|t| &t.slug == *s))
    {
        return Err(Error::Usage(format!(
            "tenants/{slug}.yaml still exists, so the next plan would bring {slug} back; nothing was released\n  hint: remove the tenant file first, then run state rm"
        )));
    }
    let backend = ws.backend();
    let info = LockInfo::new("state rm");
    let by = info.who.clone();
    let mut lock = backend.lock(info, &Wait::up_to(lock_timeout)).await?;
    let released = async {
        let mut state = backend.load().await?;
        let mut released = Vec::new();
        for slug in slugs {
            let Some(t) = state.tenants.remove(slug.as_str()) else {
                return Err(Error::Usage(format!(
                    "there is no tenant {slug} in the state; nothing was released\n  hint: `tenant-reconcile state list` lists what is recorded"
                )));
            };
            released.push(Released {
                slug: slug.to_string(),
                tenant_id: t.tenant_id,
                resources: t
                    .resources
                    .keys()
                    .cloned()
                    .chain(t.retired.iter().map(|r| r.address_key()))
                    .map(|k| format!("{slug}/{k}"))
                    .collect(),
                by: by.clone(),
                at: crate::state::now(),
                git_commit: ws.git_commit.clone(),
            });
        }
        state.released.extend(released.iter().cloned());
        state.prepare_snapshot();
        lock.persist(&state).await?;
        Ok(released)
    }
    .await;
    let unlocked = lock.unlock().await;
    let released = released?;
    unlocked?;
    Ok(released)
}

/// Exports a tenant's data (every table of its slice as CSV, its bucket's objects, and a
/// manifest with each file's sha256) into `to`, or a new folder under the local target's
/// `exports/`. Reads the tenant's resources where the state recorded them; changes nothing
/// else, and takes no lock. Returns the folder, the manifest and the manifest's sha256.
pub async fn export(
    ws: &Workspace,
    slug: &Slug,
    to: Option<std::path::PathBuf>,
) -> Result<(std::path::PathBuf, crate::export::sink::Manifest, String), Error> {
    let state = ws.backend().load().await?;
    let Some(t) = state.tenants.get(slug.as_str()) else {
        return Err(Error::Usage(format!(
            "there is no tenant {slug} in the state: nothing of it was ever applied\n  hint: `tenant-reconcile state list` lists what is recorded"
        )));
    };
    refuse_purged(slug, t)?;
    let Some(tenant_id) = t.tenant_id.as_deref() else {
        return Err(Error::Usage(format!(
            "{slug} has no registry row yet: there is nothing to export"
        )));
    };
    let dir = match to {
        Some(dir) => dir,
        None => {
            let stamp = crate::state::now().replace([':', '-'], "");
            // Beside, never inside, the folder an offboarding exports into
            // (`<export_to>/<slug>`); the exports' folder is the operator's alone.
            let exports = ws.local_dir.join("exports");
            crate::private_files::own_dir(&exports)
                .map_err(|e| Error::Usage(format!("cannot create {}: {e}", exports.display())))?;
            exports.join(format!("{slug}-{stamp}"))
        }
    };
    let occupied = std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some());
    if occupied {
        return Err(Error::Usage(format!(
            "{} is not empty; an export goes into a folder of its own",
            dir.display()
        )));
    }
    let targets = ws.targets(ws.repo.migrations.clone());
    let sources: Vec<&dyn crate::targets::provider::Provider> = targets.all().collect();
    let (manifest, sha256) =
        crate::export::write(&dir, &sources, slug, tenant_id, &t.resources, &t.retired)
            .await
            .map_err(|e| {
                Error::Usage(format!(
                    "exporting {slug}: {}; {} holds a partial export, without a manifest",
                    crate::causes::chain(&e),
                    dir.display()
                ))
            })?;
    Ok((dir, manifest, sha256))
}

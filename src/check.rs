//! `tenant-reconcile check`: the smoke tests of active tenants, on demand, for cron and
//! alerting. The same checks that gate a tenant's move to active, side by side across
//! tenants (bounded), each tenant's outcome recorded for `show` when the state's lock can
//! be had.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::desired::{self, DesiredTenant, Selection};
use crate::model::health::Health;
use crate::slug::Slug;
use crate::state::{Lifecycle, LockInfo, State, Wait};
use crate::targets::provider::{Mark, StepContext};
use crate::workspace::Workspace;
use crate::Error;

pub struct CheckOptions {
    /// Only these tenants (every active one when empty).
    pub tenants: Vec<Slug>,
    /// Tenants checked at once.
    pub parallelism: usize,
    /// How long to wait for the state's lock to record the outcomes.
    pub lock_timeout: Duration,
}

/// One tenant's outcome.
#[derive(Debug, Serialize)]
pub struct TenantHealth {
    pub slug: Slug,
    pub healthy: bool,
    #[serde(flatten)]
    pub health: Health,
}

/// A tenant of the repo that was not checked, and why: only active tenants are.
#[derive(Debug, Serialize)]
pub struct NotChecked {
    pub slug: Slug,
    /// Its lifecycle in the state, or `None` when it was never applied.
    pub lifecycle: Option<Lifecycle>,
    /// `provisioning, failed at smoke_test`, `suspended`, `not applied yet`.
    pub reason: String,
    /// Its file says active but it is not: a tenant stuck on its way, which makes the
    /// check fail as an unhealthy one does.
    pub should_be_active: bool,
}

pub struct CheckReport {
    pub tenants: Vec<TenantHealth>,
    pub not_checked: Vec<NotChecked>,
    /// Why the outcomes were not recorded, when they were not (the state was locked).
    pub not_recorded: Option<String>,
}

impl CheckReport {
    pub fn healthy(&self) -> bool {
        self.tenants.iter().all(|t| t.healthy)
            && !self.not_checked.iter().any(|t| t.should_be_active)
    }
}

pub async fn check(
    ws: &Workspace,
    state: State,
    opts: &CheckOptions,
) -> Result<CheckReport, Error> {
    for slug in &opts.tenants {
        if !state.tenants.contains_key(slug.as_str()) {
            return Err(Error::Usage(format!(
                "{slug} is not in the state: it was never applied\n  hint: `tenant-reconcile show` lists the tenants"
            )));
        }
    }
    let wanted = |s: &Slug| opts.tenants.is_empty() || opts.tenants.contains(s);
    let mut active = Vec::new();
    let mut not_checked = Vec::new();
    for spec in ws.repo.tenants.iter().filter(|t| wanted(&t.slug)) {
        let recorded = state.tenants.get(spec.slug.as_str());
        match recorded {
            Some(t) if t.lifecycle == Lifecycle::Active => active.push(spec.slug.clone()),
            _ => not_checked.push(NotChecked {
                slug: spec.slug.clone(),
                lifecycle: recorded.map(|t| t.lifecycle),
                reason: recorded.map_or_else(|| "not applied yet".to_string(), why_not_active),
                should_be_active: spec.status == crate::model::tenant::Status::Active,
            }),
        }
    }
    // A slug asked for whose file is gone is still in the state: said, not checked.
    for slug in opts
        .tenants
        .iter()
        .filter(|s| !ws.repo.tenants.iter().any(|t| &t.slug == *s))
    {
        let t = &state.tenants[slug.as_str()];
        not_checked.push(NotChecked {
            slug: slug.clone(),
            lifecycle: Some(t.lifecycle),
            reason: format!("{}, its file is gone", why_not_active(t)),
            should_be_active: false,
        });
    }
    let compiled: Vec<(DesiredTenant, Vec<crate::repo::checks::CheckSpec>)> =
        desired::compile_each(
            &ws.repo,
            &state,
            None,
            &Selection {
                only: Some(&active),
                rotate: &[],
                defer_seed: true,
                placements: None,
            },
            |d| {
                let declared = crate::plan::declared_checks(&ws.repo, &d)?;
                Ok(Some((d, declared)))
            },
        )?;
    // The key the passwords were derived from, or the login checks would test another
    // password than the tenants have (and say a password changed that did not).
    let found = ws.find_key()?;
    crate::ops::check_key(ws, &state, found.as_ref(), false)?;
    // A check makes no key: one found nowhere derives no tenant's password.
    let key = found.ok_or_else(|| {
        Error::Refused(format!(
            "there is no master key to derive the tenants' passwords from: set {} or master_key_file",
            crate::credentials::MASTER_KEY_ENV
        ))
    })?;
    let targets = Arc::new(ws.targets(ws.repo.migrations.clone()));
    let mark = Mark {
        state: ws.repo.config.state.name.clone(),
        lineage: state.lineage.clone(),
        tenant: None,
    };
    let permits = Semaphore::new(opts.parallelism.max(1));
    let runs = compiled.iter().map(|(d, declared)| {
        let (permits, targets, key, mark, state) = (&permits, &targets, &key, &mark, &state);
        async move {
            let _permit = permits.acquire().await.expect("semaphore stays open");
            let ts = &state.tenants[d.slug().as_str()];
            let ctx = StepContext {
                tenant: &d.effective,
                tenant_id: ts.tenant_id.as_deref(),
                lifecycle: Lifecycle::Active,
                credentials_version: ts.credentials_version,
                key,
                mark: mark.for_tenant(ts.tenant_id.as_deref()),
                incarnation: ts.incarnation.as_deref(),
                claimed: false,
                recorded: &ts.resources,
                retired: &ts.retired,
            };
            let health = crate::smoke::run(targets, &ctx, declared).await;
            TenantHealth {
                slug: d.slug().clone(),
                healthy: health.healthy(),
                health,
            }
        }
    });
    let tenants = futures::future::join_all(runs).await;
    let not_recorded = record(ws, &tenants, opts.lock_timeout).await.err();
    Ok(CheckReport {
        tenants,
        not_checked,
        not_recorded,
    })
}

/// A tenant's lifecycle, and where its last apply stopped when it failed:
/// `provisioning, failed at smoke_test`.
fn why_not_active(t: &crate::state::TenantState) -> String {
    match (&t.last_failure, &t.step) {
        (Some(f), _) => format!("{}, failed at {}", t.lifecycle, f.step),
        (None, Some(step)) => format!("{}, stopped at {step}", t.lifecycle),
        (None, None) => t.lifecycle.to_string(),
    }
}

/// Records each tenant's outcome on its state, read again under the lock (an apply may
/// have run since the checks began), one checkpoint per tenant.
async fn record(ws: &Workspace, tenants: &[TenantHealth], timeout: Duration) -> Result<(), String> {
    if tenants.is_empty() {
        return Ok(());
    }
    let backend = ws.backend();
    let lock = backend
        .lock(LockInfo::new("check"), &Wait::up_to(timeout))
        .await
        .map_err(|e| crate::causes::chain(&e))?;
    let written = async {
        let mut state = backend.load().await?;
        for t in tenants {
            let Some(ts) = state.tenants.get(t.slug.as_str()) else {
                continue;
            };
            let mut ts = ts.clone();
            ts.health = Some(t.health.record());
            // An observation: a plan saved before the check still applies after it.
            let entry = state.observe(t.slug.as_str(), ts);
            lock.checkpoint(&entry).await?;
        }
        Ok::<_, crate::state::StateError>(())
    }
    .await;
    let unlocked = lock.unlock().await;
    written.map_err(|e| crate::causes::chain(&e))?;
    unlocked.map_err(|e| crate::causes::chain(&e))
}

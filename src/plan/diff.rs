//! Desired (files) vs recorded (state) vs live (refresh) → a [`Plan`].

use std::collections::{BTreeSet, HashSet};

use super::safety;
use super::*;
use crate::configured::Targets;
use crate::desired::{Attrs, DesiredTenant, Kind};
use crate::diagnostic::Diagnostic;
use crate::model::change::known_after_apply;
use crate::model::kind;
use crate::offboarding::{self, Phase};
use crate::repo::{Status, TenantRepo};
use crate::state::{State, TenantState};
use crate::targets::provider::{LiveFleet, Owner};

pub struct PlanInput<'a> {
    pub repo: &'a TenantRepo,
    pub state: &'a State,
    /// `None` with `--no-refresh`: the recorded state stands in for the live one.
    pub live: Option<&'a LiveFleet>,
    pub targets: &'a Targets,
    pub git_commit: Option<String>,
    pub allow_missing_tenants: bool,
    /// Tenants whose resources made outside this state are adopted (`--import`).
    pub import: &'a [Slug],
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Safety(String),
    #[error("migration {file} was applied with checksum {applied} but now has {now}\n  hint: applied migrations are never edited; add a new migration instead")]
    MigrationEdited {
        file: String,
        applied: String,
        now: String,
    },
    #[error("migration {id} was applied but its file is gone from {dir}/\n  hint: restore the file; applied migrations stay in the repo")]
    MigrationRemoved { id: String, dir: String },
}

/// Makes a [`Plan`] one tenant at a time: [`Planner::new`] runs the fleet-wide checks,
/// [`Planner::tenant`] diffs each compiled tenant (and is called from many threads), and
/// [`Planner::finish`] puts the tenants that have changes together.
pub struct Planner<'a> {
    input: PlanInput<'a>,
    /// The head's migrations, in order, whichever inputs a tenant is compiled from.
    migrations: &'a [crate::repo::Migration],
    orphans: Vec<Orphan>,
    /// The time holds are compared with, the same for every tenant of the plan.
    now: std::time::SystemTime,
}

/// A tenant the plan has something to say about.
pub enum Planned {
    Changes(Box<TenantPlan>),
    /// Left as it is, with the reason as a warning.
    Skipped(String),
    /// Exported and held: nothing to do before the hold is over.
    Held(Held),
    /// Nothing to do but hook runs still waiting after a failure.
    Waiting(Vec<WaitingHook>),
}

impl<'a> Planner<'a> {
    /// Refuses the plan when an applied migration was edited or removed, or when too many
    /// recorded tenants lost their files; finds the orphans.
    pub fn new(input: PlanInput<'a>) -> Result<Planner<'a>, PlanError> {
        check_migrations(input.repo, input.state)?;
        let present: HashSet<&str> = input.repo.tenants.iter().map(|t| t.slug.as_str()).collect();
        let orphans: Vec<Orphan> = input
            .state
            .tenants
            .iter()
            // A tombstone's file may go: it is done, not orphaned.
            .filter(|(slug, t)| {
                !present.contains(slug.as_str()) && t.lifecycle != Lifecycle::Deprovisioned
            })
            .map(|(slug, t)| Orphan {
                slug: slug.clone(),
                lifecycle: t.lifecycle,
            })
            .collect();
        // A plan of some tenants weighs the files gone against the whole fleet: the live
        // tenants the state's index counts, against the tenant files listed. Files gone
        // beyond its tenants show as fewer files than live tenants (new files may hide some,
        // which only the full plan, knowing every slug on both sides, sees).
        let recorded = input.state.live_tenants();
        let desired = input.repo.tenant_files();
        let missing = match &input.state.scope {
            Some(_) => orphans.len().max(recorded.saturating_sub(desired)),
            None => orphans.len(),
        };
        safety::check_missing(
            recorded,
            desired,
            missing,
            input.repo.config.safety.max_missing_share,
            input.allow_missing_tenants,
        )
        .map_err(PlanError::Safety)?;
        Ok(Planner {
            migrations: &input.repo.migrations,
            input,
            orphans,
            now: std::time::SystemTime::now(),
        })
    }

    /// This planner for tenants compiled from `repo`: the head's config and tenant files with
    /// the shared inputs (plans, templates, migrations) a rollout has not taken them from
    /// yet. Its fleet-wide checks were made once, by this one.
    pub fn for_repo<'b>(&'b self, repo: &'b TenantRepo) -> Planner<'b> {
        Planner {
            input: PlanInput {
                repo,
                state: self.input.state,
                live: self.input.live,
                targets: self.input.targets,
                git_commit: self.input.git_commit.clone(),
                allow_missing_tenants: self.input.allow_missing_tenants,
                import: self.input.import,
            },
            migrations: self.migrations,
            orphans: Vec::new(),
            now: self.now,
        }
    }

    /// Compares against these live resources (`None`: the recorded state stands in).
    pub fn with_live(mut self, live: Option<&'a LiveFleet>) -> Planner<'a> {
        self.input.live = live;
        self
    }

    /// What `d` needs, or `None` when it is as its file asks. A tenant compiled without
    /// its seed rows gets them here if it is to be seeded, so a seed template that fails
    /// for it fails its plan.
    pub fn tenant(&self, d: &DesiredTenant) -> Result<Option<Planned>, Diagnostic> {
        let kept;
        let d = match self.later_migration_kept(d) {
            Some(k) => {
                kept = k;
                &kept
            }
            None => d,
        };
        if let Some(why) = &d.unplaced {
            return Ok(Some(Planned::Changes(Box::new(self.unplaced(d, why)))));
        }
        let planned = self.changes_of(d)?;
        let slug = d.slug();
        let live_lifecycle = self
            .input
            .live
            .and_then(|l| l.tenants.get(slug))
            .map(|t| t.lifecycle);
        let mut planned = super::pipeline::add(
            self.input.repo,
            d,
            self.input.state.tenants.get(slug.as_str()),
            planned,
            live_lifecycle,
            self.now,
        )?;
        if let Some(Planned::Changes(tp)) = &mut planned {
            tp.shrink_to_fit();
        }
        Ok(planned)
    }

    /// `d` wanting the migration its slice has, when that is a later one than its inputs
    /// name: a migration is never undone. So it is for a tenant a rollout has not reached
    /// whose shared slice the rollout's first tenant migrated, and for one an aborted rollout
    /// had migrated.
    fn later_migration_kept(&self, d: &DesiredTenant) -> Option<DesiredTenant> {
        let key = crate::desired::Key::new(Kind::DATABASE);
        let at = d.resources.iter().position(|r| r.key == key)?;
        let want = d.resources[at].attrs.str("schema_version");
        let slug = d.slug();
        let have = match self.input.live {
            Some(live) => live.get(slug, &key).map(|r| r.attrs.str("schema_version")),
            None => self
                .input
                .state
                .tenants
                .get(slug.as_str())
                .and_then(|r| r.resources.get(&key))
                .map(|a| a.str("schema_version")),
        }?;
        let position = |id: &str| self.migrations.iter().position(|m| m.id() == id);
        let later = match (position(have), want) {
            (Some(_), "") => true,
            (Some(h), w) => position(w).is_some_and(|w| h > w),
            (None, _) => false,
        };
        later.then(|| {
            let mut kept = d.clone();
            kept.resources[at]
                .attrs
                .insert("schema_version", serde_json::json!(have));
            kept
        })
    }

    /// A tenant no Postgres server takes: nothing of it is done, and apply fails it.
    fn unplaced(&self, d: &DesiredTenant, why: &str) -> TenantPlan {
        let recorded = self.input.state.tenants.get(d.slug().as_str());
        let at = recorded.map_or(Lifecycle::Pending, |r| r.lifecycle);
        let mut plan = TenantPlan::of_recorded(
            d,
            recorded.and_then(|r| r.tenant_id.clone()),
            TenantAction::Blocked,
            LifecycleChange { from: at, to: at },
            Vec::new(),
        );
        plan.unplaced = Some(why.to_string());
        plan
    }

    /// What `d`'s resources and lifecycle need.
    fn changes_of(&self, d: &DesiredTenant) -> Result<Option<Planned>, Diagnostic> {
        let slug = d.slug();
        let recorded = self.input.state.tenants.get(slug.as_str());
        let leaving = d.effective.status == Status::Deprovisioned;
        let live_lifecycle = self
            .input
            .live
            .and_then(|l| l.tenants.get(slug))
            .map(|t| t.lifecycle);
        let phase = offboarding::phase(&d.effective, recorded, live_lifecycle, self.now);
        let tombstoned =
            phase == Phase::Tombstone || live_lifecycle == Some(Lifecycle::Deprovisioned);
        if tombstoned {
            return if leaving {
                Ok(recorded
                    .filter(|r| offboarding::export_expired(r, self.now))
                    .map(|r| Planned::Changes(Box::new(self.export_expiry(d, r)))))
            } else {
                let source = self
                    .input
                    .repo
                    .tenants
                    .iter()
                    .find(|t| &t.slug == slug)
                    .map_or("", |t| t.source.as_str());
                Err(slug_reused(&d.file, slug, recorded, source))
            };
        }
        if let Some(why) = taken(&self.input, slug, recorded) {
            if !self.input.import.contains(slug) {
                let source = self
                    .input
                    .repo
                    .tenants
                    .iter()
                    .find(|t| &t.slug == slug)
                    .map_or("", |t| t.source.as_str());
                return Err(slug_taken(d, &why, source));
            }
        }
        if let (Phase::Purging, Some(r)) = (phase, recorded) {
            if !leaving {
                return Ok(Some(Planned::Skipped(format!(
                    "{slug}: its purge began on {} and some of its data is gone; it cannot be called back, and nothing is done while its file says otherwise\n  hint: set `status: deprovisioned` again so the purge can finish",
                    r.purge.as_ref().map_or("?", |p| &p.started_at[..p.started_at.len().min(10)])
                ))));
            }
            let from = live_lifecycle.unwrap_or(r.lifecycle);
            return Ok(Some(self.purge_plan(d, r, Vec::new(), from)));
        }
        let provisioned = recorded.is_some_and(|t| offboarding::provisioned(t, t.lifecycle));
        if leaving && !provisioned {
            return Ok(Some(Planned::Skipped(format!(
                "{}: status deprovisioned, and it was never fully provisioned: there is nothing to offboard; it is left as it is",
                d.slug()
            ))));
        }
        let plan = tenant_plan(&self.input, d);
        match (phase, recorded) {
            (Phase::Held { until }, Some(r)) if plan.is_none() => {
                let export = r
                    .resources
                    .get(&Key::new(Kind::EXPORT))
                    .map(|e| e.str("location").to_string())
                    .unwrap_or_default();
                return Ok(Some(Planned::Held(Held {
                    slug: slug.clone(),
                    until: offboarding::stamp(until),
                    export,
                })));
            }
            (Phase::Due, Some(r)) => return Ok(Some(self.due(d, r, plan))),
            _ => {}
        }
        let removals = recorded
            .map(|r| self.moved_copies_due(d, r))
            .unwrap_or_default();
        let mut plan = match (plan, recorded) {
            (Some(mut plan), _) => {
                plan.changes.extend(removals);
                plan
            }
            (None, Some(r)) if !removals.is_empty() => TenantPlan::of_recorded(
                d,
                r.tenant_id.clone(),
                TenantAction::Update,
                LifecycleChange {
                    from: r.lifecycle,
                    to: r.lifecycle,
                },
                removals,
            ),
            _ => return Ok(None),
        };
        if plan.action == TenantAction::Offboard && plan.changes.iter().any(rebuilds) {
            // An export of a slice or bucket built in the same run would be of an empty one.
            return Ok(Some(Planned::Skipped(format!(
                "{}: it is to be offboarded while its slice or bucket is to be built anew; nothing is done: set its status back, apply, then offboard it",
                d.slug()
            ))));
        }
        let exports = plan
            .changes
            .iter()
            .any(|c| c.key.kind == Kind::EXPORT && c.desired.is_some());
        if let Some(why) = recorded
            .filter(|_| exports)
            .and_then(|r| self.input.targets.cannot_export(r.resources.keys()))
        {
            return Ok(Some(Planned::Skipped(format!(
                "{}: {why}; nothing is done\n  hint: in tenant-reconcile.hcl, set `targets` back to the target it was made on",
                d.slug()
            ))));
        }
        for c in &mut plan.changes {
            if let Some(seed) = c.desired.as_mut().filter(|r| r.key.kind == Kind::SEED) {
                if seed.content.is_none() {
                    seed.content = Some(crate::desired::seed_content(self.input.repo, d)?);
                }
            }
        }
        Ok(Some(Planned::Changes(Box::new(plan))))
    }

    /// The removals of the copies moves left on `r`'s old servers whose hold is over, each
    /// destroyed (its slice and its role there) and audited as a purge is; never one on the
    /// server this plan places the tenant on, which is its own again.
    fn moved_copies_due(&self, d: &DesiredTenant, r: &TenantState) -> Vec<ResourceChange> {
        let going_to = d
            .resources
            .iter()
            .find(|res| res.key.kind == Kind::PLACEMENT)
            .map(|res| res.attrs.str("server"));
        let (status, days) = (d.effective.status, d.effective.retention_days);
        offboarding::leftovers_due(r, status, days, self.now)
            .filter(|left| left.server() != going_to)
            .map(|left| {
                let key = left.address_key();
                let why = format!("{}, kept {days} days", left.how_left());
                let holds = match self.input.live.and_then(|l| l.holding(d.slug(), &key)) {
                    Some(h) => format!("{}, {why}", h.holds),
                    None => why,
                };
                ResourceChange::delete(
                    key,
                    Some(Purged {
                        resource: left.resource.clone(),
                        holds,
                        found: None,
                    }),
                )
            })
            .collect()
    }

    /// A tenant whose purge is due: with an erasure request, after whatever revokes and
    /// exports it in the same run; otherwise after its hold, once its export verifies.
    fn due(&self, d: &DesiredTenant, r: &TenantState, plan: Option<TenantPlan>) -> Planned {
        let slug = d.slug();
        let from = plan.as_ref().map_or(r.lifecycle, |p| p.lifecycle.from);
        let before = match plan {
            Some(p) if d.effective.offboarding.erase => {
                if !p.conflicts.is_empty() {
                    return Planned::Changes(Box::new(p));
                }
                if p.changes.iter().any(rebuilds) {
                    return Planned::Skipped(format!(
                        "{slug}: its erasure waits: its slice or bucket is to be built anew, which an export and a purge cannot follow; nothing is done\n  hint: set its status back, apply, then ask for the erasure again"
                    ));
                }
                // The move to deprovisioning is the purge's first step.
                p.changes
                    .into_iter()
                    .filter(|c| {
                        !(c.key.kind == Kind::REGISTRY
                            && c.fields().iter().all(|f| f.field == "lifecycle"))
                    })
                    .collect()
            }
            // After the hold the tenant is only purged: what changed on it since (a login
            // given back by hand) goes with it.
            _ => Vec::new(),
        };
        let exports_now = before.iter().any(|c| c.key.kind == Kind::EXPORT);
        if d.effective.offboarding.export && !exports_now {
            if let Some(problem) = self.export_problem(slug, r) {
                return Planned::Skipped(format!(
                    "{slug}: its hold is over, but its export cannot be relied on: {problem}; nothing is purged\n  hint: restore the export, or set the status back to suspended and deprovisioned again to export anew"
                ));
            }
        }
        self.purge_plan(d, r, before, from)
    }

    /// Why the recorded export of `slug` is not one to purge after, as refresh found it.
    fn export_problem(&self, slug: &Slug, r: &TenantState) -> Option<String> {
        let key = Key::new(Kind::EXPORT);
        let Some(recorded) = r.resources.get(&key) else {
            return Some("no export is recorded".into());
        };
        let live = self.input.live?;
        if let Some(problem) = live.unverified.get(slug) {
            return Some(problem.clone());
        }
        match live.get(slug, &key) {
            None => Some(format!("{} is gone", recorded.str("location"))),
            Some(l) if l.attrs.str("manifest_sha256") != recorded.str("manifest_sha256") => {
                Some(format!(
                    "the manifest in {} is not the one recorded",
                    recorded.str("location")
                ))
            }
            Some(_) => None,
        }
    }

    fn purge_plan(
        &self,
        d: &DesiredTenant,
        r: &TenantState,
        mut changes: Vec<ResourceChange>,
        from: Lifecycle,
    ) -> Planned {
        let mark = crate::targets::provider::Mark {
            state: self.input.repo.config.state.name.clone(),
            lineage: self.input.state.lineage.clone(),
            tenant: r.tenant_id.clone(),
        };
        changes.extend(super::purge::changes(d.slug(), r, self.input.live, &mark));
        let plan = TenantPlan::of_recorded(
            d,
            r.tenant_id.clone(),
            TenantAction::Purge,
            LifecycleChange {
                from,
                to: Lifecycle::Deprovisioned,
            },
            changes,
        );
        match self.input.targets.cannot_purge(&plan.changes) {
            Some(why) => Planned::Skipped(format!(
                "{}: {why}; nothing is purged\n  hint: in tenant-reconcile.hcl, set `targets` back to the target it was made on",
                plan.slug
            )),
            None => Planned::Changes(Box::new(plan)),
        }
    }

    /// The removal of a tombstone's erasure export, once its end has come: audited as the
    /// purge of its resources was, and done by the exporter that wrote it.
    fn export_expiry(&self, d: &DesiredTenant, r: &TenantState) -> TenantPlan {
        let key = Key::new(Kind::EXPORT);
        let location = r.resources.get(&key).map_or("", |e| e.str("location"));
        let until = r
            .purge
            .as_ref()
            .and_then(|p| p.export_until.as_deref())
            .unwrap_or("");
        let holds = match self.input.live {
            Some(l) if !l.contains(d.slug(), &key) => "already gone".to_string(),
            _ => format!("kept until {}", &until[..until.len().min(10)]),
        };
        TenantPlan::of_recorded(
            d,
            r.tenant_id.clone(),
            TenantAction::ExpireExport,
            LifecycleChange {
                from: Lifecycle::Deprovisioned,
                to: Lifecycle::Deprovisioned,
            },
            vec![ResourceChange::delete(
                key,
                Some(super::Purged {
                    resource: format!("erasure export {location}"),
                    holds,
                    found: None,
                }),
            )],
        )
    }

    /// The plan, from what [`Planner::tenant`] returned, in slug order.
    pub fn finish(self, planned: Vec<Planned>) -> Plan {
        let input = self.input;
        let mut warnings = Vec::new();
        // Room for every tenant at once: grown by doubling, the largest list of a plan
        // would be held twice for a moment, and up to half of it spare after.
        let changing = planned
            .iter()
            .filter(|p| matches!(p, Planned::Changes(_)))
            .count();
        let mut tenants = Vec::with_capacity(changing);
        let mut held = Vec::new();
        let mut waiting = Vec::new();
        for p in planned {
            match p {
                Planned::Changes(t) => tenants.push(*t),
                Planned::Skipped(w) => warnings.push(w),
                Planned::Held(h) => held.push(h),
                Planned::Waiting(w) => waiting.extend(w),
            }
        }
        let purges = tenants
            .iter()
            .filter(|t| t.action == TenantAction::Purge)
            .count();
        let max_purges = input.repo.config.safety.max_purges_per_run;
        if purges > max_purges {
            warnings.push(format!(
                "this plan purges {purges} tenants, more than safety.max_purges_per_run ({max_purges}): apply refuses it unless given --allow-mass-purge"
            ));
        }
        for t in &tenants {
            if matches!(t.action, TenantAction::Offboard | TenantAction::Purge)
                && t.tenant.offboarding.erase
                && t.lifecycle.from != Lifecycle::Deprovisioned
            {
                warnings.push(format!(
                    "{} is an erasure request: its access is revoked, its data exported, and then purged in this same run, without a hold; {}",
                    t.slug,
                    erasure_export_end(t, self.now),
                ));
            } else if t.action == TenantAction::Offboard {
                let location = t
                    .changes
                    .iter()
                    .find(|c| c.key.kind == Kind::EXPORT)
                    .and_then(|c| c.desired.as_ref())
                    .map(|r| r.attrs.str("location").to_string())
                    .unwrap_or_default();
                let days = t.tenant.retention_days;
                let until = self.now + std::time::Duration::from_secs(u64::from(days) * 86_400);
                warnings.push(format!(
                    "{} will be offboarded: its access is revoked, then its data is exported to {location}; it is then held {days} day{} (its plan's retention_days), until {} if it is exported today, and the first apply after that purges it",
                    t.slug,
                    if days == 1 { "" } else { "s" },
                    offboarding::day(until),
                ));
            }
            for c in t.changes.iter().filter(|c| c.action == Action::Replace) {
                let old = c.leaves().unwrap_or("the old one");
                warnings.push(format!(
                    "{slug}/{key} will be replaced: a new one is built, and {old} is left behind with its data until {slug} is purged: the state keeps it as retired (`state show {slug}`), for you to move what you need; offboarding {slug} exports it, and its purge destroys it with the rest. apply needs --allow-replace",
                    slug = t.slug,
                    key = c.key
                ));
            }
        }

        warnings.extend(looks_renamed(&tenants, &self.orphans, input.state));
        warnings.extend(input.repo.shared_owners());

        let summary = Summary::of(&tenants, self.orphans.len());
        let state = StateRef::of(input.state, &input.repo.config.state.name)
            .with_planned(input.state, tenants.iter().map(|t| t.slug.as_str()));
        Plan {
            format_version: PLAN_FORMAT_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            state,
            git_commit: input.git_commit,
            refreshed: input.live.is_some(),
            summary,
            tenants,
            orphans: self.orphans,
            warnings,
            migrations: input.repo.migrations.clone(),
            changed_since: None,
            uncommitted: Vec::new(),
            master_key_id: None,
            rotates_master_key: false,
            held,
            waiting,
            rollout: None,
        }
    }
}

/// Whether a change builds a slice or bucket anew, which an export cannot follow in the
/// same run (it would export an empty one).
/// What an erasure keeps, and until when, as its plan says it.
fn erasure_export_end(t: &TenantPlan, now: std::time::SystemTime) -> String {
    if !t.tenant.offboarding.export {
        return "its export is waived: no copy of its data is kept".into();
    }
    let days = t.tenant.erasure_export_days;
    format!(
        "its export is kept {days} day{} (its plan's erasure_export_days), until {}, for the customer to collect, and the first apply after that removes it",
        if days == 1 { "" } else { "s" },
        offboarding::day(now + std::time::Duration::from_secs(u64::from(days) * 86_400)),
    )
}

fn rebuilds(c: &ResourceChange) -> bool {
    crate::model::kind::of(c.key.kind).rebuilt_empty
        && matches!(c.action, Action::Create | Action::Replace)
}

/// A new tenant whose owner is an orphan's (its file gone in the same change) looks like a
/// renamed file: a slug cannot change, so the plan would make a new, empty tenant and leave
/// the old one with its data. Said, with the ways out.
fn looks_renamed(tenants: &[TenantPlan], orphans: &[Orphan], state: &State) -> Vec<String> {
    let owner = |slug: &str| {
        state
            .tenants
            .get(slug)?
            .resources
            .get(&crate::desired::Key::new(Kind::OWNER))
            .map(|a| a.str("email").to_lowercase())
    };
    let mut out = Vec::new();
    for t in tenants.iter().filter(|t| {
        t.action == TenantAction::Provision && !state.tenants.contains_key(t.slug.as_str())
    }) {
        let email = t.tenant.owner_email.to_lowercase();
        for o in orphans
            .iter()
            .filter(|o| owner(&o.slug).as_deref() == Some(email.as_str()))
        {
            let id = state.tenants[&o.slug]
                .tenant_id
                .as_deref()
                .map(|id| format!(", id {id}"))
                .unwrap_or_default();
            out.push(format!(
                "{new} looks like {old} renamed ({old}'s file is gone and {new} has its owner, {email}{id}): a slug cannot change, so this plan provisions {new} as a new, empty tenant and leaves {old} orphaned with its data. To keep the tenant, name its file and slug {old} again; if {new} is another tenant, offboard {old} (its file back with `status: deprovisioned`) or let it go as it is (`tenant-reconcile state rm {old}`)",
                new = t.slug,
                old = o.slug,
            ));
        }
    }
    out
}

/// Why `slug`, which this state does not hold, still belongs to a tenant: the state released
/// it (`state rm`), or the registry has a row for it that the state did not make. `None`
/// when the state holds the tenant (its id recorded, or its registration under way) or
/// the slug was never anyone's.
fn taken(input: &PlanInput<'_>, slug: &Slug, recorded: Option<&TenantState>) -> Option<String> {
    let held = recorded
        .is_some_and(|r| r.tenant_id.is_some() || r.creating.contains(&Key::new(Kind::REGISTRY)));
    if held {
        return None;
    }
    let registry = input.live.and_then(|l| l.tenants.get(slug));
    let released = input
        .state
        .released
        .iter()
        .rev()
        .find(|r| r.slug == slug.as_str());
    match (released, registry) {
        (Some(r), _) => Some(format!(
            "belonged to a tenant{} that {} released from this state on {} (`state rm`)",
            r.tenant_id
                .as_deref()
                .map(|id| format!(" (id {id})"))
                .unwrap_or_default(),
            r.by,
            r.at.get(..10).unwrap_or(&r.at),
        )),
        (None, Some(t)) => Some(format!(
            "belongs to a tenant (id {}) that the registry holds and this state does not",
            t.tenant_id
        )),
        (None, None) => None,
    }
}

/// A new tenant file for a slug that is still another tenant's (see [`taken`]): its
/// registry row, role, slice and data may all be there, and a new file does not inherit
/// them by its name.
fn slug_taken(d: &DesiredTenant, why: &str, source: &str) -> Diagnostic {
    let slug = d.slug();
    Diagnostic::new(
        d.file.clone(),
        format!(
            "the slug {slug} {why}; its registry row, login and data may still be there, and a new file does not take them over by its name"
        ),
    )
    .locate(source, "slug")
    .hint(format!(
        "to take that tenant back as it is, data and all, adopt it with `plan --import {slug}` (its passwords are made anew); for a new tenant, give it another slug"
    ))
}

/// A tenant file whose slug belonged to a tenant purged and tombstoned: a slug is never
/// given to another tenant, whose data, events and audit would mix with the old one's.
fn slug_reused(
    file: &str,
    slug: &Slug,
    recorded: Option<&TenantState>,
    source: &str,
) -> Diagnostic {
    Diagnostic::new(file, tombstone_message(slug, recorded))
        .locate(source, "slug")
        .hint("give the new tenant another slug; the old one stays in the registry as a tombstone and in `tenant-reconcile audit`")
}

/// `the slug acme belonged to a tenant that was deprovisioned on 2026-11-02; …`.
fn tombstone_message(slug: &Slug, recorded: Option<&TenantState>) -> String {
    let when = recorded
        .and_then(|r| r.purge.as_ref())
        .and_then(|p| p.finished_at.as_deref())
        .or(recorded.map(|r| r.updated_at.as_str()))
        .filter(|at| at.len() >= 10)
        .map_or(
            "an earlier date (the registry keeps it)".to_string(),
            |at| at[..10].to_string(),
        );
    format!("the slug {slug} belonged to a tenant that was deprovisioned on {when}; a slug is never reused")
}

/// Why `slug` cannot be given to a new tenant, when the state records it as a tombstone:
/// what plan refuses, for `new-tenant` to refuse before it writes the file.
pub fn tombstoned(state: &State, slug: &Slug) -> Option<String> {
    let recorded = state.tenants.get(slug.as_str())?;
    (recorded.lifecycle == Lifecycle::Deprovisioned)
        .then(|| tombstone_message(slug, Some(recorded)))
}

/// The tenant files that give a tombstone's slug to a tenant again, as the state records
/// it: what plan refuses, for `validate` to refuse too.
pub fn reused_slugs(repo: &TenantRepo, state: &State) -> Vec<Diagnostic> {
    repo.tenants
        .iter()
        .filter(|t| t.status != Status::Deprovisioned)
        .filter_map(|t| {
            let recorded = state.tenants.get(t.slug.as_str())?;
            (recorded.lifecycle == Lifecycle::Deprovisioned)
                .then(|| slug_reused(&t.file, &t.slug, Some(recorded), &t.source))
        })
        .collect()
}

fn check_migrations(repo: &TenantRepo, state: &State) -> Result<(), PlanError> {
    let dir = &repo.config.migrations_dir;
    for m in &repo.migrations {
        if let Some(applied) = state.migrations.get(&m.id()) {
            if applied != &m.checksum {
                return Err(PlanError::MigrationEdited {
                    file: format!("{dir}/{}.sql", m.id()),
                    applied: short(applied),
                    now: short(&m.checksum),
                });
            }
        }
    }
    let known: HashSet<String> = repo.migrations.iter().map(|m| m.id()).collect();
    if let Some(id) = state.migrations.keys().find(|id| !known.contains(*id)) {
        return Err(PlanError::MigrationRemoved {
            id: id.clone(),
            dir: dir.clone(),
        });
    }
    Ok(())
}

fn short(checksum: &str) -> String {
    checksum.chars().take(12).collect()
}

fn tenant_plan(input: &PlanInput<'_>, d: &DesiredTenant) -> Option<TenantPlan> {
    let slug = d.slug();
    let recorded: Option<&TenantState> = input.state.tenants.get(slug.as_str());
    let from = match input.live {
        Some(live) => live
            .tenants
            .get(slug)
            .map(|t| t.lifecycle)
            .unwrap_or_default(),
        None => recorded.map(|r| r.lifecycle).unwrap_or_default(),
    };
    let to = d.target_lifecycle();
    let tenant_id = match input.live {
        Some(live) => live.tenants.get(slug).map(|t| t.tenant_id.clone()),
        None => None,
    }
    .or_else(|| recorded.and_then(|r| r.tenant_id.clone()));

    // A tenant this state does not hold, adopted on purpose: everything of it that exists
    // is imported, whatever mark it carries, so the state records all of it.
    let adopting = input.import.contains(slug) && taken(input, slug, recorded).is_some();
    let mut changes = Vec::new();
    let mut conflicts = Vec::new();
    let mut desired_keys = BTreeSet::new();
    for r in &d.resources {
        desired_keys.insert(&r.key);
        let recorded_attrs = recorded.and_then(|t| t.resources.get(&r.key));
        let (current, live_resource) = match input.live {
            Some(live) => match live.get(slug, &r.key) {
                Some(l) => (Some(&l.attrs), Some(l)),
                None => (None, None),
            },
            None => (recorded_attrs, None),
        };
        let mut adopt = false;
        let mut mark = None;
        if let Some(l) = live_resource {
            let claimed =
                recorded_attrs.is_some() || recorded.is_some_and(|t| t.creating.contains(&r.key));
            let ownership = if adopting {
                Ownership::Foreign(None, None)
            } else {
                ownership(
                    &l.owner,
                    claimed,
                    &input.state.lineage,
                    tenant_id.as_deref(),
                )
            };
            match ownership {
                Ownership::Ours => {}
                Ownership::OursUnmarked => mark = Some(mark_field(input)),
                Ownership::Foreign(owner, tenant) if !input.import.contains(slug) => {
                    conflicts.push(Conflict {
                        key: r.key.clone(),
                        resource: describe(r.key.kind, &l.attrs),
                        owner,
                        tenant,
                    });
                    continue;
                }
                Ownership::Foreign(..) => adopt = true,
            }
        }
        let Some(current) = current else {
            changes.push(ResourceChange::create(
                r.clone(),
                // It was recorded, so something outside removed it.
                input.live.is_some() && recorded_attrs.is_some(),
            ));
            continue;
        };
        let whole_map = crate::model::kind::of(r.key.kind).whole_map;
        let mut fields = changed_fields(&r.attrs, current, whole_map, |f| {
            input.targets.forces_replace(r.key.kind, f)
        });
        fields.extend(mark);
        // An import changes nothing unannounced, a password it is yet to work out included;
        // nor does a new credentials version, whose password a plan made without the master
        // key cannot work out.
        if adopt || fields.iter().any(|f| f.field == "credentials_version") {
            fields.extend(known_after_apply(r));
            fields.sort_by(|a, b| a.field.cmp(&b.field));
        }
        // Made by a run cut short between making it and recording it: it stands as the
        // file asks, and the state does not know it. Applied again (every step is
        // idempotent), so the state records it and reads it as the tenant's from then on.
        let unrecorded = input.live.is_some()
            && recorded.is_some()
            && recorded_attrs.is_none()
            && r.key.kind != Kind::REGISTRY;
        if fields.is_empty() && !adopt && !unrecorded {
            continue;
        }
        let drift = input.live.is_some()
            && recorded_attrs.is_some_and(|rec| {
                fields
                    .iter()
                    .any(|f| rec.get(&f.field) != current.get(&f.field))
            });
        let action = if fields.iter().any(|f| f.forces_replace) {
            Action::Replace
        } else if adopt {
            Action::Import
        } else {
            Action::Update
        };
        // A replace builds the new one beside the old, which stays with its data.
        let leaves = (action == Action::Replace && input.targets.replace_keeps_old(r.key.kind))
            .then(|| super::purge::resource(r.key.kind, current))
            .filter(|old| *old != super::purge::resource(r.key.kind, &r.attrs));
        let diff = match (live_resource.and_then(|l| l.content()), &r.content) {
            (Some(old), Some(new)) if kind::of(r.key.kind).generated && old != *new => {
                Some(crate::model::change::content_diff(&old, new))
            }
            _ => None,
        };
        changes.push(
            ResourceChange::new(r.key.clone(), action, Some(r.clone()))
                .drifted(drift)
                .with_fields(fields)
                .with_diff(diff)
                .with_leaves(leaves),
        );
    }

    // Generated output the repo no longer generates (a file whose template is gone) is
    // removed. No other kind is ever destroyed by a plan.
    let mut stale: BTreeSet<&Key> = BTreeSet::new();
    if let Some(rec) = recorded {
        stale.extend(
            rec.resources
                .keys()
                .filter(|k| kind::of(k.kind).generated && !desired_keys.contains(k)),
        );
    }
    if let Some(live) = input.live {
        // Only files the state knows of are ours to remove; refresh reports no others.
        stale.retain(|k| live.contains(slug, k));
    }
    for key in stale {
        changes.push(ResourceChange::delete(key.clone(), None));
    }
    // What lives in a resource built anew (seed rows in a slice created, or replaced by
    // one in another isolation mode) is made anew with it.
    let rebuilt: Vec<Kind> = changes
        .iter()
        .filter(|c| matches!(c.action, Action::Create | Action::Replace))
        .map(|c| c.key.kind)
        .collect();
    for r in d.resources.iter().filter(|_| !rebuilt.is_empty()) {
        let lives_in_rebuilt = kind::of(r.key.kind)
            .lives_in
            .is_some_and(|home| rebuilt.contains(&home));
        if lives_in_rebuilt && !changes.iter().any(|c| c.key == r.key) {
            changes.push(ResourceChange::create(r.clone(), false));
        }
    }
    changes.sort_by(|a, b| a.key.cmp(&b.key));

    if !conflicts.is_empty() {
        // Nothing of the tenant is touched until what is not ours is imported or removed:
        // a tenant half provisioned around someone else's role helps nobody.
        changes.clear();
    } else if changes.is_empty() && from == to {
        return None;
    }
    let offboards =
        matches!(from, Lifecycle::Active | Lifecycle::Suspended) && to == Lifecycle::Deprovisioning;
    if offboards && !changes.iter().any(|c| c.key.kind == Kind::EXPORT) {
        // Offboarded again after a call-back: the export there is of the last time, and is
        // made anew (the old one is set aside, kept).
        let key = Key::new(Kind::EXPORT);
        let exported = match input.live {
            Some(live) => live.contains(slug, &key),
            None => recorded.is_some_and(|t| t.resources.contains_key(&key)),
        };
        if let (true, Some(export)) = (
            exported,
            d.resources.iter().find(|r| r.key.kind == Kind::EXPORT),
        ) {
            changes.push(
                ResourceChange::new(export.key.clone(), Action::Update, Some(export.clone()))
                    .with_fields(vec![FieldChange {
                        field: "manifest_sha256".into(),
                        // Known after apply: the export is made again.
                        old: None,
                        new: None,
                        forces_replace: false,
                    }]),
            );
        }
    }
    let action = match (from, to) {
        _ if !conflicts.is_empty() => TenantAction::Blocked,
        _ if adopting => TenantAction::Adopt,
        (Lifecycle::Pending | Lifecycle::Provisioning, _) => TenantAction::Provision,
        (Lifecycle::Active | Lifecycle::Suspended, Lifecycle::Deprovisioning) => {
            TenantAction::Offboard
        }
        (Lifecycle::Active | Lifecycle::Deprovisioning, Lifecycle::Suspended) => {
            TenantAction::Suspend
        }
        (Lifecycle::Suspended | Lifecycle::Deprovisioning, Lifecycle::Active) => {
            TenantAction::Resume
        }
        _ => TenantAction::Update,
    };
    let upgrades = input
        .repo
        .plans
        .get(&d.effective.plan)
        .map(|tier| entitlements::upgrades(tier, d, &changes))
        .unwrap_or_default();
    Some(TenantPlan {
        slug: slug.clone(),
        file: d.file.clone(),
        action,
        lifecycle: LifecycleChange { from, to },
        changes,
        tenant: d.effective.clone(),
        tenant_id,
        credentials_version: d.credentials_version,
        pulled_in_by: Vec::new(),
        in_rollout: false,
        conflicts,
        unplaced: None,
        // A move says what it takes, as its target sized it up.
        placed: d.placed.as_ref().map(|placed| {
            match input
                .live
                .and_then(|l| l.holding(slug, &Key::new(Kind::PLACEMENT)))
            {
                Some(h) if placed.starts_with("moves ") => format!("{placed}; {}", h.holds),
                _ => placed.clone(),
            }
        }),
        smoke: None,
        hooks: Vec::new(),
        upgrades,
    })
}

/// Whose a live resource is, for this state.
enum Ownership {
    Ours,
    /// Ours by the state's record, but without its mark (made before marks were written,
    /// or a run stopped between creating and marking it): apply marks it.
    OursUnmarked,
    /// Not ours: the state that marked it (`None` for a resource with no mark), and the
    /// tenant it names when that state is this one and the tenant another.
    Foreign(Option<String>, Option<String>),
}

/// `tenant_id` is the id of the tenant the resource is wanted for, when it has one.
fn ownership(owner: &Owner, claimed: bool, lineage: &str, tenant_id: Option<&str>) -> Ownership {
    match owner {
        Owner::Untracked => Ownership::Ours,
        Owner::Marked(m) if !lineage.is_empty() && m.lineage == lineage => match &m.tenant {
            // Made by this state for the tenant that had the slug before.
            Some(t) if tenant_id != Some(t.as_str()) => {
                Ownership::Foreign(Some(m.state.clone()), Some(t.clone()))
            }
            _ => Ownership::Ours,
        },
        // Another state's mark wins over our record: it was imported there since.
        Owner::Marked(m) => Ownership::Foreign(Some(m.state.clone()), None),
        Owner::Unmarked if claimed => Ownership::OursUnmarked,
        Owner::Unmarked => Ownership::Foreign(None, None),
    }
}

fn mark_field(input: &PlanInput<'_>) -> FieldChange {
    FieldChange {
        field: MARK_FIELD.to_string(),
        old: None,
        new: Some(Value::String(format!(
            "state {}",
            input.repo.config.state.name
        ))),
        forces_replace: false,
    }
}

/// A live resource as its target names it: `role tenant_initech`, `bucket acme-data`.
fn describe(kind: Kind, attrs: &Attrs) -> String {
    crate::model::kind::of(kind).live_name(attrs)
}

/// The desired fields whose current value differs. Providers may report more attributes
/// than are desired (a row's id); those are not compared, except for the flag and quota
/// maps (`whole_map`), whose keys are the flags and quotas themselves.
fn changed_fields(
    desired: &Attrs,
    current: &Attrs,
    whole_map: bool,
    forces: impl Fn(&str) -> bool,
) -> Vec<FieldChange> {
    // The common case, and no map is parsed for it.
    if desired == current {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (k, v) in desired {
        let cur = current.get(k);
        if cur != Some(v) {
            out.push(FieldChange {
                field: k.to_string(),
                old: cur.cloned(),
                new: Some(v.clone()),
                // A field the live resource does not report at all (a bucket from before
                // its settings were recorded, or whose settings write was cut short) is set
                // in place: there is nothing to say the resource is a different one.
                forces_replace: cur.is_some() && forces(k),
            });
        }
    }
    if !whole_map {
        return out;
    }
    for (k, v) in current {
        if !desired.contains_key(k) {
            out.push(FieldChange {
                field: k.to_string(),
                old: Some(v.clone()),
                new: None,
                forces_replace: false,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::provider::Mark;

    fn marked(tenant: Option<&str>) -> Owner {
        Owner::Marked(Box::new(Mark {
            state: "default".into(),
            lineage: "l1".into(),
            tenant: tenant.map(str::to_string),
        }))
    }

    #[test]
    fn a_mark_of_this_state_for_another_tenant_is_not_ours() {
        let mine = ownership(&marked(Some("t1")), false, "l1", Some("t1"));
        assert!(matches!(mine, Ownership::Ours));
        // Written before marks named tenants: its lineage says it all.
        let old = ownership(&marked(None), false, "l1", Some("t1"));
        assert!(matches!(old, Ownership::Ours));
        for wanted_for in [Some("t2"), None] {
            let theirs = ownership(&marked(Some("t1")), true, "l1", wanted_for);
            assert!(
                matches!(&theirs, Ownership::Foreign(Some(s), Some(t)) if s == "default" && t == "t1"),
                "wanted for {wanted_for:?}"
            );
        }
    }

    #[test]
    fn marks_read_back_with_and_without_a_tenant() {
        let m = Mark {
            state: "prod".into(),
            lineage: "l1".into(),
            tenant: Some("t1".into()),
        };
        assert_eq!(m.text(), "tenant-reconcile state=prod lineage=l1 tenant=t1");
        assert_eq!(Mark::parse(&m.text()), Some(m.clone()));
        let old = Mark::parse("tenant-reconcile state=prod lineage=l1").unwrap();
        assert_eq!(old.tenant, None);
        assert!(m.claims(&old));
        assert!(!m.for_tenant(Some("t2")).claims(&m));
        assert!(!m.for_tenant(None).claims(&m));
        assert_eq!(
            Mark::parse("tenant-reconcile state=prod lineage=l1 tenant="),
            None
        );
    }
}

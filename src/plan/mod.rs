//! The `Plan` value: what apply will do, per tenant and resource. `plan` renders it and
//! `apply` executes the very same value, so what was shown is what runs.

mod diff;
pub mod drift;
pub mod entitlements;
mod pipeline;
mod purge;
pub mod safety;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::model::change::{Action, FieldChange, Purged, ResourceChange, MARK_FIELD};
pub use diff::{reused_slugs, tombstoned, PlanError, PlanInput, Planned, Planner};
pub use pipeline::{declared_checks, SMOKE_STEP};
pub use purge::resource as purged_resource;

use crate::desired::{Effective, Key};
use crate::repo::Migration;
use crate::slug::Slug;
use crate::state::Lifecycle;

/// Bumped whenever the JSON shape of a plan changes incompatibly.
pub const PLAN_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: u32,
    pub tool_version: String,
    /// The state this plan was made against; apply refuses the plan if it has moved.
    pub state: StateRef,
    #[serde(default)]
    pub git_commit: Option<String>,
    /// Whether live resources were read (`--refresh`, the default).
    pub refreshed: bool,
    pub summary: Summary,
    pub tenants: Vec<TenantPlan>,
    pub orphans: Vec<Orphan>,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The repo's migrations, so a saved plan applies exactly what it showed.
    pub migrations: Vec<Migration>,
    /// With `--changed-since`: the inputs that changed, which select the tenants planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_since: Option<ChangedInputs>,
    /// A plan saved from the working tree (`plan --out`): the input files git had not
    /// committed when it was made. Applying the plan later warns, or with `--require-clean`
    /// refuses, just as an apply from the working tree does: the state would record a commit
    /// that does not hold what was applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uncommitted: Vec<Uncommitted>,
    /// The identifier of the master key the plan's passwords derive from: applying it with
    /// another key is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key_id: Option<String>,
    /// Made with `--rotate-master-key`: the state's key changes to `master_key_id`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rotates_master_key: bool,
    /// Offboarded tenants in their hold: nothing is done to them yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<Held>,
    /// Hook runs owed to tenants with nothing else to do, still waiting after a failure:
    /// shown, not run, and no change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<WaitingHook>,
    /// With a rollout policy: the rollout, and what this plan does with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::model::rollout::RolloutPlan>,
}

/// A hook run owed to a tenant that is not due yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingHook {
    pub slug: Slug,
    pub run: crate::hooks::HookRun,
}

/// The smoke tests a tenant gets before it becomes active: every target's built-in ones and
/// these declared ones, their URLs rendered for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Smoke {
    pub checks: Vec<crate::repo::checks::CheckSpec>,
    /// Why it is tested: `it becomes active`, `its slice was rebuilt`, `they failed last
    /// time: …`.
    pub reason: String,
}

/// A hook a tenant's plan runs: new for a moment this plan reaches, or owed from before
/// (`run` holds its record and key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedHook {
    /// The config's own, shared: a fresh plan of a large fleet plans one run per tenant.
    pub spec: std::sync::Arc<crate::repo::hooks::HookSpec>,
    pub moment: crate::repo::hooks::Moment,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<crate::hooks::HookRun>,
    /// Run by this apply; an owed run still waiting after a failure is only shown.
    pub due: bool,
    /// The lifecycle the moment moves the tenant to; none for `plan_changed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
}

/// A tenant exported and held: its data stays until `until`, then the first apply after
/// that purges it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub slug: Slug,
    /// `2026-12-28T10:00:00Z`.
    pub until: String,
    pub export: String,
}

/// One input file git has not committed: its status letter (`M` modified, `A` new, `D`
/// deleted, `R` renamed) and its path in the tenant repo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uncommitted {
    pub status: char,
    pub path: String,
}

/// The inputs changed since a base revision (`plan --changed-since BASE`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangedInputs {
    /// The revision as given (`origin/main`).
    pub base: String,
    /// The merge-base of that revision and the head, which the head is compared with.
    pub merge_base: String,
    pub files: Vec<ChangedFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangedFile {
    /// git's letter: A added, M modified, D deleted, R renamed.
    pub status: String,
    pub path: String,
    /// How many tenants it reaches.
    pub tenants: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRef {
    pub lineage: String,
    pub serial: u64,
    /// The state's name (`state { name = … }`), which marks of ownership carry.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// A plan of some tenants, made from their records only: what apply checks instead of
    /// the serial (which then counts those records only), so a run on other tenants
    /// meanwhile leaves the plan good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<RecordsRef>,
}

/// What a plan of some tenants was made from: what the header said
/// ([`State::header_digest`](crate::state::State::header_digest)), and each tenant's record's
/// generation (0: none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordsRef {
    pub header: String,
    pub tenants: BTreeMap<String, u64>,
    /// A plan of the whole fleet, which still checks the serial: `tenants` are the
    /// generations of the tenants it changes, which runners claiming its tenants
    /// (`apply --claim`) check one by one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub whole: bool,
}

impl StateRef {
    /// What a plan made from `state` was made against.
    pub fn of(state: &crate::state::State, name: &str) -> StateRef {
        // Only records have generations; a document read whole and narrowed has its serial.
        let records = match &state.scope {
            Some(scope) if state.header_said.is_some() => Some(RecordsRef {
                header: state.header_digest(),
                tenants: scope
                    .slugs
                    .iter()
                    .map(|s| (s.clone(), state.generation_of(s)))
                    .collect(),
                whole: false,
            }),
            _ => None,
        };
        StateRef {
            lineage: state.lineage.clone(),
            serial: state.serial,
            name: name.to_string(),
            records,
        }
    }

    /// With the generations of the tenants a plan of the whole fleet changes, on a state
    /// kept as records (see [`RecordsRef::whole`]).
    pub fn with_planned<'a>(
        mut self,
        state: &crate::state::State,
        planned: impl Iterator<Item = &'a str>,
    ) -> StateRef {
        if self.records.is_none() && state.header_said.is_some() {
            self.records = Some(RecordsRef {
                header: state.header_digest(),
                tenants: planned
                    .map(|s| (s.to_string(), state.generation_of(s)))
                    .collect(),
                whole: true,
            });
        }
        self
    }

    /// Which of `slugs` have records that moved in `state` since the plan was made, or
    /// `None` when the plan does not say their generations (it was made from one document).
    pub fn moved_among(
        &self,
        state: &crate::state::State,
        slugs: &[String],
    ) -> Option<Vec<String>> {
        let records = self.records.as_ref()?;
        if self.lineage != state.lineage {
            return Some(slugs.to_vec());
        }
        Some(
            slugs
                .iter()
                .filter(|s| records.tenants.get(*s).copied().unwrap_or(0) != state.generation_of(s))
                .cloned()
                .collect(),
        )
    }

    /// What moved in `state` since the plan was made: `None` when nothing did; the
    /// header, or the tenants whose records moved, when the plan was of some tenants.
    pub fn moved(&self, state: &crate::state::State) -> Option<Vec<String>> {
        if self.lineage != state.lineage {
            return Some(Vec::new());
        }
        match &self.records {
            None => (self.serial != state.serial).then(Vec::new),
            Some(r) if r.whole => (self.serial != state.serial).then(Vec::new),
            Some(r) if r.header != state.header_digest() => Some(vec![
                "what the state records beside its tenants (migrations, key, released slugs)"
                    .into(),
            ]),
            Some(r) => {
                let moved: Vec<String> = r
                    .tenants
                    .iter()
                    .filter(|(slug, g)| state.generation_of(slug) != **g)
                    .map(|(slug, _)| format!("{slug}'s state record"))
                    .collect();
                (!moved.is_empty()).then_some(moved)
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
    pub tenants: usize,
    pub drifted: usize,
    pub orphaned: usize,
    /// Resources adopted with `--import`.
    #[serde(default)]
    pub import: usize,
    /// Resources built anew beside the old ones, which are kept (retired) until a purge.
    #[serde(default)]
    pub replace: usize,
    /// Resources that exist and are not this state's: their tenants are left as they are.
    #[serde(default)]
    pub conflicts: usize,
    /// Tenants no Postgres server takes: left as they are.
    #[serde(default)]
    pub unplaced: usize,
    /// Tenants smoke-tested before they become active.
    #[serde(default)]
    pub smoke_tests: usize,
    /// Hook runs carried out.
    #[serde(default)]
    pub hook_runs: usize,
}

impl Summary {
    /// The counts of `tenants`' plans, beside `orphaned` tenants.
    pub fn of(tenants: &[TenantPlan], orphaned: usize) -> Summary {
        let mut summary = Summary {
            orphaned,
            tenants: tenants.len(),
            ..Summary::default()
        };
        for t in tenants {
            summary.conflicts += t.conflicts.len();
            summary.unplaced += usize::from(t.unplaced.is_some());
            summary.smoke_tests += usize::from(t.smoke.is_some());
            summary.hook_runs += t.hooks.iter().filter(|h| h.due).count();
            if t.changes.iter().any(|c| c.drift) {
                summary.drifted += 1;
            }
            for c in &t.changes {
                match c.action {
                    Action::Create => summary.add += 1,
                    Action::Update => summary.change += 1,
                    // The new one is built; the old one is kept, never destroyed.
                    Action::Replace => summary.replace += 1,
                    Action::Delete => summary.destroy += 1,
                    Action::Import => summary.import += 1,
                }
            }
        }
        summary
    }
}

impl Plan {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantAction {
    /// A new tenant, or one whose provisioning was interrupted.
    Provision,
    Update,
    Suspend,
    Resume,
    /// Something it needs exists and is not this state's: nothing is done to it.
    Blocked,
    /// Its file says `deprovisioned`: access revoked, then its data exported.
    Offboard,
    /// Its hold is over (or it asked for erasure): its data is destroyed for good, and a
    /// tombstone is kept.
    Purge,
    /// A tombstone whose erasure export has reached its end (its plan's
    /// `erasure_export_days`): the export, the last copy of its data, is removed.
    ExpireExport,
    /// A tenant this state does not hold (released, or registered elsewhere), taken over
    /// with `--import`: everything it has is imported, and its passwords are made anew.
    Adopt,
}

impl TenantAction {
    pub fn verb(self) -> &'static str {
        match self {
            TenantAction::Offboard => "will be offboarded: access revoked, data exported",
            TenantAction::Purge => "will be purged: its data destroyed for good, a tombstone kept",
            TenantAction::ExpireExport => {
                "has an erasure export past its end: the export, the last copy of its data, will be removed"
            }
            TenantAction::Blocked => {
                "is left as it is: resources it needs exist and are not this state's"
            }
            TenantAction::Adopt => {
                "will be adopted: all it has is imported as it is, with new passwords"
            }
            TenantAction::Provision => "will be provisioned",
            TenantAction::Update => "will be updated in place",
            TenantAction::Suspend => "will be suspended",
            TenantAction::Resume => "will be resumed",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantPlan {
    pub slug: Slug,
    pub file: String,
    pub action: TenantAction,
    pub lifecycle: LifecycleChange,
    pub changes: Vec<ResourceChange>,
    /// The tenant's effective settings, which steps and events use.
    pub tenant: Effective,
    pub tenant_id: Option<String>,
    pub credentials_version: u32,
    /// With `--changed-since`: the changed files that brought this tenant into the plan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pulled_in_by: Vec<String>,
    /// Its change belongs to the running rollout's waves reached: apply holds it to the
    /// wave's limit and halt rule, and records its attempt.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_rollout: bool,
    /// Resources that exist and are not this state's. A tenant with any is applied not at
    /// all: its `changes` are empty, and apply fails it, changing nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Conflict>,
    /// Why no Postgres server takes it, when the config names several and it was not placed
    /// yet. Such a tenant is applied not at all, as one with conflicts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unplaced: Option<String>,
    /// Where this plan places it and that server's load then (`eu-west-1, 412 of 1,000
    /// tenants`), when it places it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed: Option<String>,
    /// Smoke tests run before its lifecycle moves to active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke: Option<Smoke>,
    /// Hooks run at the moments this plan reaches, and those owed from earlier runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<PlannedHook>,
    /// What its file gives it beyond its plan's defaults, among what this plan sets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upgrades: Vec<entitlements::Upgrade>,
}

impl TenantPlan {
    /// Lets go of the spare room in its lists (a list's first push makes room for four): a
    /// plan holds every tenant's until its turn in the apply.
    pub fn shrink_to_fit(&mut self) {
        self.changes.shrink_to_fit();
        self.hooks.shrink_to_fit();
        self.upgrades.shrink_to_fit();
        self.conflicts.shrink_to_fit();
        self.pulled_in_by.shrink_to_fit();
    }

    /// What happens to the tenant, in words: its action's, except that an update which
    /// replaces a resource says so (it is not "in place": the old one is left behind).
    pub fn verb(&self) -> &'static str {
        if self.unplaced.is_some() {
            return "is left as it is: no Postgres server takes it";
        }
        if self.action == TenantAction::Update
            && self.changes.iter().any(|c| c.action == Action::Replace)
        {
            "will be updated, replacing resources (the old ones kept until it is purged)"
        } else {
            self.action.verb()
        }
    }

    /// The plan of a recorded tenant that makes `changes` only: no imports, checks, hooks
    /// or upgrades (a purge, an erasure export's end, hook runs owed).
    pub fn of_recorded(
        d: &crate::desired::DesiredTenant,
        tenant_id: Option<String>,
        action: TenantAction,
        lifecycle: LifecycleChange,
        changes: Vec<ResourceChange>,
    ) -> TenantPlan {
        TenantPlan {
            slug: d.slug().clone(),
            file: d.file.clone(),
            action,
            lifecycle,
            changes,
            tenant: d.effective.clone(),
            tenant_id,
            credentials_version: d.credentials_version,
            pulled_in_by: Vec::new(),
            in_rollout: false,
            conflicts: Vec::new(),
            unplaced: None,
            placed: None,
            smoke: None,
            hooks: Vec::new(),
            upgrades: Vec::new(),
        }
    }
}

/// A live resource a tenant needs that this state did not create: made by hand, by
/// another tool, or by another state (another environment on the same server).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    pub key: Key,
    /// What it is, as its target names it (`role tenant_initech`).
    pub resource: String,
    /// The state whose mark it carries; `None` when it carries none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The id of the tenant its mark names, when the mark is this state's and the tenant
    /// another (the one that had the slug before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleChange {
    pub from: Lifecycle,
    pub to: Lifecycle,
}

/// A tenant in the state with no file any more. Nothing is done to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Orphan {
    pub slug: String,
    pub lifecycle: Lifecycle,
}

impl Plan {
    /// Narrows a plan made for the tenants `changes` reaches to what it is: records the
    /// changed inputs and, per tenant, the files that pulled it in.
    pub fn with_changes(mut self, base: &str, changes: &crate::changes::ChangeSet) -> Plan {
        for t in &mut self.tenants {
            t.pulled_in_by = changes.reasons.get(&t.slug).cloned().unwrap_or_default();
        }
        let reach = changes.reach();
        self.changed_since = Some(ChangedInputs {
            base: base.to_string(),
            merge_base: changes.base.clone(),
            files: changes
                .files
                .iter()
                .zip(reach)
                .map(|((status, path), (_, tenants))| ChangedFile {
                    status: status.to_string(),
                    path: path.clone(),
                    tenants,
                })
                .collect(),
        });
        self
    }

    pub fn has_changes(&self) -> bool {
        !self.tenants.is_empty() || self.rollout.as_ref().is_some_and(|r| r.writes)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plans serialize")
    }
}

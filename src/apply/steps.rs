//! A tenant's apply as an explicit list of typed steps, made from its plan before anything
//! runs. The executor carries them out one by one; what each step records in the state, and
//! when, is its [`Checkpoint`].

use crate::model::change::{Action, ResourceChange};
use crate::model::kind::purge_order;
use crate::model::resource::{Key, Kind};
use crate::plan::PlannedHook;

/// One step of a tenant's apply.
#[derive(Debug, Clone, Copy)]
pub(super) enum Step<'p> {
    /// The purge begins, before its first resource (this one) is destroyed: its start and
    /// its audit rows are written (the start only once).
    BeginPurge(&'p ResourceChange),
    /// Resources of one target purged in one call (the data target drops a schema and its
    /// role in one transaction), where the state recorded them.
    Purge(&'p [ResourceChange]),
    /// A resource a replace left behind, purged where the state recorded it.
    PurgeRetired(&'p ResourceChange),
    /// A control-plane row of the tenant, deleted with the purge's end.
    PurgeRow(&'p ResourceChange),
    /// The registry row made a tombstone, with the purge's end.
    Tombstone(&'p ResourceChange),
    /// The purge's end: the control plane's rows, the audit's completion and the tombstone
    /// in one call. With `may_move`, nothing comes between it and the move, which joins it
    /// when the move is to `deprovisioned`.
    EndPurge { may_move: bool },
    /// A new tenant's registry row, which gives it its id.
    Register(&'p ResourceChange),
    /// One resource brought to what the plan asks.
    Change(&'p ResourceChange),
    /// Control-plane resources that follow each other (a new tenant's owner, flags and
    /// quotas), brought to what the plan asks in one transaction: all of them or none.
    Changes(&'p [ResourceChange]),
    /// The tenant's export written, by the engine from every target that holds its data.
    Export(&'p ResourceChange),
    /// The smoke tests before the tenant becomes active; `then_moves` when the move to
    /// active follows at once, which records itself before anything else.
    Smoke { then_moves: bool },
    /// A hook the move waits for.
    GatingHook(&'p PlannedHook),
    /// The move to the lifecycle the plan takes the tenant to.
    Lifecycle,
    /// A hook that runs after the move; its failure is retried apart.
    Hook(&'p PlannedHook),
}

/// Two steps are equal when they are the same step on the same changes of one plan.
impl PartialEq for Step<'_> {
    fn eq(&self, other: &Self) -> bool {
        use Step::*;
        match (self, other) {
            (BeginPurge(a), BeginPurge(b))
            | (PurgeRetired(a), PurgeRetired(b))
            | (PurgeRow(a), PurgeRow(b))
            | (Tombstone(a), Tombstone(b))
            | (Register(a), Register(b))
            | (Change(a), Change(b))
            | (Export(a), Export(b)) => std::ptr::eq(*a, *b),
            (Purge(a), Purge(b)) | (Changes(a), Changes(b)) => std::ptr::eq(*a, *b),
            (GatingHook(a), GatingHook(b)) | (Hook(a), Hook(b)) => std::ptr::eq(*a, *b),
            (EndPurge { may_move: a }, EndPurge { may_move: b }) => a == b,
            (Smoke { then_moves: a }, Smoke { then_moves: b }) => a == b,
            (Lifecycle, Lifecycle) => true,
            _ => false,
        }
    }
}

/// When a step's work is written into the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Checkpoint {
    /// With the step's own write (the purge's start beside its audit rows).
    Alongside,
    /// Once the step is done, whether it succeeded or failed.
    After,
    /// Once the step succeeded: a failed one changed nothing the state records.
    Succeeded,
    /// Once the step failed: what one that passed found is recorded by the step after it,
    /// which records at once.
    Failed,
    /// Before the step where a kill in the middle would leave something the state must
    /// know of (an intent to create, a replace's old resource), and after it.
    BeforeAndAfter,
    /// Not on its own: the audit rows record each purge, and a rerun purges what is gone
    /// already again, changing nothing; the purge's end is recorded with the next step.
    Never,
    /// After the move when something follows it (hooks, opening the login); otherwise the
    /// tenant's last checkpoint records it.
    WhenFollowed,
}

impl Step<'_> {
    /// What the step works on, as a failure reports where the tenant stopped; `None` keeps
    /// the step before's.
    pub(super) fn at(&self) -> Option<String> {
        match self {
            Step::EndPurge { .. } => None,
            Step::Purge(changes) | Step::Changes(changes) => {
                changes.first().map(|c| c.key.to_string())
            }
            Step::BeginPurge(c)
            | Step::PurgeRetired(c)
            | Step::PurgeRow(c)
            | Step::Tombstone(c)
            | Step::Register(c)
            | Step::Change(c)
            | Step::Export(c) => Some(c.key.to_string()),
            Step::Smoke { .. } => Some(crate::plan::SMOKE_STEP.to_string()),
            Step::GatingHook(h) | Step::Hook(h) => Some(format!("hook/{}", h.spec.name)),
            Step::Lifecycle => Some("lifecycle".to_string()),
        }
    }

    /// The phase of a purge wave this step waits at, so the wave's tenants make its write
    /// together (see `wave.rs`): each target's purge in the purge's order, and its end.
    /// The purge's start waits inside, once its export is checked ([`BEGIN_PHASE`]); the
    /// tenant's last checkpoint is [`LAST_PHASE`].
    pub(super) fn phase(&self) -> Option<u32> {
        match self {
            Step::Purge(changes) => {
                let kind = changes.first()?.key.kind;
                let turn = purge_order().iter().position(|&k| k == kind)?;
                Some(2 + u32::try_from(turn).ok()?)
            }
            Step::EndPurge { .. } => Some(LAST_PHASE - 1),
            _ => None,
        }
    }

    pub(super) fn checkpoint(&self) -> Checkpoint {
        match self {
            Step::BeginPurge(_) => Checkpoint::Alongside,
            Step::Purge(_) | Step::PurgeRetired(_) | Step::PurgeRow(_) | Step::Tombstone(_) => {
                Checkpoint::Never
            }
            Step::EndPurge { .. } => Checkpoint::WhenFollowed,
            Step::Register(_) => Checkpoint::Succeeded,
            Step::Smoke { then_moves: true } => Checkpoint::Failed,
            Step::Smoke { then_moves: false }
            | Step::GatingHook(_)
            | Step::Hook(_)
            | Step::Export(_)
            | Step::Changes(_) => Checkpoint::After,
            Step::Change(_) => Checkpoint::BeforeAndAfter,
            Step::Lifecycle => Checkpoint::WhenFollowed,
        }
    }
}

/// The phase of a purge's start: its state and audit rows written, its export checked.
pub(super) const BEGIN_PHASE: u32 = 1;
/// The phase of a purging tenant's last checkpoint, after every step.
pub(super) const LAST_PHASE: u32 = 1000;

/// What [`steps`] needs to know of the targets and the state.
pub(super) struct Facts<'a> {
    /// The kinds the control plane owns: their purge is part of the purge's end.
    pub control: &'a dyn Fn(Kind) -> bool,
    /// Whether the state records `key` as a resource a replace left behind.
    pub retired: &'a dyn Fn(&Key) -> bool,
    /// Whether two kinds belong to the same target, whose purges go in one call.
    pub same_target: &'a dyn Fn(Kind, Kind) -> bool,
    /// Whether the tenant moves to active from another lifecycle: the move records itself at
    /// once, so passed smoke tests right before it leave their record to it.
    pub activates: bool,
    /// Whether the second change goes in one call with the first and those between them:
    /// both one target's, which makes them together ([`crate::targets::provider::Provider::joins`]).
    pub joins: &'a dyn Fn(&ResourceChange, &ResourceChange) -> bool,
}

/// The steps of a tenant's apply: its `changes` in their order (purges grouped by target,
/// the purge begun before its first and ended after its last), then its smoke tests, the
/// hooks the move waits for, the move, and the hooks after it.
pub(super) fn steps<'p>(
    changes: &'p [ResourceChange],
    smoke: bool,
    hooks: &'p [PlannedHook],
    facts: &Facts<'_>,
) -> Vec<Step<'p>> {
    let mut out = Vec::new();
    let (mut begun, mut ended) = (false, false);
    let mut i = 0;
    while i < changes.len() {
        let change = &changes[i];
        i += 1;
        if change.purged().is_some() {
            if !begun || ended {
                out.push(Step::BeginPurge(change));
                (begun, ended) = (true, false);
            }
            if (facts.control)(change.key.kind) {
                out.push(Step::PurgeRow(change));
            } else if (facts.retired)(&change.key) {
                out.push(Step::PurgeRetired(change));
            } else {
                let start = i - 1;
                while changes.get(i).is_some_and(|c| {
                    c.purged().is_some()
                        && !(facts.control)(c.key.kind)
                        && !(facts.retired)(&c.key)
                        && (facts.same_target)(c.key.kind, change.key.kind)
                }) {
                    i += 1;
                }
                out.push(Step::Purge(&changes[start..i]));
            }
            continue;
        }
        if begun && !ended {
            if change.key.kind == Kind::REGISTRY
                && change.fields().iter().any(|f| f.field != "lifecycle")
            {
                out.push(Step::Tombstone(change));
                continue;
            }
            out.push(Step::EndPurge { may_move: false });
            ended = true;
        }
        if change.key.kind == Kind::REGISTRY {
            if change.action == Action::Create {
                out.push(Step::Register(change));
                continue;
            }
            if !change.fields().iter().any(|f| f.field != "lifecycle") {
                // A registry change that only moves the lifecycle is the move's, last.
                continue;
            }
        }
        if change.key.kind == Kind::EXPORT {
            out.push(Step::Export(change));
            continue;
        }
        // Changes a target makes together (the control plane's rows, a new tenant's role
        // and slice) are one transaction's work: one commit, one step marker and one
        // checkpoint for all of them, not one each.
        let start = i - 1;
        while changes.get(i).is_some_and(|c| {
            c.purged().is_none() && c.key.kind != Kind::EXPORT && (facts.joins)(change, c)
        }) {
            i += 1;
        }
        if i - start > 1 {
            out.push(Step::Changes(&changes[start..i]));
            continue;
        }
        out.push(Step::Change(change));
    }
    let due = || hooks.iter().filter(|h| h.due);
    if begun && !ended {
        let waits = smoke || due().any(|h| h.spec.gating);
        out.push(Step::EndPurge { may_move: !waits });
    }
    if smoke {
        let gated = due().any(|h| h.spec.gating);
        out.push(Step::Smoke {
            then_moves: facts.activates && !gated,
        });
    }
    out.extend(due().filter(|h| h.spec.gating).map(Step::GatingHook));
    out.push(Step::Lifecycle);
    out.extend(due().filter(|h| !h.spec.gating).map(Step::Hook));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::change::{FieldChange, Purged};

    fn purge(kind: Kind) -> ResourceChange {
        ResourceChange::delete(
            Key::new(kind),
            Some(Purged {
                resource: kind.as_str().into(),
                holds: String::new(),
                found: None,
            }),
        )
    }

    fn change(kind: Kind, action: Action, fields: &[&str]) -> ResourceChange {
        ResourceChange::new(Key::new(kind), action, None).with_fields(
            fields
                .iter()
                .map(|f| FieldChange {
                    field: f.to_string(),
                    old: None,
                    new: None,
                    forces_replace: false,
                })
                .collect(),
        )
    }

    /// The local targets' shape: the control plane owns the registry, owner, flags and
    /// quotas; the data target owns role, database and seed.
    fn facts<'a>(retired: &'a dyn Fn(&Key) -> bool) -> Facts<'a> {
        Facts {
            control: &|k| {
                matches!(
                    k,
                    Kind::REGISTRY | Kind::OWNER | Kind::FEATURES | Kind::QUOTAS
                )
            },
            retired,
            activates: false,
            same_target: &|a, b| {
                let data = |k| matches!(k, Kind::ROLE | Kind::DATABASE | Kind::SEED);
                a == b || (data(a) && data(b))
            },
            // The control plane's rows go together; so do a new role and what follows it
            // on the data target (a new schema-mode tenant's, as Postgres makes them).
            joins: &|first, next| {
                let control = |k| {
                    matches!(
                        k,
                        Kind::REGISTRY | Kind::OWNER | Kind::FEATURES | Kind::QUOTAS
                    )
                };
                (control(first.key.kind) && control(next.key.kind))
                    || (first.key.kind == Kind::ROLE
                        && first.action == Action::Create
                        && next.action == Action::Create
                        && matches!(next.key.kind, Kind::DATABASE | Kind::SEED))
            },
        }
    }

    #[test]
    fn a_new_tenant_is_registered_then_built_then_tested_then_moved() {
        let changes = [
            change(Kind::REGISTRY, Action::Create, &[]),
            change(Kind::OWNER, Action::Create, &[]),
            change(Kind::FEATURES, Action::Create, &[]),
            change(Kind::QUOTAS, Action::Create, &[]),
            change(Kind::DATABASE, Action::Create, &[]),
        ];
        let steps = steps(&changes, true, &[], &facts(&|_| false));
        assert_eq!(
            steps,
            vec![
                Step::Register(&changes[0]),
                Step::Changes(&changes[1..4]),
                Step::Change(&changes[4]),
                Step::Smoke { then_moves: false },
                Step::Lifecycle,
            ]
        );
        assert_eq!(steps[0].checkpoint(), Checkpoint::Succeeded);
        assert_eq!(steps[1].checkpoint(), Checkpoint::After);
        assert_eq!(steps[1].at().as_deref(), Some("owner"));
        assert_eq!(steps[3].checkpoint(), Checkpoint::After);
        assert_eq!(steps[2].checkpoint(), Checkpoint::BeforeAndAfter);
        // Moving to active right after them, passed smoke tests leave their record to the
        // move, which records itself at once; failed ones are recorded as they fail.
        let retired = |_: &Key| false;
        let activating = Facts {
            activates: true,
            ..facts(&retired)
        };
        let steps = super::steps(&changes, true, &[], &activating);
        assert_eq!(steps[3], Step::Smoke { then_moves: true });
        assert_eq!(steps[3].checkpoint(), Checkpoint::Failed);
        assert_eq!(steps[4], Step::Lifecycle);
    }

    #[test]
    fn a_new_role_and_the_slice_and_seed_its_target_joins_to_it_are_one_step() {
        let changes = [
            change(Kind::REGISTRY, Action::Create, &[]),
            change(Kind::OWNER, Action::Create, &[]),
            change(Kind::ROLE, Action::Create, &[]),
            change(Kind::DATABASE, Action::Create, &[]),
            change(Kind::SEED, Action::Create, &[]),
            change(Kind::BUCKET, Action::Create, &[]),
        ];
        let made = steps(&changes, false, &[], &facts(&|_| false));
        assert_eq!(
            made,
            vec![
                Step::Register(&changes[0]),
                Step::Change(&changes[1]),
                Step::Changes(&changes[2..5]),
                Step::Change(&changes[5]),
                Step::Lifecycle,
            ]
        );
        // Where it stops is said from the first, and it is recorded once, done or failed.
        assert_eq!(made[2].at().as_deref(), Some("role"));
        assert_eq!(made[2].checkpoint(), Checkpoint::After);
        // A slice's update after a role's does not join it: each goes on its own.
        let changes = [
            change(Kind::ROLE, Action::Create, &[]),
            change(Kind::DATABASE, Action::Update, &["access"]),
        ];
        assert_eq!(
            steps(&changes, false, &[], &facts(&|_| false)),
            vec![
                Step::Change(&changes[0]),
                Step::Change(&changes[1]),
                Step::Lifecycle
            ]
        );
    }

    #[test]
    fn control_plane_changes_in_a_row_go_together_and_one_alone_stays_alone() {
        let changes = [
            change(Kind::REGISTRY, Action::Update, &["plan", "lifecycle"]),
            change(Kind::QUOTAS, Action::Update, &["seats"]),
            change(Kind::DATABASE, Action::Update, &["access"]),
        ];
        assert_eq!(
            steps(&changes, false, &[], &facts(&|_| false)),
            vec![
                Step::Changes(&changes[0..2]),
                Step::Change(&changes[2]),
                Step::Lifecycle,
            ]
        );
        // A registry change of the lifecycle alone is the move's, and joins nothing.
        let changes = [
            change(Kind::REGISTRY, Action::Update, &["lifecycle"]),
            change(Kind::FEATURES, Action::Update, &["sso"]),
        ];
        assert_eq!(
            steps(&changes, false, &[], &facts(&|_| false)),
            vec![Step::Change(&changes[1]), Step::Lifecycle]
        );
    }

    #[test]
    fn an_offboarding_exports_as_the_engine_s_step_after_access_is_revoked() {
        let changes = [
            change(Kind::ROLE, Action::Update, &["access"]),
            change(Kind::EXPORT, Action::Create, &[]),
            change(Kind::REGISTRY, Action::Update, &["lifecycle"]),
        ];
        let steps = steps(&changes, false, &[], &facts(&|_| false));
        assert_eq!(
            steps,
            vec![
                Step::Change(&changes[0]),
                Step::Export(&changes[1]),
                Step::Lifecycle,
            ]
        );
        // Recorded whether it was written or failed, so `state show` says where it stopped.
        assert_eq!(steps[1].checkpoint(), Checkpoint::After);
    }

    #[test]
    fn a_registry_change_of_the_lifecycle_alone_is_the_move_s() {
        let changes = [change(Kind::REGISTRY, Action::Update, &["lifecycle"])];
        let steps = steps(&changes, false, &[], &facts(&|_| false));
        assert_eq!(steps, vec![Step::Lifecycle]);
    }

    #[test]
    fn a_purge_begins_before_its_first_resource_groups_each_target_and_ends_with_the_tombstone() {
        let changes = [
            change(Kind::DNS, Action::Update, &["access"]),
            purge(Kind::FILE),
            purge(Kind::BUCKET),
            purge(Kind::DATABASE),
            purge(Kind::ROLE),
            purge(Kind::QUOTAS),
            purge(Kind::OWNER),
            change(Kind::REGISTRY, Action::Update, &["name"]),
        ];
        let retired = |k: &Key| k.kind == Kind::BUCKET;
        let steps = steps(&changes, false, &[], &facts(&retired));
        assert_eq!(
            steps,
            vec![
                Step::Change(&changes[0]),
                Step::BeginPurge(&changes[1]),
                Step::Purge(&changes[1..2]),
                Step::PurgeRetired(&changes[2]),
                Step::Purge(&changes[3..5]),
                Step::PurgeRow(&changes[5]),
                Step::PurgeRow(&changes[6]),
                Step::Tombstone(&changes[7]),
                Step::EndPurge { may_move: true },
                Step::Lifecycle,
            ]
        );
        assert_eq!(steps[1].checkpoint(), Checkpoint::Alongside);
        assert_eq!(steps[4].checkpoint(), Checkpoint::Never);
        assert_eq!(steps[4].at().as_deref(), Some("database"));
        // A purge wave waits at each target's purge and at the end, in that order, after
        // the start and before the last checkpoint: the phases only go up.
        let phases: Vec<u32> = steps.iter().filter_map(Step::phase).collect();
        assert_eq!(phases.len(), 3, "{phases:?}");
        assert!(
            std::iter::once(BEGIN_PHASE)
                .chain(phases.iter().copied())
                .chain([LAST_PHASE])
                .is_sorted_by(|a, b| a < b),
            "{phases:?}"
        );
    }

    #[test]
    fn smoke_tests_keep_the_move_apart_from_the_purge_s_end() {
        let changes = [purge(Kind::DATABASE)];
        let steps = steps(&changes, true, &[], &facts(&|_| false));
        assert_eq!(
            steps,
            vec![
                Step::BeginPurge(&changes[0]),
                Step::Purge(&changes[..]),
                Step::EndPurge { may_move: false },
                Step::Smoke { then_moves: false },
                Step::Lifecycle,
            ]
        );
    }
}

//! Rollouts: a change to the inputs tenants share (plan files, templates, migrations) goes
//! out to the tenants it reaches in waves, when the config has a `rollout` block
//! (`repo/rollout_policy.rs`).
//!
//! The fleet runs on one commit's shared inputs (`State::inputs_rev`). A commit that changes
//! them starts a rollout from there to it: the tenants of the waves reached plan from the
//! head, every other tenant from the shared inputs it runs on, with its own file of the head
//! (so its own changes and drift repair go on). [`decide`] says which before the plan
//! compiles; [`Decision::settle`] moves the rollout on from what the plan found (a wave
//! whose tenants have nothing left to do is done, and after its bake the next one starts);
//! `gate.rs` holds an apply to the wave's limit and halt rule, from records written as the
//! tenants go. A change to a tenant's own file, or to the config, is no rollout.

pub mod gate;
mod waves;

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, SystemTime};

use crate::changes;
use crate::model::count::counted;
use crate::model::lifecycle::now as now_text;
use crate::model::rollout::{Rollout, RolloutPlan, Status};
use crate::repo::config::CONFIG_FILE;
use crate::repo::TenantRepo;
use crate::slug::Slug;
use crate::state::{Lifecycle, State};
use crate::workspace::Workspace;
use crate::Error;

/// Which tenants a plan compiles from which shared inputs, and what it does with the
/// rollout.
pub struct Decision {
    pub plan: RolloutPlan,
    /// Tenants that plan from the rollout's `to` (the head's inputs).
    on_to: HashSet<String>,
    /// The head's config and tenant files with the shared inputs of the rollout's `from`:
    /// what every other tenant compiles from. `None`: every tenant compiles from the head.
    pub from_repo: Option<TenantRepo>,
    /// A plan of some tenants: it neither starts a rollout nor moves one on, and takes no
    /// tenant further in one (it cannot count the wave's limit over the fleet).
    scoped: bool,
    /// A plan of some tenants found the head's shared inputs changed past the rollout's
    /// `to`: the reached tenants, which compile from the head, wait.
    stale_to: bool,
    now: SystemTime,
}

impl Decision {
    fn none(state: &State, scoped: bool, now: SystemTime) -> Decision {
        Decision {
            plan: RolloutPlan {
                rollout: state.rollout.clone(),
                inputs_rev: state.inputs_rev.clone(),
                ..RolloutPlan::default()
            },
            on_to: HashSet::new(),
            from_repo: None,
            scoped,
            stale_to: false,
            now,
        }
    }

    /// Whether `slug` compiles from the rollout's `from` inputs rather than the head's, when
    /// the decision has inputs to pin tenants to ([`Decision::from_repo`]).
    pub fn pinned(&self, slug: &str) -> bool {
        !self.on_to.contains(slug)
    }

    /// The rollout in flight, running, whose reached tenants this plan takes on: they are
    /// held to the wave's limit, and get their smoke tests.
    pub fn running(&self) -> Option<&Rollout> {
        self.plan
            .rollout
            .as_ref()
            .filter(|r| r.status == Status::Running && !self.scoped)
    }

    /// Whether `slug`'s change belongs to the rollout in flight (it plans from `to`).
    pub fn reached(&self, slug: &str) -> bool {
        self.plan
            .rollout
            .as_ref()
            .is_some_and(|r| r.status.in_flight())
            && self.on_to.contains(slug)
    }

    /// After a compile, with the tenants the plan changes: moves a running rollout on when
    /// every tenant of the waves reached has nothing left to do (the wave is done; after its
    /// bake the next wave starts, and after the last the rollout is complete). Returns the
    /// tenants that plan from `to` now, to compile again.
    pub fn settle(&mut self, changing: &HashSet<String>) -> Vec<String> {
        if self.scoped {
            return Vec::new();
        }
        let now = self.now;
        let Some(r) = self
            .plan
            .rollout
            .as_mut()
            .filter(|r| r.status == Status::Running)
        else {
            return Vec::new();
        };
        let count = r.waves.len();
        let left = r.waves[..=r.wave]
            .iter()
            .flat_map(|w| &w.tenants)
            .filter(|t| changing.contains(t.as_str()))
            .count();
        let w = &mut r.waves[r.wave];
        if left > 0 {
            self.plan.said.push(format!(
                "wave {} of {count} ({}): {} to apply, at most {} at a time, each smoke-tested; then it bakes {}",
                r.wave + 1,
                w.name,
                counted(left, "tenant", "tenants"),
                w.max_parallel,
                humantime::format_duration(w.bake()),
            ));
            return Vec::new();
        }
        if w.done_at.is_none() {
            w.done_at = Some(now_text());
            self.plan.writes = true;
        }
        if r.wave + 1 == count {
            r.status = Status::Completed;
            r.updated_at = now_text();
            self.plan.inputs_rev = Some(r.to.clone());
            self.plan.writes = true;
            self.plan.said.push(format!(
                "rollout {} completes: every wave is done, and the fleet runs on {}",
                r.id,
                short(&r.to)
            ));
            return Vec::new();
        }
        let done_at = w
            .done_at
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .unwrap_or(now);
        // An empty wave has nothing to bake.
        let bake = match w.tenants.is_empty() {
            true => Duration::ZERO,
            false => w.bake(),
        };
        let until = done_at + bake;
        let (name, next_name) = (w.name.clone(), r.waves[r.wave + 1].name.clone());
        if now < until {
            self.plan.said.push(format!(
                "wave {} of {count} ({}) is done and bakes until {}: the first apply after that starts wave {} ({})",
                r.wave + 1,
                name,
                humantime::format_rfc3339_seconds(until),
                r.wave + 2,
                next_name,
            ));
            return Vec::new();
        }
        r.wave += 1;
        r.updated_at = now_text();
        let next = &mut r.waves[r.wave];
        next.reached_at = Some(now_text());
        self.plan.writes = true;
        self.plan.said.push(format!(
            "wave {} of {count} ({}) starts: {}",
            r.wave + 1,
            next.name,
            counted(next.tenants.len(), "tenant", "tenants"),
        ));
        let started = next.tenants.clone();
        self.on_to.extend(started.iter().cloned());
        started
    }

    /// Whether `slug`'s change waits: it is reached, and the rollout is paused or halted, or
    /// this plan is of some tenants. A tenant whose rollout change was applied already (its
    /// drift, its own file's change) is not held.
    pub fn holds(&self, slug: &str, state: &State) -> bool {
        let Some(r) = self.plan.rollout.as_ref().filter(|r| r.status.in_flight()) else {
            return false;
        };
        if !self.on_to.contains(slug) || (r.status == Status::Running && !self.scoped) {
            return false;
        }
        let applied = state
            .tenants
            .get(slug)
            .and_then(|t| t.rollout.as_ref())
            .is_some_and(|t| t.applied(&r.id, &r.to));
        !applied || self.stale_to
    }

    /// Puts where the rollout in flight stands first among what the plan says of it (after
    /// it moved on): `rollout r1 (running), 4f1019c → c9bf33c: wave 2 of 3: …`.
    pub fn headline(&mut self) {
        let Some(r) = self.plan.rollout.as_ref() else {
            return;
        };
        let starts = format!("rollout {} starts", r.id);
        if self.plan.said.iter().any(|l| l.starts_with(&starts)) {
            return;
        }
        let shown = r.status.in_flight() || self.plan.writes;
        if !shown {
            return;
        }
        let line = format!(
            "rollout {} ({}), {} → {}: wave {} of {}: {}",
            r.id,
            r.status.as_str(),
            short(&r.from),
            short(&r.to),
            r.wave + 1,
            r.waves.len(),
            describe_waves(r)
        );
        self.plan.said.insert(0, line);
    }

    /// Says why tenants are held, once they are known.
    pub fn say_held(&mut self, held: Vec<String>) {
        if held.is_empty() {
            return;
        }
        let why = match self.plan.rollout.as_ref().map(|r| r.status) {
            _ if self.scoped => "a plan of some tenants does not take a rollout further; an apply of the whole fleet does".to_string(),
            Some(Status::Paused) => "the rollout is paused: `tenant-reconcile rollout resume` goes on".to_string(),
            Some(Status::Halted) => "the rollout halted: `tenant-reconcile rollout status` says why, and `rollout resume` goes on".to_string(),
            _ => "the rollout waits".to_string(),
        };
        self.plan.said.push(format!(
            "{} of the waves reached {}: {why}",
            counted(held.len(), "tenant", "tenants"),
            if held.len() == 1 { "waits" } else { "wait" },
        ));
        self.plan.held = held;
    }
}

/// What a plan does with rollouts: see the module's text. Fails when the config has a
/// rollout policy and the repo is not in git, or its shared inputs are not committed (a
/// rollout goes from one commit's inputs to another's).
pub fn decide(ws: &Workspace, state: &State, scoped: bool) -> Result<Decision, Error> {
    let now = SystemTime::now();
    let mut d = Decision::none(state, scoped, now);
    let Some(policy) = ws.repo.config.rollout.as_ref() else {
        if let Some(r) = state.rollout.as_ref().filter(|r| r.status.in_flight()) {
            d.plan.said.push(format!(
                "{CONFIG_FILE} has no rollout block: rollout {} ({}) goes no further, and every tenant plans from the head",
                r.id,
                r.status.as_str()
            ));
        }
        return Ok(d);
    };
    let head = ws.git_commit.clone().ok_or_else(|| {
        Error::Usage(format!(
            "{CONFIG_FILE} has a rollout block, and a rollout goes from one commit's shared inputs to another's: this tenant repo has no commit\n  hint: commit it to git, or take the rollout block out"
        ))
    })?;
    if ws.rev.is_none() {
        let uncommitted: Vec<String> = ws
            .uncommitted_shared_inputs()
            .into_iter()
            .map(|u| u.path)
            .collect();
        if !uncommitted.is_empty() {
            return Err(Error::Usage(format!(
                "shared inputs are not committed: {}\n  hint: a change to plans, templates or migrations goes out in waves from a commit (the rollout block of {CONFIG_FILE}); commit it, then plan again",
                uncommitted.join(", ")
            )));
        }
    }
    let changed = |from: &str, to: &str| shared_changes(ws, from, to);
    let in_flight = state.rollout.clone().filter(|r| r.status.in_flight());
    match in_flight {
        Some(r) => go_on(&mut d, ws, state, r, &head, changed)?,
        None => start(&mut d, ws, state, policy, &head, changed)?,
    }
    Ok(d)
}

/// No rollout in flight: starts one when the shared inputs changed since the fleet's.
fn start(
    d: &mut Decision,
    ws: &Workspace,
    state: &State,
    policy: &crate::repo::rollout_policy::Policy,
    head: &str,
    changed: impl Fn(&str, &str) -> Result<Vec<String>, Error>,
) -> Result<(), Error> {
    let Some(base) = state.inputs_rev.clone() else {
        // The first plan with a policy: the fleet runs on the head's shared inputs.
        if !d.scoped {
            d.plan.inputs_rev = Some(head.to_string());
            d.plan.writes = true;
            d.plan.said.push(format!(
                "the fleet runs on the shared inputs of {} from now on: a later change to them goes out in waves",
                short(head)
            ));
        }
        return Ok(());
    };
    if base == head {
        return Ok(());
    }
    let files = changed(&base, head)?;
    if files.is_empty() {
        return Ok(());
    }
    if let Some(r) = state
        .rollout
        .as_ref()
        .filter(|r| r.status == Status::Aborted && r.from == base)
    {
        if changed(&r.to, head)?.is_empty() {
            d.from_repo = Some(ws.shared_inputs_at(&base)?);
            d.plan.said.push(format!(
                "rollout {} was aborted, and its change ({}) is still at the head: every tenant stays on the shared inputs of {}",
                r.id,
                r.files.join(", "),
                short(&base)
            ));
            d.plan.said.push(
                "revert the change, or commit another one to start a new rollout".to_string(),
            );
            return Ok(());
        }
    }
    let reached = recorded(changes::reached_by(&files, &ws.repo), state);
    if d.scoped {
        d.from_repo = Some(ws.shared_inputs_at(&base)?);
        d.plan.said.push(format!(
            "the shared inputs changed ({}): the next plan of the whole fleet starts a rollout, and these tenants stay on {} until their wave",
            files.join(", "),
            short(&base)
        ));
        return Ok(());
    }
    if reached.is_empty() {
        d.plan.inputs_rev = Some(head.to_string());
        d.plan.writes = true;
        d.plan.said.push(format!(
            "the shared inputs changed ({}) and reach no tenant: the fleet runs on {} from now on",
            files.join(", "),
            short(head)
        ));
        return Ok(());
    }
    let id = format!("r{}", state.rollouts + 1);
    let policy = tier_policy(&reached, &ws.repo).unwrap_or(policy);
    let mut waves = waves::assign(policy, &reached, &ws.repo, state, &id);
    waves[0].reached_at = Some(now_text());
    d.on_to = waves[0].tenants.iter().cloned().collect();
    let at = now_text();
    let r = Rollout {
        id,
        from: base,
        to: head.to_string(),
        files,
        waves,
        wave: 0,
        status: Status::Running,
        started_at: at.clone(),
        updated_at: at,
        halted: None,
        halts: 0,
        kept_migrations: Vec::new(),
    };
    d.plan.said.push(format!(
        "rollout {} starts: {} → {} ({}), {}: {}",
        r.id,
        short(&r.from),
        short(&r.to),
        r.files.join(", "),
        counted(reached.len(), "tenant", "tenants"),
        describe_waves(&r),
    ));
    d.from_repo = Some(ws.shared_inputs_at(&r.from)?);
    d.plan.rollout = Some(r);
    d.plan.writes = true;
    Ok(())
}

/// A rollout in flight: its reached tenants plan from the head. A new commit changing the
/// shared inputs again becomes its `to`: the waves reached take it, the rest wait as before.
fn go_on(
    d: &mut Decision,
    ws: &Workspace,
    state: &State,
    mut r: Rollout,
    head: &str,
    changed: impl Fn(&str, &str) -> Result<Vec<String>, Error>,
) -> Result<(), Error> {
    let mut retargets = false;
    if r.to != head {
        let more = changed(&r.to, head)?;
        retargets = !more.is_empty();
    }
    if retargets && !d.scoped {
        r.files = changed(&r.from, head)?;
        r.to = head.to_string();
        r.updated_at = now_text();
        let in_waves: HashSet<&str> = r
            .waves
            .iter()
            .flat_map(|w| w.tenants.iter().map(String::as_str))
            .collect();
        let mut joining: Vec<String> = recorded(changes::reached_by(&r.files, &ws.repo), state)
            .into_iter()
            .map(|s| s.to_string())
            .filter(|s| !in_waves.contains(s.as_str()))
            .collect();
        for w in &mut r.waves[..=r.wave] {
            w.done_at = None;
        }
        let last = r.waves.last_mut().expect("a rollout has a wave");
        let joined = joining.len();
        last.tenants.append(&mut joining);
        last.tenants.sort();
        d.plan.writes = true;
        d.plan.said.push(format!(
            "rollout {} now goes to {} ({}): the waves reached take it again{}",
            r.id,
            short(head),
            r.files.join(", "),
            match joined {
                0 => String::new(),
                n => format!(
                    ", and {} join its last wave",
                    counted(n, "more tenant", "more tenants")
                ),
            }
        ));
    }
    d.on_to = r.waves[..=r.wave]
        .iter()
        .flat_map(|w| w.tenants.iter().cloned())
        .collect();
    // The head's shared inputs are not the rollout's `to` yet (a plan of some tenants does
    // not take a new change in): every reached tenant's change waits for a plan of the
    // whole fleet.
    d.stale_to = retargets && d.scoped;
    d.from_repo = Some(ws.shared_inputs_at(&r.from)?);
    d.plan.rollout = Some(r);
    Ok(())
}

/// The rollout block of the plan file every one of `reached` is on, when they share one
/// and it has a block: a change to that tier alone goes out as the tier says.
fn tier_policy<'r>(
    reached: &BTreeSet<Slug>,
    repo: &'r TenantRepo,
) -> Option<&'r crate::repo::rollout_policy::Policy> {
    let mut plans = repo
        .tenants
        .iter()
        .filter(|t| reached.contains(&t.slug))
        .map(|t| t.plan.as_str());
    let first = plans.next()?;
    if plans.any(|p| p != first) {
        return None;
    }
    repo.plans.get(first)?.rollout.as_ref()
}

/// The shared inputs `slug` runs on, as `state show` says it: the fleet's commit, or in a
/// rollout the one its wave has it on (`fed0410, rollout r1's (wave canary)`). `None` when
/// the state records no fleet commit (no rollout policy yet).
pub fn inputs_of(state: &State, slug: &str) -> Option<String> {
    let Some(r) = state.rollout.as_ref().filter(|r| r.status.in_flight()) else {
        return state
            .inputs_rev
            .as_deref()
            .map(|c| format!("{}, the fleet's", short(c)));
    };
    let at = r
        .waves
        .iter()
        .position(|w| w.tenants.iter().any(|t| t == slug));
    Some(match at {
        Some(i) if i <= r.wave => format!(
            "{}, rollout {}'s (wave {})",
            short(&r.to),
            r.id,
            r.waves[i].name
        ),
        Some(i) => format!(
            "{} until rollout {} reaches wave {} ({})",
            short(&r.from),
            r.id,
            i + 1,
            r.waves[i].name
        ),
        None => format!("{}, the fleet's", short(&r.from)),
    })
}

/// `canary (2 tenants) · then ten-percent (20) · then rest (178)`.
pub fn describe_waves(r: &Rollout) -> String {
    r.waves
        .iter()
        .enumerate()
        .map(|(i, w)| match i {
            0 => format!(
                "{} ({})",
                w.name,
                counted(w.tenants.len(), "tenant", "tenants")
            ),
            _ => format!("then {} ({})", w.name, w.tenants.len()),
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

/// The shared inputs changed from commit `from` to commit `to`.
fn shared_changes(ws: &Workspace, from: &str, to: &str) -> Result<Vec<String>, Error> {
    let files = crate::repo::Files::WorkingTree;
    let found = changes::changed_files(&ws.repo.root, from, Some(to), &ws.repo.config, &files)
        .map_err(|e| {
            Error::Usage(format!(
                "{e}\n  hint: a rollout compares the commit the fleet runs on with the head; a shallow clone may lack it (fetch the history, e.g. fetch-depth: 0)"
            ))
        })?;
    Ok(found.shared())
}

/// The tenants of `slugs` the state records and has not tombstoned: a rollout takes those
/// that run on the old inputs, not new ones.
fn recorded(slugs: BTreeSet<Slug>, state: &State) -> BTreeSet<Slug> {
    slugs
        .into_iter()
        .filter(|s| {
            state
                .tenants
                .get(s.as_str())
                .is_some_and(|t| t.lifecycle != Lifecycle::Deprovisioned)
        })
        .collect()
}

pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(7)]
}

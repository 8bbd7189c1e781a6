//! Rendering a [`Plan`](crate::plan::Plan) for people: terminal text (terraform's shape)
//! and markdown for a pull-request comment. JSON is the plan's own serde form.

pub mod blast;
pub mod drift;
pub mod markdown;
pub mod text;

use serde_json::Value;

use crate::model::count::counted;
use crate::plan::{Plan, ResourceChange, Summary, TenantPlan};

/// `Plan: 1 to add, 2 to change, 0 to destroy.`
pub fn summary_line(s: &Summary) -> String {
    let mut line = String::from("Plan: ");
    if s.import > 0 {
        line += &format!("{} to import, ", s.import);
    }
    line += &format!("{} to add, {} to change, ", s.add, s.change);
    if s.replace > 0 {
        line += &format!("{} to replace, ", s.replace);
    }
    line += &format!("{} to destroy.", s.destroy);
    let mut steps = Vec::new();
    if s.smoke_tests > 0 {
        steps.push(format!(
            "smoke tests for {}",
            counted(s.smoke_tests, "tenant", "tenants")
        ));
    }
    if s.hook_runs > 0 {
        steps.push(counted(s.hook_runs, "hook run", "hook runs"));
    }
    if !steps.is_empty() {
        line += &format!(" Then {}.", steps.join(" and "));
    }
    if s.unplaced > 0 {
        line += &format!(
            " {} no Postgres server takes: left as {}.",
            counted(s.unplaced, "tenant", "tenants"),
            if s.unplaced == 1 { "it is" } else { "they are" },
        );
    }
    if s.conflicts > 0 {
        line += &format!(
            " {} not this state's: {} left as {}.",
            counted(s.conflicts, "resource is", "resources are"),
            if s.conflicts == 1 {
                "its tenant is"
            } else {
                "their tenants are"
            },
            if s.conflicts == 1 {
                "it is"
            } else {
                "they are"
            },
        );
    }
    line
}

/// With `--changed-since`: what changed since where, and how far it reaches.
pub fn changed_heading(plan: &Plan) -> Option<String> {
    let c = plan.changed_since.as_ref()?;
    let reached = plan
        .tenants
        .iter()
        .filter(|t| !t.pulled_in_by.is_empty())
        .count();
    Some(format!(
        "Changed since {} (merge-base {}): {} reaching {} with changes.",
        c.base,
        &c.merge_base[..c.merge_base.len().min(12)],
        counted(c.files.len(), "input file", "input files"),
        counted(reached, "tenant", "tenants"),
    ))
}

/// With a rollout policy: what the plan does with the rollout, a line each (`rollout r1
/// starts: …`, `wave 1 of 3 (canary): …`). Empty without one, or when it has nothing to say.
pub fn rollout_lines(plan: &Plan) -> Vec<String> {
    plan.rollout
        .as_ref()
        .map(|r| r.said.clone())
        .unwrap_or_default()
}

/// Whether the plan changes no tenant and only records the rollout's step.
pub fn rollout_only(plan: &Plan) -> bool {
    plan.tenants.is_empty() && plan.has_changes()
}

/// With `--changed-since`: the heading, then each changed input file with the number of
/// tenants it reaches and what it does to them (the blast radius). Empty otherwise.
pub fn changed_lines(plan: &Plan) -> Vec<String> {
    let Some(heading) = changed_heading(plan) else {
        return Vec::new();
    };
    let per_input = blast::per_input(plan);
    let width = per_input
        .iter()
        .map(|(f, ..)| f.path.len())
        .max()
        .unwrap_or(0);
    let mut out = vec![heading];
    for (f, effects, hidden) in per_input {
        out.push(format!(
            "  {} {:width$}  {}",
            f.status,
            f.path,
            counted(f.tenants, "tenant", "tenants")
        ));
        for e in &effects {
            out.push(format!("      {}", blast::line(e)));
        }
        if hidden > 0 {
            out.push(format!(
                "      … {hidden} more kind{} of change",
                if hidden == 1 { "" } else { "s" }
            ));
        }
    }
    out
}

/// What an empty plan says: with `--changed-since` only some tenants were compared.
pub fn no_changes(plan: &Plan) -> &'static str {
    let splits = plan
        .rollout
        .as_ref()
        .and_then(|r| r.rollout.as_ref())
        .is_some_and(|r| {
            r.status.in_flight() || r.status == crate::model::rollout::Status::Aborted
        });
    if splits {
        "The tenants match their files, those the rollout has not reached with the shared inputs they run on."
    } else if plan.changed_since.is_some() {
        "The tenants the changed inputs reach match their files; other tenants were not planned."
    } else {
        "The tenants match their files."
    }
}

/// The changed files that pulled a tenant in, when they are more than its own file.
pub fn pulled_in_by(t: &TenantPlan) -> Option<String> {
    if t.pulled_in_by.is_empty() || t.pulled_in_by == [t.file.clone()] {
        return None;
    }
    Some(format!("← {}", t.pulled_in_by.join(", ")))
}

/// A value as people read it: strings quoted, maps and lists compact.
pub fn value(v: Option<&Value>) -> String {
    match v {
        None => "(none)".into(),
        Some(v) => v.to_string(),
    }
}

/// Every line of one resource change, without colour: the header, then each field or the
/// content diff. Text and markdown both use it.
pub fn change_lines(tenant: &TenantPlan, c: &ResourceChange) -> (String, Vec<String>) {
    // A create's fields are made from its attributes when asked for: once here.
    let fields = c.fields();
    let mut header = format!("{} {}/{}", c.action.symbol(), tenant.slug, c.key);
    if c.action == crate::plan::Action::Import {
        header.push_str(" will be imported");
    }
    if let Some(p) = c.purged() {
        header.push_str("  # ");
        header.push_str(&p.resource);
        if !p.holds.is_empty() {
            header.push_str(": ");
            header.push_str(&p.holds);
        }
    }
    if tenant.action == crate::plan::TenantAction::Purge
        && c.key.kind == crate::desired::Kind::REGISTRY
        && fields.iter().any(|f| f.field == "name")
    {
        header.push_str("  # kept as a tombstone: id, slug, plan and dates");
    }
    if let (crate::desired::Kind::PLACEMENT, Some(placed)) = (c.key.kind, &tenant.placed) {
        header.push_str(&format!("  # {placed}"));
    }
    if let Some(old) = c.leaves() {
        header.push_str(&format!(
            "  # leaves {old} behind, with its data, until {} is purged",
            tenant.slug
        ));
    }
    if c.key.kind == crate::desired::Kind::ROLE
        && tenant.lifecycle.to == crate::state::Lifecycle::Active
        && tenant.lifecycle.from != crate::state::Lifecycle::Active
        && fields
            .iter()
            .any(|f| f.field == "login" && f.new == Some(serde_json::json!(true)))
    {
        header.push_str(
            "  # its login opens once it is active, after its smoke tests and gating hooks",
        );
    } else if c.drift {
        header.push_str("  # changed outside tenant-reconcile");
    } else if c.action == crate::plan::Action::Update && fields.is_empty() {
        header.push_str("  # made by a run cut short before the state recorded it: recorded now");
    }
    let mut lines = Vec::new();
    let width = fields.iter().map(|f| f.field.len()).max().unwrap_or(0);
    let diff = c.text_diff();
    let show_fields = diff.is_none() || c.action != crate::plan::Action::Create;
    if show_fields {
        for f in fields.iter() {
            // The content diff below says more than a changed checksum.
            if diff.is_some() && f.field == "sha256" {
                continue;
            }
            let line = match (&f.old, &f.new) {
                (None, Some(new)) => format!("+ {:width$} = {}", f.field, new),
                (Some(old), None) => format!("- {:width$} = {}", f.field, old),
                (None, None) => format!("+ {:width$} = (known after apply)", f.field),
                (old, new) => format!(
                    "~ {:width$} = {} → {}",
                    f.field,
                    value(old.as_ref()),
                    value(new.as_ref())
                ),
            };
            let line = if f.forces_replace {
                format!("{line}  # forces replacement")
            } else if diff.is_none()
                && c.key.kind == crate::desired::Kind::FILE
                && f.field == "sha256"
                && f.old.is_some()
                && f.new.is_some()
            {
                // Compared with the recorded state, which keeps a rendered file's digest only.
                format!("{line}  # the state keeps only the file's digest; a plan with refresh shows the diff")
            } else {
                line
            };
            lines.push(line);
        }
    }
    if let Some(diff) = &diff {
        lines.extend(diff.lines().map(str::to_string));
    }
    (header, lines)
}

/// Whose a conflicting resource is, as a plan and an apply's outcome say it.
pub fn conflict_owner(c: &crate::plan::Conflict) -> String {
    match (&c.owner, &c.tenant) {
        (_, Some(id)) => format!(
            "{} was made by this state for another tenant (id {id}), which had the slug before",
            c.resource
        ),
        (Some(state), None) => format!("{} is managed by another state, {state:?}", c.resource),
        (None, None) => format!("{} has no mark of ownership", c.resource),
    }
}

/// A tenant's conflicts, one line each, then how to adopt them; or why no Postgres server
/// takes it.
pub fn conflict_lines(t: &TenantPlan, state_name: &str) -> Vec<String> {
    if let Some(why) = &t.unplaced {
        return vec![
            format!("! {}/placement: {why}", t.slug),
            format!(
                "  (nothing of {} is changed until a server takes it)",
                t.slug
            ),
        ];
    }
    let mut out: Vec<String> = t
        .conflicts
        .iter()
        .map(|c| {
            format!(
                "! {}/{} exists and is not managed by this state (state {state_name:?}): {}",
                t.slug,
                c.key,
                conflict_owner(c)
            )
        })
        .collect();
    out.push(format!(
        "  (nothing of {slug} is changed; to adopt what exists: tenant-reconcile plan --import {slug})",
        slug = t.slug
    ));
    out
}

/// A held tenant, as text and markdown say it.
pub fn held_line(h: &crate::plan::Held) -> String {
    let until = humantime::parse_rfc3339(&h.until)
        .map(crate::offboarding::day)
        .unwrap_or_else(|_| h.until.clone());
    format!(
        "{} is held until {until}, then purged by the first apply after that (its export: {})",
        h.slug, h.export
    )
}

/// The lines of a tenant's smoke tests and hooks, after its resource changes:
/// `> acme/smoke_test  # before it becomes active: the built-in checks, and app (http)`.
pub fn step_lines(t: &TenantPlan) -> Vec<String> {
    use crate::repo::checks::Probe;
    let mut out = Vec::new();
    if let Some(smoke) = &t.smoke {
        let declared: Vec<String> = smoke
            .checks
            .iter()
            .map(|c| {
                let kind = match c.probe {
                    Probe::Http { .. } => "http",
                    Probe::Sql { .. } => "sql",
                };
                if c.advisory {
                    format!("{} ({kind}, advisory)", c.name)
                } else {
                    format!("{} ({kind})", c.name)
                }
            })
            .collect();
        out.push(format!(
            "> {}/{}  # {}: the built-in checks{}",
            t.slug,
            crate::plan::SMOKE_STEP,
            smoke.reason,
            if declared.is_empty() {
                String::new()
            } else {
                format!(", and {}", declared.join(", "))
            }
        ));
    }
    for h in &t.hooks {
        let address = format!("{}/hook/{}", t.slug, h.spec.name);
        out.push(match &h.run {
            None => format!(
                "> {address}  # {}: runs {}",
                h.moment,
                if h.spec.gating {
                    "before the tenant moves on; a failure stops it there"
                } else {
                    "once the tenant has moved on; a failure is retried by later applies"
                }
            ),
            Some(run) => format!("~ {address}  # {}", owed(run, h.due)),
        });
    }
    out
}

/// `provisioned: failed 2 times, next try after 04:10`.
fn owed(run: &crate::hooks::HookRun, due: bool) -> String {
    let times = counted(run.attempts as usize, "time", "times");
    let when = match (&run.next_try_at, due) {
        (_, true) => "tried again now".to_string(),
        (Some(at), false) => format!(
            "next try after {}",
            humantime::parse_rfc3339(at).map_or(at.clone(), crate::hooks::clock)
        ),
        (None, false) => "waiting".to_string(),
    };
    let last = run
        .last_error
        .as_deref()
        .map(|e| format!(" (last: {})", e.lines().next().unwrap_or_default()))
        .unwrap_or_default();
    format!("{}: failed {times}, {when}{last}", run.moment)
}

/// A hook run owed to a tenant with nothing else to do, still waiting.
pub fn waiting_line(w: &crate::plan::WaitingHook) -> String {
    format!(
        "{}/hook/{} {}; nothing else to do",
        w.slug,
        w.run.hook,
        owed(&w.run, false)
    )
}

pub fn tenant_heading(t: &TenantPlan) -> String {
    let blocked = t.action == crate::plan::TenantAction::Blocked;
    if t.action == crate::plan::TenantAction::Purge && t.tenant.offboarding.erase {
        return format!(
            "{} {} (ERASURE request, no hold) ({} → {})",
            t.slug,
            t.verb(),
            t.lifecycle.from,
            t.lifecycle.to
        );
    }
    if t.changes.is_empty() && t.lifecycle.from == t.lifecycle.to && !blocked {
        return format!(
            "{} is as its file asks; what an earlier apply left to do runs again",
            t.slug
        );
    }
    let lifecycle = if t.lifecycle.from != t.lifecycle.to && !blocked {
        format!(" ({} → {})", t.lifecycle.from, t.lifecycle.to)
    } else {
        String::new()
    };
    format!("{} {}{lifecycle}", t.slug, t.verb())
}

pub fn orphan_line(o: &crate::plan::Orphan) -> String {
    format!(
        "{} is orphaned: its tenant file is gone; it is left as it is ({}), never destroyed",
        o.slug, o.lifecycle
    )
}

pub fn json(plan: &Plan) -> String {
    plan.to_json()
}

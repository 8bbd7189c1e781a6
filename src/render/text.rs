//! The plan as terminal text, in terraform's shape. Colour codes are always written here;
//! the output stream strips them when it is not a terminal (anstream).

use std::fmt::Write;

use anstyle::{AnsiColor, Style};

use super::{change_lines, orphan_line, summary_line, tenant_heading};
use crate::plan::{Action, Plan};

const GREEN: Style = AnsiColor::Green.on_default();
const YELLOW: Style = AnsiColor::Yellow.on_default();
const RED: Style = AnsiColor::Red.on_default();
const BOLD: Style = Style::new().bold();
const DIM: Style = Style::new().dimmed();

fn style_for(line: &str) -> Style {
    if line.starts_with("-/+") {
        YELLOW
    } else if line.starts_with('+') {
        GREEN
    } else if line.starts_with('~') {
        YELLOW
    } else if line.starts_with('-') {
        RED
    } else if line.starts_with("@@") {
        DIM
    } else {
        Style::new()
    }
}

pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    write(&mut out, plan);
    out
}

/// Writes the plan to `out` a line at a time: a fresh apply of a large fleet prints
/// kilobytes per tenant, which need not be held all at once.
pub fn write(out: &mut impl Write, plan: &Plan) {
    if !plan.refreshed {
        let _ = writeln!(out, "{DIM}Live resources were not read (--no-refresh): comparing with the recorded state.{DIM:#}\n");
    }
    let changed = super::changed_lines(plan);
    if !changed.is_empty() {
        for line in &changed {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out);
    }
    let rollout = super::rollout_lines(plan);
    if !rollout.is_empty() {
        let _ = writeln!(out, "{BOLD}Rollout:{BOLD:#}");
        for line in &rollout {
            let _ = writeln!(out, "  {line}");
        }
        let _ = writeln!(out);
    }
    for (heading, listed) in [
        (
            "this plan downgrades tenants:",
            super::blast::downgrades(plan),
        ),
        (
            "this plan gives tenants more than their plan does:",
            super::blast::upgrades(plan),
        ),
    ] {
        if listed.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{YELLOW}Warning:{YELLOW:#} {heading}");
        for d in &listed {
            let _ = writeln!(out, "  {YELLOW}{}{YELLOW:#}", super::blast::line(d));
        }
        let _ = writeln!(out);
    }
    if super::rollout_only(plan) {
        let _ = writeln!(
            out,
            "{BOLD}No tenant changes.{BOLD:#} Apply records the rollout's step above."
        );
    } else if plan.tenants.is_empty() {
        let _ = writeln!(out, "{BOLD}No changes.{BOLD:#} {}", super::no_changes(plan));
    } else {
        let _ = writeln!(out, "tenant-reconcile will perform the following actions:");
        if plan.summary.drifted > 0 {
            let _ = writeln!(
                out,
                "({} changed outside tenant-reconcile; apply puts {} back.)",
                if plan.summary.drifted == 1 {
                    "1 tenant".to_string()
                } else {
                    format!("{} tenants", plan.summary.drifted)
                },
                if plan.summary.drifted == 1 {
                    "it"
                } else {
                    "them"
                }
            );
        }
        for t in &plan.tenants {
            let _ = writeln!(
                out,
                "\n  {BOLD}# {}{BOLD:#} {DIM}[{}]{}{DIM:#}",
                tenant_heading(t),
                t.file,
                super::pulled_in_by(t).map_or(String::new(), |p| format!(" {p}"))
            );
            if t.action == crate::plan::TenantAction::Blocked {
                for line in super::conflict_lines(t, &plan.state.name) {
                    let st = if line.starts_with('!') { RED } else { DIM };
                    let _ = writeln!(out, "  {st}{line}{st:#}");
                }
            }
            for c in &t.changes {
                let (header, lines) = change_lines(t, c);
                let s = match c.action {
                    Action::Create | Action::Import => GREEN,
                    Action::Update => YELLOW,
                    Action::Replace => YELLOW,
                    Action::Delete => RED,
                };
                let _ = writeln!(out, "  {s}{header}{s:#}");
                for line in lines {
                    let st = style_for(&line);
                    let _ = writeln!(out, "      {st}{line}{st:#}");
                }
            }
            for line in super::step_lines(t) {
                let st = style_for(&line);
                let _ = writeln!(out, "  {st}{line}{st:#}");
            }
        }
    }
    if !plan.waiting.is_empty() {
        let _ = writeln!(out);
        for w in &plan.waiting {
            let _ = writeln!(out, "  {DIM}# {}{DIM:#}", super::waiting_line(w));
        }
    }
    if !plan.held.is_empty() {
        let _ = writeln!(out);
        for h in &plan.held {
            let _ = writeln!(out, "  {DIM}# {}{DIM:#}", super::held_line(h));
        }
    }
    if !plan.orphans.is_empty() {
        let _ = writeln!(out);
        for o in &plan.orphans {
            let _ = writeln!(out, "  {YELLOW}# {}{YELLOW:#}", orphan_line(o));
        }
    }
    for w in &plan.warnings {
        let _ = writeln!(out, "\n{YELLOW}Warning:{YELLOW:#} {w}");
    }
    if !plan.tenants.is_empty() {
        let _ = writeln!(out, "\n{BOLD}{}{BOLD:#}", summary_line(&plan.summary));
    }
}

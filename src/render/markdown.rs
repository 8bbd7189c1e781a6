//! The plan as markdown for a pull-request comment: the summary first, then each tenant
//! collapsed, and never longer than [`MAX_CHARS`] however many tenants change (GitHub
//! refuses comments over 65,536 characters).

use std::fmt::Write;

use super::{change_lines, orphan_line, summary_line, tenant_heading};
use crate::plan::Plan;

pub const MAX_CHARS: usize = 60_000;
/// Room kept for the closing lines.
const FOOTER_RESERVE: usize = 600;
const MAX_TABLE_ROWS: usize = 100;
/// The changed-inputs table and the downgrade list stop here, so the per-tenant detail
/// below them always has room.
const HEAD_BUDGET: usize = 20_000;
/// One effect in a table cell: values such as lifecycle lists can be long.
const MAX_EFFECT_CHARS: usize = 160;

/// `s`, cut to `max` characters with an ellipsis, and safe inside a table cell.
fn cell(s: &str, max: usize) -> String {
    let s = s.replace('|', "\\|").replace('\n', " ");
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### tenant-reconcile plan\n");
    if let (Some(c), Some(heading)) = (&plan.changed_since, super::changed_heading(plan)) {
        let _ = writeln!(
            out,
            "{heading}\n\n| | changed input | tenants reached | what it does |\n|---|---|---|---|"
        );
        let mut listed = 0;
        for (f, effects, _) in super::blast::per_input(plan)
            .into_iter()
            .take(MAX_TABLE_ROWS)
        {
            let what: Vec<String> = effects
                .iter()
                .map(|e| {
                    let line = cell(&super::blast::line(e), MAX_EFFECT_CHARS);
                    if e.downgrade {
                        format!("⚠️ **{line}**")
                    } else {
                        line
                    }
                })
                .collect();
            let row = format!(
                "| {} | `{}` | {} | {} |\n",
                f.status,
                cell(&f.path, MAX_EFFECT_CHARS),
                f.tenants,
                what.join("<br>")
            );
            if out.len() + row.len() > HEAD_BUDGET {
                break;
            }
            out.push_str(&row);
            listed += 1;
        }
        if c.files.len() > listed {
            let _ = writeln!(out, "| | … {} more files | | |", c.files.len() - listed);
        }
        let _ = writeln!(out);
    }
    let downgrades = super::blast::downgrades(plan);
    if !downgrades.is_empty() {
        let _ = writeln!(out, "> ⚠️ **This plan downgrades tenants:**");
        for (i, d) in downgrades.iter().enumerate() {
            // Under that heading the DOWNGRADE mark would only repeat it.
            let line = super::blast::line(d).replace("DOWNGRADE: ", "");
            let line = format!("> - {}\n", cell(&line, MAX_EFFECT_CHARS));
            if out.len() + line.len() > HEAD_BUDGET + 4_000 {
                let _ = writeln!(out, "> - … {} more", downgrades.len() - i);
                break;
            }
            out.push_str(&line);
        }
        let _ = writeln!(out);
    }
    if plan.tenants.is_empty() {
        let _ = writeln!(out, "**No changes.** {}", super::no_changes(plan));
    } else {
        let s = &plan.summary;
        let _ = writeln!(
            out,
            "**{}** {} tenant{} affected, {} changed outside tenant-reconcile, {} orphaned.\n",
            summary_line(s),
            s.tenants,
            if s.tenants == 1 { "" } else { "s" },
            s.drifted,
            s.orphaned
        );
        let _ = writeln!(out, "| tenant | action | changes |\n|---|---|---|");
        for t in plan.tenants.iter().take(MAX_TABLE_ROWS) {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} |",
                t.slug,
                t.action.verb(),
                t.changes.len()
            );
        }
        if plan.tenants.len() > MAX_TABLE_ROWS {
            let _ = writeln!(
                out,
                "| … | {} more tenants | |",
                plan.tenants.len() - MAX_TABLE_ROWS
            );
        }
        let _ = writeln!(out);
    }
    for w in &plan.waiting {
        out.push_str(&format!("> ⏳ {}\n", super::waiting_line(w)));
    }
    for h in &plan.held {
        let line = format!("> ⏳ {}\n", super::held_line(h));
        if out.len() + line.len() + FOOTER_RESERVE > MAX_CHARS {
            break;
        }
        out.push_str(&line);
    }
    for o in &plan.orphans {
        let line = format!("> ⚠️ {}\n", orphan_line(o));
        if out.len() + line.len() + FOOTER_RESERVE > MAX_CHARS {
            break;
        }
        out.push_str(&line);
    }
    for w in &plan.warnings {
        let line = format!("> ⚠️ {w}\n");
        if out.len() + line.len() + FOOTER_RESERVE > MAX_CHARS {
            break;
        }
        out.push_str(&line);
    }
    let mut shown = 0;
    for t in &plan.tenants {
        let mut body = String::new();
        if !t.conflicts.is_empty() {
            for line in super::conflict_lines(t, &plan.state.name) {
                body.push_str(&line);
                body.push('\n');
            }
        }
        for c in &t.changes {
            let (header, lines) = change_lines(t, c);
            body.push_str(&header);
            body.push('\n');
            for l in lines {
                body.push_str("    ");
                body.push_str(&l);
                body.push('\n');
            }
        }
        for line in super::step_lines(t) {
            body.push_str(&line);
            body.push('\n');
        }
        let fence = fence_for(&body);
        let section = format!(
            "<details><summary><code>{}</code> {} ({} change{})</summary>\n\n{fence}diff\n{body}{fence}\n\n</details>\n",
            t.slug,
            escape(tenant_heading(t)[t.slug.as_str().len()..].trim_start()),
            t.changes.len(),
            if t.changes.len() == 1 { "" } else { "s" }
        );
        if out.len() + section.len() + FOOTER_RESERVE > MAX_CHARS {
            break;
        }
        out.push_str(&section);
        shown += 1;
    }
    if shown < plan.tenants.len() {
        let _ = writeln!(
            out,
            "\n_{} more tenant{} not shown to keep this comment within size limits; run `tenant-reconcile plan` for the full plan._",
            plan.tenants.len() - shown,
            if plan.tenants.len() - shown == 1 { "" } else { "s" }
        );
    }
    out
}

/// A code fence longer than any run of backticks inside the body.
fn fence_for(body: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in body.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    "`".repeat((longest + 1).max(3))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

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

/// `s`, cut to `max` characters with an ellipsis, then made [`inert`] (which keeps it
/// inside a table cell too).
fn cell(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => inert(&format!("{}…", &s[..i])),
        None => inert(s),
    }
}

/// Text that may carry what a tenant file or a pull request wrote (a tenant's name, an
/// owner's email, a label, a file's path), as markdown that shows it and does nothing else:
/// no HTML, link, image, emphasis, code span, table cell break, mention or autolink. Every
/// line of the comment outside a code block goes through here.
fn inert(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '\\' | '`' | '*' | '~' | '[' | ']' | '|' => {
                out.push('\\');
                out.push(c);
            }
            // Inside a word (`api_calls`) an underscore emphasises nothing.
            '_' if i > 0
                && chars[i - 1].is_alphanumeric()
                && chars.get(i + 1).is_some_and(|n| n.is_alphanumeric()) =>
            {
                out.push(c)
            }
            '_' => out.push_str("\\_"),
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    unlinked(&html_escape(&out))
}

/// Text for an HTML element of the comment (a `<summary>`), where markdown is not read but
/// mentions and autolinks still are.
fn inert_html(s: &str) -> String {
    unlinked(&html_escape(&s.replace(['\n', '\r'], " ")))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// GitHub turns `@name` into a mention (a notification), and `http://…`, `www.…` and an
/// email address into links, in any text outside code, escaped or not. An invisible word
/// joiner after `@`, in `://` and in `www.` leaves them as they read and inert.
fn unlinked(s: &str) -> String {
    const JOINER: char = '\u{2060}';
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    for (i, &c) in chars.iter().enumerate() {
        out.push(c);
        let next = |n: usize| chars.get(i + n).copied();
        let scheme = c == ':' && next(1) == Some('/') && next(2) == Some('/');
        let www = i >= 2
            && chars[i - 2..=i]
                .iter()
                .all(|w| w.eq_ignore_ascii_case(&'w'))
            && next(1) == Some('.');
        if c == '@' || scheme || www {
            out.push(JOINER);
        }
    }
    out
}

/// `s` as a code span inside a table cell, whatever backticks it holds.
fn code_cell(s: &str) -> String {
    let s = s.replace(['\n', '\r'], " ");
    let mut longest = 0;
    let mut run = 0;
    for c in s.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    // A span that starts or ends with a backtick is padded, and the padding is not shown.
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    // A table cell ends at a `|`, even inside a code span, unless it is escaped.
    format!("{fence}{pad}{}{pad}{fence}", s.replace('|', "\\|"))
}

pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### tenant-reconcile plan\n");
    if let (Some(c), Some(heading)) = (&plan.changed_since, super::changed_heading(plan)) {
        let _ = writeln!(
            out,
            "{}\n\n| | changed input | tenants reached | what it does |\n|---|---|---|---|",
            inert(&heading)
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
                    if e.marked() {
                        format!("⚠️ **{line}**")
                    } else {
                        line
                    }
                })
                .collect();
            let row = format!(
                "| {} | {} | {} | {} |\n",
                f.status,
                code_cell(&f.path),
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
    for (heading, mark, listed) in [
        (
            "This plan downgrades tenants:",
            "DOWNGRADE: ",
            super::blast::downgrades(plan),
        ),
        (
            "This plan gives tenants more than their plan does:",
            "UPGRADE: ",
            super::blast::upgrades(plan),
        ),
    ] {
        if listed.is_empty() {
            continue;
        }
        let _ = writeln!(out, "> ⚠️ **{heading}**");
        for (i, d) in listed.iter().enumerate() {
            // Under that heading the mark would only repeat it.
            let line = super::blast::line(d).replace(mark, "");
            let line = format!("> - {}\n", cell(&line, MAX_EFFECT_CHARS));
            if out.len() + line.len() > HEAD_BUDGET + 4_000 {
                let _ = writeln!(out, "> - … {} more", listed.len() - i);
                break;
            }
            out.push_str(&line);
        }
        let _ = writeln!(out);
    }
    let rollout = super::rollout_lines(plan);
    if !rollout.is_empty() {
        let _ = writeln!(out, "**Rollout**");
        for line in &rollout {
            let _ = writeln!(out, "- {}", cell(line, MAX_EFFECT_CHARS));
        }
        let _ = writeln!(out);
    }
    if super::rollout_only(plan) {
        let _ = writeln!(
            out,
            "**No tenant changes.** Apply records the rollout's step above."
        );
    } else if plan.tenants.is_empty() {
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
            let _ = writeln!(out, "| `{}` | {} | {} |", t.slug, t.verb(), t.changes.len());
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
        out.push_str(&format!("> ⏳ {}\n", inert(&super::waiting_line(w))));
    }
    for h in &plan.held {
        let line = format!("> ⏳ {}\n", inert(&super::held_line(h)));
        if out.len() + line.len() + FOOTER_RESERVE > MAX_CHARS {
            break;
        }
        out.push_str(&line);
    }
    for o in &plan.orphans {
        let line = format!("> ⚠️ {}\n", inert(&orphan_line(o)));
        if out.len() + line.len() + FOOTER_RESERVE > MAX_CHARS {
            break;
        }
        out.push_str(&line);
    }
    for w in &plan.warnings {
        let line = format!("> ⚠️ {}\n", inert(w));
        if out.len() + line.len() + FOOTER_RESERVE > MAX_CHARS {
            break;
        }
        out.push_str(&line);
    }
    let mut shown = 0;
    for t in &plan.tenants {
        let mut body = String::new();
        if t.action == crate::plan::TenantAction::Blocked {
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
            inert_html(tenant_heading(t)[t.slug.as_str().len()..].trim_start()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_text_is_shown_and_does_nothing() {
        assert_eq!(
            inert("<b>x</b> [a](http://e) @o/t ops@x.example `c` *e* _u_ api_calls | WwW.e"),
            "&lt;b&gt;x&lt;/b&gt; \\[a\\](http:\u{2060}//e) @\u{2060}o/t ops@\u{2060}x.example \\`c\\` \\*e\\* \\_u\\_ api_calls \\| WwW\u{2060}.e"
        );
        // A code span outlasts any run of backticks inside it, and keeps to its cell.
        assert_eq!(code_cell("a``b"), "```a``b```");
        assert_eq!(code_cell("`a|b"), "`` `a\\|b ``");
    }
}

//! Rendering a [`Plan`](crate::plan::Plan) for people: terminal text (terraform's shape)
//! and markdown for a pull-request comment. JSON is the plan's own serde form.

pub mod markdown;
pub mod text;

use serde_json::Value;

use crate::plan::{Plan, ResourceChange, Summary, TenantPlan};

/// `Plan: 1 to add, 2 to change, 0 to destroy.`
pub fn summary_line(s: &Summary) -> String {
    format!(
        "Plan: {} to add, {} to change, {} to destroy.",
        s.add, s.change, s.destroy
    )
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
    let mut header = format!("{} {}/{}", c.action.symbol(), tenant.slug, c.key);
    if c.drift {
        header.push_str("  # changed outside tenant-reconcile");
    }
    let mut lines = Vec::new();
    let width = c.fields.iter().map(|f| f.field.len()).max().unwrap_or(0);
    let show_fields = c.diff.is_none() || c.action != crate::plan::Action::Create;
    if show_fields {
        for f in &c.fields {
            // The content diff below says more than a changed checksum.
            if c.diff.is_some() && f.field == "sha256" {
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
            } else {
                line
            };
            lines.push(line);
        }
    }
    if let Some(diff) = &c.diff {
        lines.extend(diff.lines().map(str::to_string));
    }
    (header, lines)
}

pub fn tenant_heading(t: &TenantPlan) -> String {
    let lifecycle = if t.lifecycle.from != t.lifecycle.to {
        format!(" ({} → {})", t.lifecycle.from, t.lifecycle.to)
    } else {
        String::new()
    };
    format!("{} {}{lifecycle}", t.slug, t.action.verb())
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

//! A [`DriftReport`] for people: terminal text, and markdown for an alert or an issue.
//! JSON is the report's own serde form, for schedulers and alerting.

use crate::plan::drift::{DriftReport, DriftStatus};

/// The report's lines without colour; text and markdown both use them.
fn lines(r: &DriftReport) -> Vec<String> {
    let mut out = Vec::new();
    for t in &r.tenants {
        out.push(format!("# {}", t.slug));
        for res in &t.resources {
            match res.status {
                DriftStatus::Missing => out.push(format!(
                    "- {}  # deleted outside tenant-reconcile",
                    res.address
                )),
                DriftStatus::Changed => {
                    out.push(format!("~ {}", res.address));
                    let width = res.fields.iter().map(|f| f.field.len()).max().unwrap_or(0);
                    for f in &res.fields {
                        out.push(format!(
                            "    ~ {:width$} = {} → {}",
                            f.field,
                            super::value(f.recorded.as_ref()),
                            super::value(f.live.as_ref()),
                        ));
                    }
                }
            }
        }
        out.push(String::new());
    }
    out
}

/// The closing line: what drifted, and what to do about it.
pub fn summary_line(r: &DriftReport) -> String {
    let s = &r.summary;
    if s.tenants_checked == 0 {
        return "No drift: no tenant has been applied yet, so nothing is recorded to compare with."
            .into();
    }
    if !r.has_drift() {
        return format!(
            "No drift: the live resources of {} match the recorded state.",
            if s.tenants_checked == 1 {
                "1 tenant".to_string()
            } else {
                format!("{} tenants", s.tenants_checked)
            }
        );
    }
    let n = |count: usize, one: &str, many: &str| {
        format!("{count} {}", if count == 1 { one } else { many })
    };
    format!(
        "Drift: {} of {} (of {} checked) changed outside tenant-reconcile. `tenant-reconcile apply` puts {} back.",
        n(s.resources_drifted, "resource", "resources"),
        n(s.tenants_drifted, "tenant", "tenants"),
        s.tenants_checked,
        if s.resources_drifted == 1 { "it" } else { "them" }
    )
}

pub fn text(r: &DriftReport) -> String {
    let mut out = String::new();
    if r.has_drift() {
        out.push_str("Changed outside tenant-reconcile (recorded → live):\n\n");
        for line in lines(r) {
            if line.is_empty() {
                out.push('\n');
            } else {
                out.push_str("  ");
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    out.push_str(&summary_line(r));
    out.push('\n');
    out
}

/// Bounded like a plan's markdown, so it fits an issue or a chat message at any fleet size.
pub fn markdown(r: &DriftReport) -> String {
    const LIMIT: usize = 60_000;
    let mut out = format!("### tenant-reconcile drift\n\n**{}**\n", summary_line(r));
    if r.has_drift() {
        out.push_str("\n```diff\n");
        let all = lines(r);
        let mut shown = 0;
        for line in &all {
            if out.len() + line.len() > LIMIT {
                break;
            }
            out.push_str(line);
            out.push('\n');
            shown += 1;
        }
        out.push_str("```\n");
        if shown < all.len() {
            out.push_str(&format!(
                "\n_{} more lines left out; `tenant-reconcile plan --refresh-only --format json` has them all._\n",
                all.len() - shown
            ));
        }
    }
    out
}

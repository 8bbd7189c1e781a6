//! The deletion audit: one row per purged resource, kept in the control plane for good. It
//! says what was destroyed (its address, what it was, how much it held), when, by which run,
//! and after which export, so a right-to-erasure audit can be answered without keeping any
//! of the deleted data: no row holds a name, an email or a value of the tenant's.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub tenant_id: String,
    pub slug: String,
    /// `acme/database`.
    pub address: String,
    /// What it was, as its target names it: `schema t_acme`, `bucket acme-data`.
    pub resource: String,
    /// What it held when the plan counted it: `2 tables, 1,204 rows`.
    pub holds: String,
    /// The tenant asked for its data to be erased (no hold).
    pub erasure: bool,
    /// Where the export it followed is, and the sha256 of its manifest; `None` when an
    /// erasure request waived the export.
    pub export: Option<String>,
    pub export_sha256: Option<String>,
    /// An erasure's export is removed then (its plan's `erasure_export_days` after the
    /// purge); the export's own removal is a row of its own (`acme/export`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_until: Option<String>,
    /// The run: the tenant repo's commit, and `user@host`.
    pub git_commit: Option<String>,
    pub run_by: String,
    pub started_at: String,
    /// `None` while the purge of the resource has not finished.
    pub purged_at: Option<String>,
}

/// An audit row as both control planes read it, in [`AuditEntry`]'s field order.
pub type Row = (
    String,
    String,
    String,
    String,
    String,
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    String,
    Option<String>,
);

impl AuditEntry {
    pub fn from_row(r: Row) -> AuditEntry {
        let (
            tenant_id,
            slug,
            address,
            resource,
            holds,
            erasure,
            export,
            export_sha256,
            export_until,
            git_commit,
            run_by,
            started_at,
            purged_at,
        ) = r;
        AuditEntry {
            tenant_id,
            slug,
            address,
            resource,
            holds,
            erasure,
            export,
            export_sha256,
            export_until,
            git_commit,
            run_by,
            started_at,
            purged_at,
        }
    }
}

/// The audit as a table for people.
pub fn render(entries: &[AuditEntry]) -> String {
    if entries.is_empty() {
        return "No resource has been purged.\n".into();
    }
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            [
                e.purged_at
                    .clone()
                    .unwrap_or_else(|| format!("(purging since {})", e.started_at)),
                e.address.clone(),
                if e.holds.is_empty() {
                    e.resource.clone()
                } else {
                    format!("{}: {}", e.resource, e.holds)
                },
                match (&e.export, e.erasure) {
                    (Some(at), erasure) => format!(
                        "{}{at} (manifest {}){}",
                        if erasure { "ERASURE, export " } else { "" },
                        e.export_sha256
                            .as_deref()
                            .map(|s| &s[..s.len().min(12)])
                            .unwrap_or("?"),
                        e.export_until
                            .as_deref()
                            .map(|u| format!(", kept until {}", &u[..u.len().min(10)]))
                            .unwrap_or_default()
                    ),
                    (None, true) => "ERASURE, export waived".into(),
                    // A moved copy, or a tenant whose plan keeps no export: after its hold.
                    (None, false) => "its hold, no export".into(),
                },
                e.run_by.clone(),
                e.git_commit
                    .as_deref()
                    .map(|c| c[..c.len().min(12)].to_string())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let head = ["PURGED", "RESOURCE", "WHAT", "AFTER", "BY", "COMMIT"];
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&head);
    for r in &rows {
        line(&r.each_ref().map(String::as_str));
    }
    out
}

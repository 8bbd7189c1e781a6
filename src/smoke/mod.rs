//! Smoke tests: what is checked before a tenant becomes active, and again by
//! `tenant-reconcile check`.
//!
//! Every target checks what it holds of the tenant through [`Provider::smoke`]: the control
//! plane reads the registry row and the owner's membership back; a data target logs in as
//! the tenant's own role, reads and writes (and rolls back) in its slice, and is refused
//! another tenant's slice and the control plane; a bucket target puts, reads and deletes
//! a probe object; rendered files are compared with their recorded digest. The checks a
//! plan file or the config declares run besides: `http` here, `sql` by the data target as
//! the tenant's role. A check's message never holds a secret: it says what was reached and
//! how, never with what password.

pub mod http;

use crate::model::health::{CheckOutcome, Health};
use crate::provider::{StepContext, Targets};
use crate::repo::checks::{CheckSpec, Probe};

/// Runs every check of one tenant: each target's built-in ones and `declared` (its plan's
/// and the config's, http URLs rendered for it), side by side. Advisory checks are marked
/// so, in declared order after the built-in ones.
pub async fn run(targets: &Targets, ctx: &StepContext<'_>, declared: &[CheckSpec]) -> Health {
    let sql: Vec<&CheckSpec> = declared
        .iter()
        .filter(|c| matches!(c.probe, Probe::Sql { .. }))
        .collect();
    let builtin = futures::future::join_all(targets.all().map(|p| p.smoke(ctx, &sql)));
    let http = futures::future::join_all(declared.iter().filter_map(|c| match &c.probe {
        Probe::Http { url, expect_status } => Some(http::check(c, url, *expect_status)),
        Probe::Sql { .. } => None,
    }));
    let (builtin, http) = futures::join!(builtin, http);
    let mut checks: Vec<CheckOutcome> = builtin.into_iter().flatten().collect();
    checks.extend(http);
    for c in &mut checks {
        if declared.iter().any(|d| d.name == c.name && d.advisory) {
            c.advisory = true;
        }
    }
    let order = |name: &str| {
        crate::repo::checks::BUILTIN
            .iter()
            .position(|b| *b == name)
            .unwrap_or(usize::MAX)
            .min(
                declared
                    .iter()
                    .position(|d| d.name == name)
                    .map_or(usize::MAX, |i| 100 + i),
            )
    };
    checks.sort_by_key(|c| order(&c.name));
    Health {
        at: crate::state::now(),
        checks,
    }
}

/// Rows counted per table of a slice, as a data target's `data` check reads them.
pub type Counted = Result<Vec<(String, u64)>, String>;

/// The `data` check's verdict on what `who` (`tenant_acme `, or nothing locally) counted:
/// a seeded tenant must find rows.
pub fn data_verdict(who: &str, counted: &Counted, seeded: bool) -> Result<String, String> {
    let counts = counted.as_ref().map_err(Clone::clone)?;
    let rows: u64 = counts.iter().map(|(_, n)| n).sum();
    if seeded && rows == 0 {
        return Err(format!(
            "{who}sees no rows in its slice, though it was seeded"
        ));
    }
    Ok(format!(
        "{who}reads {}",
        crate::provider::tables_and_rows(counts.len(), rows)
    ))
}

/// The table the `write` check writes a row of (one with rows), `Ok(None)` when there is
/// none, or why it is not run.
pub fn write_target(counted: &Counted) -> Result<Option<&str>, String> {
    match counted {
        Ok(counts) => Ok(counts.iter().find(|(_, n)| *n > 0).map(|(t, _)| t.as_str())),
        Err(_) => Err("not run: the slice's tables do not read".into()),
    }
}

/// A bucket probe's verdict: whether the object read back as written, and whether its
/// delete went through.
pub fn probe_verdict(
    bucket: &str,
    read: Result<bool, String>,
    deleted: Result<(), String>,
) -> Result<String, String> {
    match (read?, deleted) {
        (true, Ok(())) => Ok(format!(
            "the bucket {bucket} took, returned and deleted a probe object"
        )),
        (false, _) => Err("the probe object read back differs".into()),
        (true, Err(e)) => Err(e),
    }
}

/// A declared sql check's answer: its first column of its first row must be true.
pub fn sql_verdict(first: Option<Option<bool>>) -> Result<String, String> {
    match first {
        Some(Some(true)) => Ok("returned true".into()),
        Some(Some(false)) => Err("returned false".into()),
        Some(None) => Err("returned NULL".into()),
        None => Err("returned no row".into()),
    }
}

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

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::provider::{StepContext, Targets};
use crate::repo::checks::{CheckSpec, Probe};

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOutcome {
    pub name: String,
    pub ok: bool,
    /// A failure is reported and does not hold the tenant back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub advisory: bool,
    /// What was found (`reads 2 tables, 14 rows`) or why it failed.
    pub message: String,
    pub latency_ms: u64,
}

impl CheckOutcome {
    pub fn pass(name: &str, message: impl Into<String>, took: Duration) -> CheckOutcome {
        CheckOutcome {
            name: name.to_string(),
            ok: true,
            advisory: false,
            message: message.into(),
            latency_ms: took.as_millis() as u64,
        }
    }

    pub fn fail(name: &str, message: impl Into<String>, took: Duration) -> CheckOutcome {
        CheckOutcome {
            ok: false,
            ..CheckOutcome::pass(name, message, took)
        }
    }

    /// Passes or fails by `result`, timed from `started`.
    pub fn of(name: &str, started: Instant, result: Result<String, String>) -> CheckOutcome {
        match result {
            Ok(m) => CheckOutcome::pass(name, m, started.elapsed()),
            Err(m) => CheckOutcome::fail(name, m, started.elapsed()),
        }
    }

    /// Whether it blocks the tenant from becoming active.
    pub fn gates(&self) -> bool {
        !self.ok && !self.advisory
    }
}

/// What a tenant's last smoke tests found, as the state records it for `show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub at: String,
    pub checks: Vec<CheckOutcome>,
}

impl Health {
    /// No gating check failed.
    pub fn healthy(&self) -> bool {
        !self.checks.iter().any(CheckOutcome::gates)
    }

    /// `login: role tenant_acme cannot log in; app: answered 503, expected 200`.
    pub fn failures(&self) -> String {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.message))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// What the state keeps of a tenant's last smoke tests: when, how many passed, and the
/// ones that did not, in full. Passing checks are only counted: a fleet's state carries one
/// of these per tenant, and what passed says nothing a rerun of `check` would not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRecord {
    pub at: String,
    pub passed: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<CheckOutcome>,
}

impl HealthRecord {
    /// No gating check failed.
    pub fn healthy(&self) -> bool {
        !self.failed.iter().any(CheckOutcome::gates)
    }
}

impl Health {
    pub fn record(&self) -> HealthRecord {
        HealthRecord {
            at: self.at.clone(),
            passed: self.checks.iter().filter(|c| c.ok).count(),
            failed: self.checks.iter().filter(|c| !c.ok).cloned().collect(),
        }
    }
}

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

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
pub mod verdicts;

use crate::configured::Targets;
use crate::model::health::{CheckOutcome, Health};
use crate::repo::checks::{CheckSpec, Probe};
use crate::targets::provider::StepContext;

/// Runs every check of one tenant: each target's built-in ones and `declared` (its plan's
/// and the config's, http URLs rendered for it), side by side. Advisory checks are marked
/// so, in declared order after the built-in ones.
pub async fn run(targets: &Targets, ctx: &StepContext<'_>, declared: &[CheckSpec]) -> Health {
    let sql: Vec<&CheckSpec> = declared
        .iter()
        .filter(|c| matches!(c.probe, Probe::Sql { .. }))
        .collect();
    let builtin = futures::future::join_all(
        targets
            .all()
            .filter_map(|p| p.as_smoke())
            .map(|p| p.smoke(ctx, &sql)),
    );
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

//! What smoke tests found: each check's outcome, a tenant's last run of them, and what the
//! state keeps of it. Every target's checks return these (`smoke`), and the state records them.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

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

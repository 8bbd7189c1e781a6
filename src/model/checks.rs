//! A smoke test declared by a plan or the config, once checked: what every target that runs
//! one reads.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A declared check, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSpec {
    pub name: String,
    pub probe: Probe,
    pub timeout_ms: u64,
    /// Reported but never gating: a failure does not hold the tenant back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub advisory: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// A GET of `url` (a template of the tenant's slug, plan and region) answering
    /// `expect_status`.
    Http { url: String, expect_status: u16 },
    /// A query run as the tenant's own role in its slice; its first column must be true.
    Sql { sql: String },
}

impl CheckSpec {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

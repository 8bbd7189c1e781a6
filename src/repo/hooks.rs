//! `hook "name" { … }` blocks of the config: commands run at moments of a tenant's life.
//!
//! ```hcl
//! hook "billing" {
//!   on          = ["provisioned", "plan_changed", "suspended", "resumed", "offboarding", "deprovisioned"]
//!   command     = ["./hooks/billing.sh"]
//!   timeout     = "30s"
//!   gating      = false        # the default: retried apart, never holds the tenant back
//!   env         = { BILLING_API = "https://billing.internal" }
//!   pass_env    = ["BILLING_TOKEN"]
//!   retry_after = "1m"         # the first wait after a failure, doubled each time up to 1h
//! }
//! ```
//!
//! The command line comes from here only; tenant text reaches a hook on stdin (JSON) or as
//! environment values, never among its arguments.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::hcl_file;
use crate::diagnostic::Diagnostic;
pub use crate::model::hook_runs::Moment;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHook {
    on: Vec<String>,
    command: Vec<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    gating: bool,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    pass_env: Vec<String>,
    #[serde(default)]
    retry_after: Option<String>,
}

/// A hook, checked. It travels in the plan, so a saved plan runs the hooks it showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookSpec {
    pub name: String,
    pub on: Vec<Moment>,
    /// The program and its arguments, as the config gives them; a relative program is
    /// found from the repo root.
    pub command: Vec<String>,
    pub timeout_ms: u64,
    /// A failure fails the tenant's step (it stays where it was); otherwise the hook is
    /// retried by later applies and the tenant goes on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gating: bool,
    /// Environment values given as they are.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Environment variables passed on from tenant-reconcile's own environment (a token):
    /// their values are read when the hook runs and are never recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pass_env: Vec<String>,
    /// The first wait after a failure; doubled after each, up to an hour.
    pub retry_after_ms: u64,
}

impl HookSpec {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// How long to wait after the `failures`-th failure in a row.
    pub fn backoff(&self, failures: u32) -> Duration {
        let first = Duration::from_millis(self.retry_after_ms);
        let doubled = first.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
        doubled.min(Duration::from_secs(3600).max(first))
    }
}

/// The hooks of the config, or every problem with them.
pub fn parse(
    spans: &hcl_file::Spans,
    raw: BTreeMap<String, RawHook>,
) -> Result<Vec<HookSpec>, Vec<Diagnostic>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (name, raw) in raw {
        let mut problem = |message: String, field: &str, hint: &str| {
            // A field not written (the block's name) is placed at its block.
            let path = format!("hook.{name}.{field}");
            problems.push(spans.problem(&path, message).hint(hint.to_string()))
        };
        if !crate::slug::check_name(&name) {
            problem(
                format!("{name:?} cannot name a hook"),
                "name",
                "lowercase letters, digits, `-` and `_`",
            );
            continue;
        }
        let mut on = Vec::new();
        for m in &raw.on {
            match Moment::parse(m) {
                Some(m) if !on.contains(&m) => on.push(m),
                Some(_) => {}
                None => problem(
                    format!("{m:?} is not a moment"),
                    "on",
                    &format!(
                        "on can list: {}",
                        Moment::ALL.map(Moment::as_str).join(", ")
                    ),
                ),
            }
        }
        if raw.on.is_empty() {
            problem(
                "a hook runs on at least one moment".into(),
                "on",
                "on = [\"provisioned\"]",
            );
        }
        if raw.command.first().is_none_or(|p| p.is_empty()) {
            problem(
                "command names no program".into(),
                "command",
                "command = [\"./hooks/billing.sh\"], the program and then its arguments",
            );
        }
        let duration = |value: &Option<String>, default: Duration| match value.as_deref() {
            None => Some(default),
            Some(v) => humantime::parse_duration(v)
                .ok()
                .filter(|d| *d <= Duration::from_secs(86_400)),
        };
        let timeout = duration(&raw.timeout, Duration::from_secs(30)).filter(|d| !d.is_zero());
        let retry_after = duration(&raw.retry_after, Duration::from_secs(60));
        if timeout.is_none() {
            problem(
                format!("{:?} is not a timeout", raw.timeout.unwrap_or_default()),
                "timeout",
                "a duration, like \"30s\"",
            );
        }
        if retry_after.is_none() {
            problem(
                format!(
                    "{:?} is not a duration",
                    raw.retry_after.unwrap_or_default()
                ),
                "retry_after",
                "a duration, like \"1m\" (\"0s\" retries on the next apply)",
            );
        }
        for var in raw.env.keys().chain(&raw.pass_env) {
            let plain = !var.is_empty()
                && var
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                && !var.starts_with("TENANT_RECONCILE_");
            if !plain {
                problem(
                    format!("{var:?} cannot name an environment variable of a hook"),
                    "env",
                    "upper-case letters, digits and _, not starting with TENANT_RECONCILE_ (those are the hook's own)",
                );
            }
        }
        let (Some(timeout), Some(retry_after)) = (timeout, retry_after) else {
            continue;
        };
        out.push(HookSpec {
            name,
            on,
            command: raw.command,
            timeout_ms: timeout.as_millis() as u64,
            gating: raw.gating,
            env: raw.env,
            pass_env: raw.pass_env,
            retry_after_ms: retry_after.as_millis() as u64,
        });
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let h = HookSpec {
            name: "b".into(),
            on: vec![Moment::Provisioned],
            command: vec!["x".into()],
            timeout_ms: 1000,
            gating: false,
            env: BTreeMap::new(),
            pass_env: Vec::new(),
            retry_after_ms: 60_000,
        };
        assert_eq!(h.backoff(1), Duration::from_secs(60));
        assert_eq!(h.backoff(2), Duration::from_secs(120));
        assert_eq!(h.backoff(30), Duration::from_secs(3600));
    }
}

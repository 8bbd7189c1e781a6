//! The `rollout { wave "name" { … } }` block of the config: how a change to the inputs
//! tenants share goes out, wave after wave, in the order the waves are written.
//!
//! ```hcl
//! rollout {
//!   wave "canary" {
//!     tenants      = ["acme", "*-staging"]   # slug patterns; or labels, or servers
//!     max_parallel = 2                       # tenants mid-change at once
//!     bake         = "30m"                   # time after the wave, before the next
//!     max_failures = 0                       # more failures than this halt ("1%" too)
//!   }
//!   wave "ten-percent" {
//!     percent      = 10                      # a tenth of the tenants the change reaches
//!     max_parallel = 10
//!     bake         = "30m"
//!     max_failures = "1%"
//!   }
//!   wave "rest" {                            # the last wave takes every tenant left
//!     max_parallel = 50
//!   }
//! }
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use super::hcl_file::Spans;
use crate::diagnostic::Diagnostic;
use crate::model::rollout::FailureLimit;

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    #[serde(default)]
    wave: BTreeMap<String, RawWave>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWave {
    /// Slug patterns (`*` for any characters): the tenants that match go in this wave.
    #[serde(default)]
    tenants: Option<Vec<String>>,
    /// Labels a tenant's file must all have for it to go in this wave.
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    /// Postgres servers (by name) whose tenants go in this wave.
    #[serde(default)]
    servers: Option<Vec<String>>,
    /// This share, in percent, of the tenants the change reaches (rounded up).
    #[serde(default)]
    percent: Option<f64>,
    #[serde(default = "default_max_parallel")]
    max_parallel: usize,
    #[serde(default)]
    bake: Option<String>,
    #[serde(default)]
    max_failures: Option<serde_json::Value>,
}

fn default_max_parallel() -> usize {
    10
}

/// A rollout policy: its waves, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub waves: Vec<WavePolicy>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WavePolicy {
    pub name: String,
    pub select: Select,
    pub max_parallel: usize,
    pub bake: std::time::Duration,
    pub max_failures: FailureLimit,
}

/// Which tenants a wave takes, of those no earlier wave took.
#[derive(Debug, Clone, PartialEq)]
pub enum Select {
    /// Those that match every selector given.
    Matching {
        tenants: Option<Vec<String>>,
        labels: Option<BTreeMap<String, String>>,
        servers: Option<Vec<String>>,
    },
    /// This share of the rollout's tenants, in percent.
    Percent(f64),
    /// Every tenant left.
    Rest,
}

impl Select {
    pub fn describe(&self) -> String {
        match self {
            Select::Matching {
                tenants,
                labels,
                servers,
            } => {
                let mut parts = Vec::new();
                if let Some(t) = tenants {
                    parts.push(t.join(", "));
                }
                if let Some(l) = labels {
                    let l: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    parts.push(l.join(", "));
                }
                if let Some(s) = servers {
                    parts.push(format!("on {}", s.join(", ")));
                }
                parts.join("; ")
            }
            Select::Percent(p) => format!("{p} %"),
            Select::Rest => "the rest".to_string(),
        }
    }
}

/// The policy of a `rollout` block, or every problem with it (file, line, field).
pub fn parse(spans: &Spans, raw: RawRollout) -> Result<Policy, Vec<Diagnostic>> {
    let mut problems = Vec::new();
    let mut written: Vec<(String, RawWave)> = raw.wave.into_iter().collect();
    // In the order they are written: a map of blocks reads them by name.
    written.sort_by_key(|(name, _)| spans.at(&format!("rollout.wave.{name}")));
    if written.is_empty() {
        problems.push(
            spans
                .problem("rollout", "a rollout block needs at least one wave")
                .hint("add wave \"all\" { max_parallel = 10 }, or take the block out"),
        );
    }
    let count = written.len();
    let mut waves = Vec::new();
    for (at, (name, raw)) in written.into_iter().enumerate() {
        let path = |field: &str| match field {
            "" => format!("rollout.wave.{name}"),
            f => format!("rollout.wave.{name}.{f}"),
        };
        let problem = |field: &str, message: String, hint: &str| {
            spans.problem(&path(field), message).hint(hint.to_string())
        };
        if !crate::slug::check_name(&name) {
            problems.push(problem(
                "",
                format!("{name:?} is not a wave name"),
                "use lowercase letters, digits and '-'",
            ));
        }
        let matching = raw.tenants.is_some() || raw.labels.is_some() || raw.servers.is_some();
        let select = match (matching, raw.percent) {
            (true, Some(_)) => {
                problems.push(problem(
                    "percent",
                    "a wave takes tenants by percent or by what they match, not both".into(),
                    "split it into two waves",
                ));
                Select::Rest
            }
            (false, Some(p)) if !(p > 0.0 && p < 100.0) => {
                problems.push(problem(
                    "percent",
                    format!("{p} is not a share of the tenants"),
                    "use a number above 0 and below 100; the last wave takes the rest",
                ));
                Select::Rest
            }
            (false, Some(p)) => Select::Percent(p),
            (true, None) => Select::Matching {
                tenants: raw.tenants.clone(),
                labels: raw.labels.clone(),
                servers: raw.servers.clone(),
            },
            (false, None) => Select::Rest,
        };
        if let Some(patterns) = &raw.tenants {
            for (i, pattern) in patterns.iter().enumerate() {
                if let Err(e) = globset::Glob::new(pattern) {
                    problems.push(
                        spans
                            .problem(
                                &format!("{}[{i}]", path("tenants")),
                                format!("{pattern:?} is not a slug pattern: {}", e.kind()),
                            )
                            .hint("use slugs, with * for any characters (\"eu-*\")".to_string()),
                    );
                }
            }
        }
        let last = at + 1 == count;
        if last && select != Select::Rest {
            problems.push(problem(
                "",
                format!("the last wave ({name}) takes the rest of the tenants"),
                "leave tenants, labels, servers and percent out of the last wave, or add a wave after it",
            ));
        }
        if !last && select == Select::Rest {
            problems.push(problem(
                "",
                format!(
                    "wave {name} takes every tenant left, so the waves after it would have none"
                ),
                "give it tenants, labels, servers or percent, or make it the last wave",
            ));
        }
        if raw.max_parallel == 0 {
            problems.push(problem(
                "max_parallel",
                "0 tenants at once would never apply any".into(),
                "use 1 or more",
            ));
        }
        let bake = match raw.bake.as_deref().map(humantime::parse_duration) {
            None => std::time::Duration::ZERO,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                problems.push(problem(
                    "bake",
                    format!(
                        "{:?} is not a duration: {e}",
                        raw.bake.as_deref().unwrap_or_default()
                    ),
                    "write it like \"30m\", \"2h\" or \"0s\"",
                ));
                std::time::Duration::ZERO
            }
        };
        let max_failures = match failure_limit(raw.max_failures.as_ref()) {
            Ok(l) => l,
            Err(message) => {
                problems.push(problem(
                    "max_failures",
                    message,
                    "write a count (0 halts on the first failure) or a share like \"1%\"",
                ));
                FailureLimit::Count(0)
            }
        };
        waves.push(WavePolicy {
            name,
            select,
            max_parallel: raw.max_parallel,
            bake,
            max_failures,
        });
    }
    match problems.is_empty() {
        true => Ok(Policy { waves }),
        false => Err(problems),
    }
}

/// `max_failures` as written: a count, or a share in percent (`"1%"`). Left out, any
/// failure halts.
fn failure_limit(raw: Option<&serde_json::Value>) -> Result<FailureLimit, String> {
    use serde_json::Value;
    match raw {
        None => Ok(FailureLimit::Count(0)),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(FailureLimit::Count)
            .ok_or_else(|| format!("{n} is not a count of tenants")),
        Some(Value::String(s)) => s
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<f64>().ok())
            .filter(|p| (0.0..100.0).contains(p))
            .map(FailureLimit::Percent)
            .ok_or_else(|| format!("{s:?} is not a count or a share in percent")),
        Some(other) => Err(format!("{other} is not a count or a share in percent")),
    }
}

/// Whether `slug` matches one of `patterns` (`*` for any characters).
pub fn matches_any(patterns: &[String], slug: &str) -> bool {
    let mut set = globset::GlobSetBuilder::new();
    for p in patterns {
        if let Ok(g) = globset::Glob::new(p) {
            set.add(g);
        }
    }
    set.build().is_ok_and(|s| s.is_match(slug))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        rollout: RawRollout,
    }

    fn policy(source: &str) -> Result<Policy, Vec<Diagnostic>> {
        let (file, spans): (File, _) =
            crate::repo::hcl_file::parse("tenant-reconcile.hcl", source)?;
        parse(&spans, file.rollout)
    }

    #[test]
    fn waves_keep_the_order_they_are_written_in() {
        let p = policy(
            r#"
rollout {
  wave "canary" {
    tenants      = ["acme", "z-*"]
    max_parallel = 2
    bake         = "30m"
  }
  wave "a-tenth" {
    percent      = 10
    max_failures = "1%"
  }
  wave "rest" {}
}
"#,
        )
        .unwrap();
        let names: Vec<&str> = p.waves.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["canary", "a-tenth", "rest"]);
        assert_eq!(p.waves[0].bake, std::time::Duration::from_secs(1800));
        assert_eq!(p.waves[0].max_failures, FailureLimit::Count(0));
        assert_eq!(p.waves[1].max_failures, FailureLimit::Percent(1.0));
        assert_eq!(p.waves[1].select, Select::Percent(10.0));
        assert_eq!(p.waves[2].select, Select::Rest);
        assert_eq!(p.waves[2].max_parallel, 10);
    }

    #[test]
    fn a_wrong_wave_is_named_by_file_line_and_field() {
        let problems = policy(
            r#"
rollout {
  wave "canary" {
    percent      = 150
    bake         = "soon"
    max_failures = "lots"
  }
  wave "rest" {
    tenants = ["a["]
  }
}
"#,
        )
        .unwrap_err();
        let said: Vec<String> = problems
            .iter()
            .map(|p| {
                format!(
                    "{}:{} {}",
                    p.line,
                    p.field.clone().unwrap_or_default(),
                    p.message
                )
            })
            .collect();
        let said = said.join("\n");
        for field in [
            "rollout.wave.canary.percent",
            "rollout.wave.canary.bake",
            "rollout.wave.canary.max_failures",
            "rollout.wave.rest.tenants[0]",
            "rollout.wave.rest",
        ] {
            assert!(said.contains(field), "{field} in:\n{said}");
        }
        assert!(said.contains("4:rollout.wave.canary.percent"), "{said}");
    }

    #[test]
    fn slug_patterns_match_as_globs() {
        let patterns = vec!["acme".to_string(), "eu-*".to_string()];
        assert!(matches_any(&patterns, "acme"));
        assert!(matches_any(&patterns, "eu-west"));
        assert!(!matches_any(&patterns, "acme-2"));
    }
}

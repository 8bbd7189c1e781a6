//! `plans/<plan>.hcl`: a tier's quotas, feature flags, default isolation and retention.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::hcl_file;
use crate::diagnostic::Diagnostic;
use crate::model::tenant::{Isolation, DEFAULT_ERASURE_EXPORT_DAYS};
use crate::slug;
use crate::targets::buckets::{BucketPlan, STORAGE_CLASSES};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    #[serde(default)]
    description: Option<String>,
    isolation: Isolation,
    retention_days: u32,
    #[serde(default)]
    erasure_export_days: Option<u32>,
    #[serde(default)]
    quotas: BTreeMap<String, u64>,
    #[serde(default)]
    features: BTreeMap<String, bool>,
    #[serde(default)]
    bucket: BucketPlan,
    #[serde(default)]
    check: BTreeMap<String, super::checks::RawCheck>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    server_labels: BTreeMap<String, String>,
    #[serde(default)]
    rollout: Option<super::rollout_policy::RawRollout>,
}

/// The `limits` block of a plan: the most a tenant's file on the tier may ask for. Each is
/// optional; what is not named is not capped.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// The strongest isolation a tenant may ask for (`shared` < `schema` < `database`).
    #[serde(default)]
    pub isolation: Option<Isolation>,
    /// The highest value a tenant may set each quota to.
    #[serde(default)]
    pub quotas: BTreeMap<String, u64>,
    /// `false` for a flag a tenant may not turn on.
    #[serde(default)]
    pub features: BTreeMap<String, bool>,
}

/// A tier: what every tenant on it gets unless its file overrides a declared flag or quota.
#[derive(Debug, Clone)]
pub struct TierPlan {
    pub name: String,
    pub description: Option<String>,
    pub isolation: Isolation,
    /// Days a deprovisioned tenant's data is held before it may be purged.
    pub retention_days: u32,
    /// Days an erasure's export is kept after the purge, for the customer to collect; the
    /// first apply after that removes it. An erasure is the customer asking for its data to
    /// be gone, so its one remaining copy has an end too.
    pub erasure_export_days: u32,
    pub quotas: BTreeMap<String, u64>,
    pub features: BTreeMap<String, bool>,
    pub bucket: BucketPlan,
    /// The smoke tests this tier's tenants get besides the built-in ones and the config's.
    pub checks: Vec<super::checks::CheckSpec>,
    /// The most a tenant's file may ask for beyond these defaults.
    pub limits: Limits,
    /// Labels the Postgres server of this tier's tenants must carry, when the config names
    /// several (`server_labels = { tier = "dedicated" }`).
    pub server_labels: BTreeMap<String, String>,
    /// How a change that reaches this tier's tenants alone (an edit of this file) goes out,
    /// in place of the config's rollout block.
    pub rollout: Option<super::rollout_policy::Policy>,
    pub file: String,
    pub source: String,
}

pub fn parse(file: &str, stem: &str, source: &str) -> Result<TierPlan, Vec<Diagnostic>> {
    if !slug::check_name(stem) {
        return Err(vec![Diagnostic::new(
            file,
            format!("{stem:?} is not a valid plan name"),
        )
        .hint(
            "plan files are named with lowercase letters, digits, `-` and `_`",
        )]);
    }
    let (raw, spans): (RawPlan, _) = hcl_file::parse(file, source)?;
    let mut problems = Vec::new();
    let checks = super::checks::parse(&spans, raw.check.clone()).unwrap_or_else(|p| {
        problems.extend(p);
        Vec::new()
    });
    let names = raw
        .quotas
        .keys()
        .map(|n| ("quotas", n))
        .chain(raw.features.keys().map(|n| ("features", n)));
    for (group, name) in names {
        if !slug::check_name(name) {
            problems.push(
                spans
                    .problem(
                        &format!("{group}.{name}"),
                        format!("{name:?} is not a valid flag or quota name"),
                    )
                    .hint("use lowercase letters, digits and `_`"),
            );
        }
    }
    // A quota is stored as a signed 64-bit integer, as a tenant file's override is read.
    for (group, quotas) in [
        ("quotas", &raw.quotas),
        ("limits.quotas", &raw.limits.quotas),
    ] {
        for (name, value) in quotas {
            if i64::try_from(*value).is_err() {
                problems.push(spans.problem(
                    &format!("{group}.{name}"),
                    format!("{value} is larger than the largest quota, {}", i64::MAX),
                ));
            }
        }
    }
    for (i, t) in raw.bucket.transitions.iter().enumerate() {
        if !STORAGE_CLASSES.contains(&t.storage_class.as_str()) {
            problems.push(
                spans
                    .problem(
                        &format!("bucket.transitions[{i}].storage_class"),
                        format!("unknown storage class {:?}", t.storage_class),
                    )
                    .hint(format!(
                        "storage_class can be: {}",
                        STORAGE_CLASSES.join(", ")
                    )),
            );
        }
    }
    let mut seen = Vec::new();
    for (i, t) in raw.bucket.transitions.iter().enumerate() {
        // S3 refuses infrequent-access transitions younger than 30 days, and two rules alike.
        let too_soon =
            matches!(t.storage_class.as_str(), "STANDARD_IA" | "ONEZONE_IA") && t.days < 30;
        let twice = seen.contains(&(&t.storage_class, t.days));
        seen.push((&t.storage_class, t.days));
        if too_soon || twice {
            problems.push(
                spans
                    .problem(
                        &format!("bucket.transitions[{i}]"),
                        if too_soon {
                            format!(
                                "S3 moves objects to {} after 30 days at the earliest, not {}",
                                t.storage_class, t.days
                            )
                        } else {
                            format!(
                                "the transition to {} after {} days is listed twice",
                                t.storage_class, t.days
                            )
                        },
                    )
                    .hint("each transition once; STANDARD_IA and ONEZONE_IA from 30 days"),
            );
        }
    }
    let zero_days = (raw.bucket.noncurrent_version_expiration_days == Some(0))
        .then(|| "bucket.noncurrent_version_expiration_days".to_string())
        .or_else(|| {
            (raw.bucket.transitions.iter())
                .position(|t| t.days == 0)
                .map(|i| format!("bucket.transitions[{i}].days"))
        });
    if let Some(path) = zero_days {
        problems.push(
            spans
                .problem(&path, "lifecycle days must be at least 1")
                .hint("S3 counts lifecycle ages in whole days from 1"),
        );
    }
    problems.extend(check_limits(file, &spans, &raw));
    let rollout = match raw
        .rollout
        .clone()
        .map(|r| super::rollout_policy::parse(&spans, r))
    {
        Some(Ok(p)) => Some(p),
        Some(Err(p)) => {
            problems.extend(p);
            None
        }
        None => None,
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(TierPlan {
        name: stem.to_string(),
        description: raw.description,
        isolation: raw.isolation,
        retention_days: raw.retention_days,
        erasure_export_days: raw
            .erasure_export_days
            .unwrap_or(DEFAULT_ERASURE_EXPORT_DAYS),
        quotas: raw.quotas,
        features: raw.features,
        bucket: raw.bucket,
        checks,
        limits: raw.limits,
        server_labels: raw.server_labels,
        rollout,
        file: file.to_string(),
        source: source.to_string(),
    })
}

/// A limit names what the plan declares, and is no lower than what the plan itself gives:
/// a cap under the default would refuse every tenant on the tier its own plan.
fn check_limits(file: &str, spans: &hcl_file::Spans, raw: &RawPlan) -> Vec<Diagnostic> {
    let limits = &raw.limits;
    let mut out = Vec::new();
    let at = |path: &str| spans.at(path);
    if let Some(max) = limits.isolation {
        if max < raw.isolation {
            let (line, col) = at("limits.isolation");
            out.push(
                Diagnostic::new(
                    file,
                    format!(
                        "limits.isolation {:?} is below the plan's own isolation {:?}",
                        max.as_str(),
                        raw.isolation.as_str()
                    ),
                )
                .at(line, col)
                .field("limits.isolation")
                .hint("a limit caps what a tenant's file may ask for beyond the plan: shared < schema < database"),
            );
        }
    }
    for (quota, max) in &limits.quotas {
        let (line, col) = at(&format!("limits.quotas.{quota}"));
        let field = format!("limits.quotas.{quota}");
        match raw.quotas.get(quota) {
            None => out.push(
                Diagnostic::new(
                    file,
                    format!("the plan declares no quota {quota:?} to limit"),
                )
                .at(line, col)
                .field(field)
                .hint(format!("quotas declared here: {}", names(&raw.quotas))),
            ),
            Some(default) if max < default => out.push(
                Diagnostic::new(
                    file,
                    format!("limit {max} is below the plan's own {quota} = {default}"),
                )
                .at(line, col)
                .field(field)
                .hint("a limit caps what a tenant's file may ask for beyond the plan"),
            ),
            Some(_) => {}
        }
    }
    for (flag, allowed) in &limits.features {
        let (line, col) = at(&format!("limits.features.{flag}"));
        let field = format!("limits.features.{flag}");
        match raw.features.get(flag) {
            None => out.push(
                Diagnostic::new(
                    file,
                    format!("the plan declares no feature flag {flag:?} to limit"),
                )
                .at(line, col)
                .field(field)
                .hint(format!("flags declared here: {}", names(&raw.features))),
            ),
            Some(true) if !allowed => out.push(
                Diagnostic::new(
                    file,
                    format!("the plan turns {flag} on for every tenant, so it cannot be limited to off"),
                )
                .at(line, col)
                .field(field)
                .hint("`false` in limits.features keeps a flag the plan leaves off from being turned on"),
            ),
            Some(_) => {}
        }
    }
    out
}

fn names<V>(m: &BTreeMap<String, V>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_plan() {
        let src = r#"
description    = "Growth"
isolation      = "schema"
retention_days = 30
quotas = {
  seats = 25
}
features = {
  sso = false
}
"#;
        let p = parse("plans/growth.hcl", "growth", src).unwrap();
        assert_eq!(p.isolation, Isolation::Schema);
        assert_eq!(p.quotas["seats"], 25);
        assert!(!p.features["sso"]);
    }

    #[test]
    fn parses_a_bucket_block() {
        let src = r#"
isolation      = "schema"
retention_days = 30
bucket {
  versioning = true
  noncurrent_version_expiration_days = 30
  transitions = [{ days = 90, storage_class = "GLACIER_IR" }]
}
"#;
        let p = parse("plans/growth.hcl", "growth", src).unwrap();
        assert!(p.bucket.versioning);
        assert_eq!(p.bucket.noncurrent_version_expiration_days, Some(30));
        assert_eq!(p.bucket.transitions[0].storage_class, "GLACIER_IR");
        let bad = src.replace("GLACIER_IR", "COLD");
        let e = parse("plans/growth.hcl", "growth", &bad).unwrap_err();
        assert_eq!(
            e[0].field.as_deref(),
            Some("bucket.transitions[0].storage_class")
        );
        assert_eq!(e[0].line, 7);
        let early = src.replace(
            "days = 90, storage_class = \"GLACIER_IR\"",
            "days = 10, storage_class = \"STANDARD_IA\"",
        );
        let e = parse("plans/growth.hcl", "growth", &early).unwrap_err();
        assert!(
            e[0].message.contains("after 30 days at the earliest"),
            "{}",
            e[0].message
        );
    }

    #[test]
    fn limits_name_what_the_plan_declares_and_are_not_below_it() {
        let src = r#"isolation      = "schema"
retention_days = 30
quotas = {
  seats = 5
}
features = {
  sso = false
}
limits {
  isolation = "database"
  quotas = {
    seats = 20
  }
  features = {
    sso = false
  }
}
"#;
        let p = parse("plans/x.hcl", "x", src).unwrap();
        assert_eq!(p.limits.quotas["seats"], 20);
        assert_eq!(p.limits.isolation, Some(Isolation::Database));
        let low = src.replace("seats = 20", "seats = 4");
        let e = parse("plans/x.hcl", "x", &low).unwrap_err();
        assert_eq!(e[0].field.as_deref(), Some("limits.quotas.seats"));
        assert_eq!(e[0].line, 12, "{:?}", e[0]);
        let unknown = src.replace("seats = 20", "sets = 20");
        let e = parse("plans/x.hcl", "x", &unknown).unwrap_err();
        assert_eq!(e[0].field.as_deref(), Some("limits.quotas.sets"));
        let weaker = src.replace("isolation = \"database\"", "isolation = \"shared\"");
        let e = parse("plans/x.hcl", "x", &weaker).unwrap_err();
        assert_eq!(e[0].field.as_deref(), Some("limits.isolation"));
        assert_eq!(e[0].line, 10, "{:?}", e[0]);
    }

    #[test]
    fn a_quota_too_large_to_store_is_refused_at_its_line() {
        let src = "isolation = \"schema\"\nretention_days = 1\nquotas = {\n  seats = 9223372036854775808\n}\n";
        let e = parse("plans/x.hcl", "x", src).unwrap_err();
        assert_eq!(e[0].field.as_deref(), Some("quotas.seats"), "{:?}", e[0]);
        assert_eq!(e[0].line, 4);
        let largest = src.replace("9223372036854775808", "9223372036854775807");
        assert!(parse("plans/x.hcl", "x", &largest).is_ok());
    }

    #[test]
    fn unknown_attribute_points_at_its_line() {
        let src = "isolation = \"schema\"\nretention_days = 1\ncolour = \"red\"\n";
        let e = parse("plans/x.hcl", "x", src).unwrap_err();
        assert_eq!(e[0].field.as_deref(), Some("colour"), "{:?}", e[0]);
        assert_eq!(e[0].line, 3);
    }

    #[test]
    fn syntax_error_has_a_position() {
        let e = parse("plans/x.hcl", "x", "isolation = \n = 3").unwrap_err();
        assert!(e[0].message.starts_with("syntax error"));
        assert!(e[0].line >= 1);
    }
}

//! `plans/<plan>.hcl`: a tier's quotas, feature flags, default isolation and retention.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::hcl_file;
use super::tenant_file::Isolation;
use crate::diagnostic::Diagnostic;
use crate::slug;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    #[serde(default)]
    description: Option<String>,
    isolation: Isolation,
    retention_days: u32,
    #[serde(default)]
    quotas: BTreeMap<String, u64>,
    #[serde(default)]
    features: BTreeMap<String, bool>,
}

/// A tier: what every tenant on it gets unless its file overrides a declared flag or quota.
#[derive(Debug, Clone)]
pub struct TierPlan {
    pub name: String,
    pub description: Option<String>,
    pub isolation: Isolation,
    /// Days a deprovisioned tenant's data is held before it may be purged.
    pub retention_days: u32,
    pub quotas: BTreeMap<String, u64>,
    pub features: BTreeMap<String, bool>,
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
    let raw: RawPlan = hcl_file::parse(file, source).map_err(|d| vec![d])?;
    let mut problems = Vec::new();
    for name in raw.quotas.keys().chain(raw.features.keys()) {
        if !slug::check_name(name) {
            let (line, col) = hcl_file::locate_key(source, name).unwrap_or((1, 1));
            problems.push(
                Diagnostic::new(file, format!("{name:?} is not a valid flag or quota name"))
                    .at(line, col)
                    .field(name.clone())
                    .hint("use lowercase letters, digits and `_`"),
            );
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(TierPlan {
        name: stem.to_string(),
        description: raw.description,
        isolation: raw.isolation,
        retention_days: raw.retention_days,
        quotas: raw.quotas,
        features: raw.features,
        file: file.to_string(),
        source: source.to_string(),
    })
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

//! What a tenant's bucket should be: its name and the settings its plan asks for, as the
//! attributes every bucket target compares and reports field by field.
//!
//! The attributes are words, not API shapes, so a plan reads
//! `versioning: "off" → "enabled"` and a bucket target turns them into calls.

pub mod local;
pub mod s3;

use serde::Deserialize;
use serde_json::{json, Value};

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::clients::s3::S3Config;
use crate::diagnostic::Diagnostic;
use crate::model::attrs::{attrs, Attrs};
use crate::model::kind::{not_counted, KindFacts};
use crate::model::resource::Kind;
use crate::model::tenant::{Status, TenantSpec};
use crate::repo::hcl_file::{block_problem, Spans};
use crate::targets::provider::Provider;

/// The tag every bucket carries so people (and cleanup scripts) can tell who owns it.
pub const MANAGED_BY: &str = "tenant-reconcile";

/// `public_access` when all four public-access-block switches are on.
pub const PUBLIC_ACCESS_BLOCKED: &str = "blocked";
/// `access` of an active tenant, and of a suspended one whose deny policy is in place.
pub const ACCESS_OPEN: &str = "open";
pub const ACCESS_DENIED: &str = "denied";
/// `versioning` of a bucket that never had it, or had it suspended.
pub const VERSIONING_OFF: &str = "off";
pub const VERSIONING_ON: &str = "enabled";

/// The `bucket` block of a plan: how each tenant's bucket on the tier is kept.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketPlan {
    /// Keep every version of every object (a bucket once versioned can only be suspended).
    #[serde(default)]
    pub versioning: bool,
    /// Old versions of overwritten or deleted objects are removed after this many days.
    #[serde(default)]
    pub noncurrent_version_expiration_days: Option<u32>,
    /// Objects move to cheaper storage classes as they age.
    #[serde(default)]
    pub transitions: Vec<Transition>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    pub days: u32,
    pub storage_class: String,
}

/// The storage classes a lifecycle transition may move objects to.
pub const STORAGE_CLASSES: &[&str] = &[
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
];

/// Whether a change to `field` makes it another bucket: buckets cannot be renamed or moved,
/// so a new name or region is a replace (and the old bucket is kept with its objects).
pub fn forces_replace(field: &str) -> bool {
    field == "name" || field == "location"
}

/// The bucket a tenant gets on the bucket target named `target` (`targets.buckets`).
pub fn name(target: &str, s3: &S3Config, spec: &TenantSpec) -> String {
    if target == "s3" {
        s3.bucket_for(spec.slug.as_str(), &spec.region)
    } else {
        // A folder under the local target: the slug is already a safe file name.
        spec.slug.to_string()
    }
}

/// What `targets.buckets` can be set to; `local` is the default.
pub const IMPLEMENTATIONS: &[&str] = &["local", "s3"];

/// The bucket target `implementation` names (one of [`IMPLEMENTATIONS`]): S3 through
/// `store`, or folders under the local target's.
pub fn target(
    implementation: &str,
    store: &Arc<s3::S3Store>,
    local_dir: &Path,
) -> Arc<dyn Provider> {
    match implementation {
        "s3" => Arc::new(s3::S3Buckets::new(store.clone())),
        _ => Arc::new(local::LocalBuckets::new(local_dir.join("buckets"))),
    }
}

/// What is wrong with how the `s3` block names buckets (`bucket_name`, `bucket_prefix`),
/// each problem where it is written.
pub fn check_naming(spans: &Spans, s3: &S3Config) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    let mut problem = |key: &str, message: String, hint: &str| {
        problems.push(block_problem(spans, "s3", key, message, hint));
    };
    let unknown: Vec<&str> = s3
        .bucket_name
        .split('{')
        .skip(1)
        .filter_map(|p| p.split_once('}').map(|(name, _)| name))
        .filter(|name| !["prefix", "slug", "region"].contains(name))
        .collect();
    if !unknown.is_empty() {
        problem(
            "bucket_name",
            format!("unknown placeholder {{{}}} in the bucket name", unknown[0]),
            "bucket_name can use {prefix}, {slug} and {region}",
        );
    } else if !s3.bucket_name.contains("{slug}") {
        problem(
            "bucket_name",
            "the bucket name must contain {slug}".into(),
            "without the slug every tenant would get the same bucket",
        );
    } else if s3.tenant_regions && !s3.bucket_name.contains("{region}") {
        problem(
            "bucket_name",
            "with tenant_regions = true the bucket name must contain {region}".into(),
            "a bucket cannot move: a tenant moving region gets a new bucket, which needs a new name (or set tenant_regions = false)",
        );
    }
    if s3
        .bucket_prefix
        .chars()
        .any(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '.'))
    {
        problem(
            "bucket_prefix",
            format!("{:?} cannot be part of a bucket name", s3.bucket_prefix),
            "use lower-case letters, digits, `-` and `.`",
        );
    }
    problems
}

/// Bucket names come from a pattern, a slug and a region, so they are checked before any
/// call: each against S3's rules, and all of them against each other.
pub fn check_tenants(target: &str, s3: &S3Config, tenants: &[TenantSpec]) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    if target != "s3" {
        return problems;
    }
    let mut seen: HashMap<String, &TenantSpec> = HashMap::new();
    for t in tenants {
        let name = name(target, s3, t);
        if let Err(why) = check_name(&name) {
            problems.push(
                Diagnostic::new(&t.file, format!("the bucket name {name:?} {why}"))
                    .locate(&t.source, "slug")
                    .hint("the name comes from bucket_name in the s3 block of tenant-reconcile.hcl; shorten the slug or change the pattern or prefix"),
            );
        } else if let Some(other) = seen.insert(name.clone(), t) {
            problems.push(
                Diagnostic::new(&t.file, format!("the bucket name {name:?} is also {}'s", other.slug))
                    .locate(&t.source, "slug")
                    .hint("two tenants cannot share a bucket: change bucket_name so the slug and region cannot run together"),
            );
        }
    }
    problems
}

/// Where the bucket lives: its tenant's region, or the store's one region.
pub fn location(s3: &S3Config, spec: &TenantSpec) -> String {
    if s3.tenant_regions {
        spec.region.clone()
    } else {
        s3.region.clone().unwrap_or_default()
    }
}

/// The encryption a bucket is asked for, as refresh reads it back.
pub fn encryption(s3: &S3Config) -> String {
    match (&*s3.encryption, &s3.kms_key_id) {
        ("aws:kms", Some(key)) => format!("aws:kms {key}"),
        (other, _) => other.to_string(),
    }
}

/// A plan's lifecycle rules as sentences, sorted, the way refresh describes live rules.
pub fn lifecycle(plan: &BucketPlan) -> Vec<String> {
    let mut rules = Vec::new();
    if let Some(days) = plan.noncurrent_version_expiration_days {
        rules.push(expire_noncurrent(days));
    }
    for t in &plan.transitions {
        rules.push(transition(t.days, &t.storage_class));
    }
    rules.sort();
    rules
}

pub fn expire_noncurrent(days: u32) -> String {
    format!("expire noncurrent versions after {days} days")
}

pub fn transition(days: u32, class: &str) -> String {
    format!("move objects to {class} after {days} days")
}

/// A lifecycle sentence read back into the rule it stands for.
#[derive(Debug, PartialEq)]
pub enum Rule {
    ExpireNoncurrent { days: u32 },
    Transition { days: u32, class: String },
}

pub fn parse_rule(sentence: &str) -> Option<Rule> {
    if let Some(rest) = sentence.strip_prefix("expire noncurrent versions after ") {
        let days = rest.strip_suffix(" days")?.parse().ok()?;
        return Some(Rule::ExpireNoncurrent { days });
    }
    let rest = sentence.strip_prefix("move objects to ")?;
    let (class, days) = rest.split_once(" after ")?;
    let days = days.strip_suffix(" days")?.parse().ok()?;
    Some(Rule::Transition {
        days,
        class: class.to_string(),
    })
}

/// The tag that marks a bucket as one state's (`Mark::text`): which state, by name and
/// lineage. Not compared as a setting; refresh reads it as the bucket's owner.
pub const STATE_TAG: &str = "tenant-reconcile-state";

/// The tag keys this tool owns; tags others put on a bucket (cost allocation, backup
/// policies) are neither compared nor removed.
pub const TAG_KEYS: &[&str] = &["managed-by", "plan", "tenant"];

/// The tags a bucket carries.
pub fn tags(slug: &str, plan: &str) -> Value {
    json!({ "managed-by": MANAGED_BY, "plan": plan, "tenant": slug })
}

/// Every attribute of a tenant's bucket.
pub fn desired(target: &str, s3: &S3Config, spec: &TenantSpec, plan: &BucketPlan) -> Attrs {
    let access = match spec.status {
        Status::Suspended | Status::Deprovisioned => ACCESS_DENIED,
        Status::Active => ACCESS_OPEN,
    };
    let mut attrs = attrs([
        ("name", json!(name(target, s3, spec))),
        ("encryption", json!(encryption(s3))),
        ("public_access", json!(PUBLIC_ACCESS_BLOCKED)),
        (
            "versioning",
            json!(if plan.versioning {
                VERSIONING_ON
            } else {
                VERSIONING_OFF
            }),
        ),
        ("lifecycle", json!(lifecycle(plan))),
        ("tags", tags(spec.slug.as_str(), &spec.plan)),
        ("access", json!(access)),
    ]);
    // Only S3 buckets live somewhere; on a store with one region (tenant_regions = false)
    // there is nothing to compare.
    if target == "s3" && s3.tenant_regions {
        attrs.insert("location", json!(location(s3, spec)));
    }
    attrs
}

/// Checks a bucket name against S3's naming rules for general purpose buckets, so a bad
/// name is found by `validate` and not half-way through an apply.
pub fn check_name(name: &str) -> Result<(), String> {
    if !(3..=63).contains(&name.len()) {
        return Err(format!(
            "is {} characters; S3 bucket names are 3 to 63",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '.'))
    {
        return Err(format!(
            "holds {c:?}; S3 bucket names use only a-z, 0-9, `-` and `.`"
        ));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        return Err("must start and end with a letter or digit".into());
    }
    if name.contains("..") {
        return Err("holds two dots in a row".into());
    }
    if name.split('.').count() == 4 && name.split('.').all(|p| p.parse::<u8>().is_ok()) {
        return Err("has the form of an IP address".into());
    }
    for prefix in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(prefix) {
            return Err(format!("starts with {prefix:?}, which S3 reserves"));
        }
    }
    for suffix in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
        if name.ends_with(suffix) {
            return Err(format!("ends with {suffix:?}, which S3 reserves"));
        }
    }
    Ok(())
}

/// A tenant's bucket.
const BUCKET: KindFacts = KindFacts {
    resource_of: Some(|a| format!("bucket {}", a.str("name"))),
    holds_of: Some(not_counted),
    purge_turn: Some(4),
    rebuilt_empty: true,
    used_through: true,
    located: true,
    ..KindFacts::plain(Kind::BUCKET, "bucket")
};
inventory::submit!(BUCKET);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_s3_rules() {
        for good in ["abc", "tenant-acme-eu-west-1", "a.b-c", &"a".repeat(63)] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("ab", "3 to 63"),
            (&"a".repeat(64) as &str, "3 to 63"),
            ("Tenant-acme", "'T'"),
            ("tenant_acme", "'_'"),
            ("-acme", "start and end"),
            ("acme-", "start and end"),
            ("acme..x", "two dots"),
            ("192.168.5.4", "IP address"),
            ("xn--acme", "\"xn--\""),
            ("sthree-acme", "\"sthree-\""),
            ("acme-s3alias", "\"-s3alias\""),
            ("acme--ol-s3", "\"--ol-s3\""),
        ] {
            let e = check_name(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn lifecycle_reads_as_sorted_sentences() {
        let plan = BucketPlan {
            versioning: true,
            noncurrent_version_expiration_days: Some(30),
            transitions: vec![Transition {
                days: 90,
                storage_class: "GLACIER_IR".into(),
            }],
        };
        let rules = lifecycle(&plan);
        assert_eq!(
            rules,
            [
                "expire noncurrent versions after 30 days",
                "move objects to GLACIER_IR after 90 days"
            ]
        );
        assert_eq!(
            parse_rule(&rules[0]),
            Some(Rule::ExpireNoncurrent { days: 30 })
        );
        assert_eq!(
            parse_rule(&rules[1]),
            Some(Rule::Transition {
                days: 90,
                class: "GLACIER_IR".into()
            })
        );
        assert_eq!(parse_rule("expire noncurrent versions after x days"), None);
    }
}

//! What a tenant's DNS record should be: a CNAME from a name made of its slug (by the
//! config's pattern) to the shared ingress, as the attributes every DNS target compares.
//! Names are written without the final dot; a target adds and strips it. A slot that plugs
//! in (`targets::slot`): its settings, checks and target are all here.

pub mod route53;

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::json;

use crate::diagnostic::Diagnostic;
use crate::model::attrs::{attrs, Attrs};
use crate::model::kind::KindFacts;
use crate::model::resource::Kind;
use crate::model::tenant::TenantSpec;
use crate::repo::hcl_file::{block_problem, Spans};
use crate::slug::Slug;
use crate::targets::slot::{OneTarget, Single, TenantInputs};

pub const RECORD_TYPE: &str = "CNAME";

/// The record a tenant gets.
pub fn name(config: &Route53Config, slug: &Slug, region: &str) -> String {
    config
        .record_for(slug.as_str(), region)
        .to_ascii_lowercase()
}

/// The TXT record beside it that says whose it is: a CNAME can have no other record of its
/// own name, so the mark goes to a name of its own, as external-dns does.
pub fn mark_name(record: &str) -> String {
    format!("_tenant-reconcile.{record}")
}

pub fn desired(config: &Route53Config, slug: &Slug, region: &str) -> Attrs {
    attrs([
        ("name", json!(name(config, slug, region))),
        ("type", json!(RECORD_TYPE)),
        (
            "value",
            json!(config.target.trim_end_matches('.').to_ascii_lowercase()),
        ),
        ("ttl", json!(config.ttl)),
    ])
}

/// A new name is another record.
pub fn forces_replace(field: &str) -> bool {
    field == "name"
}

/// Checks a host name against DNS's rules (labels of 1 to 63 letters, digits and `-`, not
/// at either end; 253 characters in all), so a bad name is found by `validate`.
pub fn check_name(name: &str) -> Result<(), String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err(format!(
            "is {} characters; DNS names are 1 to 253",
            name.len()
        ));
    }
    if !name.contains('.') {
        return Err("is a single label; give a full name, like acme.app.example.com".into());
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "has the label {label:?}; labels are 1 to 63 characters"
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(format!(
                "holds {c:?}; DNS names use only letters, digits, `-` and `.`"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "has the label {label:?}, which starts or ends with `-`"
            ));
        }
    }
    Ok(())
}

/// The `route53` block: the hosted zone tenant records go to and what they are.
/// Credentials come from the standard AWS chain, as for S3.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route53Config {
    /// The hosted zone's id (`Z0123456789ABCDEFGHIJ`).
    #[serde(default)]
    pub zone_id: String,
    /// The record's name: `{slug}` and `{region}` are replaced (`{slug}.app.example.com`).
    #[serde(default = "default_record_name")]
    pub record_name: String,
    /// What the CNAME points to: the shared ingress.
    #[serde(default)]
    pub target: String,
    #[serde(default = "default_record_ttl")]
    pub ttl: i64,
    /// The endpoint URL; without it AWS_ENDPOINT_URL_ROUTE_53, AWS_ENDPOINT_URL, then AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// How long an apply waits for a change to be `INSYNC` before the step fails (the
    /// next apply finds the record and waits again).
    #[serde(default = "default_propagation_timeout")]
    pub propagation_timeout: String,
}

impl Default for Route53Config {
    fn default() -> Self {
        Route53Config {
            zone_id: String::new(),
            record_name: default_record_name(),
            target: String::new(),
            ttl: default_record_ttl(),
            endpoint: None,
            propagation_timeout: default_propagation_timeout(),
        }
    }
}

impl Route53Config {
    /// The record a tenant gets from the name pattern (checked by `dns::check_name`).
    pub fn record_for(&self, slug: &str, region: &str) -> String {
        self.record_name
            .replace("{slug}", slug)
            .replace("{region}", region)
    }

    pub fn propagation_timeout(&self) -> std::time::Duration {
        humantime::parse_duration(&self.propagation_timeout)
            .unwrap_or(std::time::Duration::from_secs(300))
    }
}

fn default_record_name() -> String {
    "{slug}.app.example.com".into()
}

fn default_record_ttl() -> i64 {
    300
}

fn default_propagation_timeout() -> String {
    "5m".into()
}

/// The `route53` block, checked when the DNS target is route53: a record name from a
/// pattern with the slug in it, and a target and zone to put it in.
pub fn check(spans: &Spans, dns: &Route53Config) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    let mut problem = |key: &str, message: String, hint: &str| {
        problems.push(block_problem(spans, "route53", key, message, hint));
    };
    if dns.zone_id.is_empty() || !dns.zone_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        problem(
            "zone_id",
            format!("{:?} is not a hosted zone id", dns.zone_id),
            "give the zone's id as Route53 shows it, like \"Z0123456789ABCDEFGHIJ\"",
        );
    }
    let unknown: Vec<&str> = dns
        .record_name
        .split('{')
        .skip(1)
        .filter_map(|p| p.split_once('}').map(|(name, _)| name))
        .filter(|name| !["slug", "region"].contains(name))
        .collect();
    if let Some(name) = unknown.first() {
        problem(
            "record_name",
            format!("unknown placeholder {{{name}}} in the record name"),
            "record_name can use {slug} and {region}",
        );
    } else if !dns.record_name.contains("{slug}") {
        problem(
            "record_name",
            "the record name must contain {slug}".into(),
            "without the slug every tenant would get the same record",
        );
    }
    if let Err(why) = check_name(&dns.target) {
        problem(
            "target",
            format!("the target {:?} {why}", dns.target),
            "name the shared ingress the records point to, like \"ingress.example.com\"",
        );
    }
    if !(0..=2_147_483_647).contains(&dns.ttl) {
        problem(
            "ttl",
            format!("{} is not a TTL", dns.ttl),
            "give seconds, from 0 to 2147483647",
        );
    }
    if humantime::parse_duration(&dns.propagation_timeout).is_err() {
        problem(
            "propagation_timeout",
            format!("{:?} is not a duration", dns.propagation_timeout),
            "like \"5m\" or \"90s\"",
        );
    }
    problems
}

/// The DNS slot set to Route53: `targets { dns = "route53" }` and the `route53` block.
pub struct Route53;

pub const SLOT: OneTarget<Route53> = OneTarget::new();

impl Single for Route53 {
    const KEY: &'static str = "dns";
    const SETTING: &'static str = "targets.dns";
    const IMPLEMENTATION: &'static str = "route53";
    const KIND: Kind = Kind::DNS;
    type Settings = Route53Config;
    type Target = route53::Route53Dns;

    fn check(spans: &Spans, settings: &mut Route53Config) -> Vec<Diagnostic> {
        // `aws route53 list-hosted-zones` and boto3 print a zone's id as `/hostedzone/Z…`;
        // the API's paths take the bare id.
        if let Some(id) = settings.zone_id.strip_prefix("/hostedzone/") {
            settings.zone_id = id.to_string();
        }
        check(spans, settings)
    }

    fn target(settings: &Route53Config) -> route53::Route53Dns {
        route53::Route53Dns::new(settings.clone())
    }

    fn calls(target: &route53::Route53Dns) -> usize {
        target.calls()
    }

    /// Every name against DNS's rules, and no two tenants on one name.
    fn check_tenants(settings: &Route53Config, tenants: &[TenantSpec]) -> Vec<Diagnostic> {
        let mut problems = Vec::new();
        let mut records: HashMap<String, &TenantSpec> = HashMap::new();
        for t in tenants {
            let name = name(settings, &t.slug, &t.region);
            if let Err(why) = check_name(&name) {
                problems.push(
                    Diagnostic::new(&t.file, format!("the DNS name {name:?} {why}"))
                        .locate(&t.source, "slug")
                        .hint("the name comes from record_name in the route53 block of tenant-reconcile.hcl"),
                );
            } else if let Some(other) = records.insert(name.clone(), t) {
                problems.push(
                    Diagnostic::new(
                        &t.file,
                        format!("the DNS name {name:?} is also {}'s", other.slug),
                    )
                    .locate(&t.source, "slug")
                    .hint("two tenants cannot share a record: change record_name"),
                );
            }
        }
        problems
    }

    fn attrs(settings: &Route53Config, tenant: &TenantInputs<'_>) -> Attrs {
        desired(settings, &tenant.tenant.slug, &tenant.tenant.region)
    }
}

/// A tenant's DNS record.
const RECORD: KindFacts = KindFacts {
    resource_of: Some(|a| format!("record {} {}", a.str("name"), a.str("type"))),
    live_name_of: Some(|a| format!("record {}", a.str("name"))),
    holds_of: Some(|a| format!("points to {}", a.str("value"))),
    purge_turn: Some(2),
    ..KindFacts::plain(Kind::DNS, "dns")
};
inventory::submit!(RECORD);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_rules() {
        for good in ["acme.app.example.com", "a.b", "x-1.example.com."] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("", "1 to 253"),
            ("localhost", "single label"),
            ("a..b", "1 to 63"),
            ("acme_x.example.com", "'_'"),
            ("-acme.example.com", "starts or ends"),
            ("acme.example.com/x", "'/'"),
        ] {
            let e = check_name(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(check_name(&format!("{}.com", "a".repeat(64))).is_err());
    }
}

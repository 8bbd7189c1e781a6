//! What a tenant's DNS record should be: a CNAME from a name made of its slug (by the
//! config's pattern) to the shared ingress, as the attributes every DNS target compares.
//! Names are written without the final dot; a target adds and strips it.

use serde_json::json;

use crate::model::attrs::{attrs, Attrs};
use crate::repo::config::Route53Config;
use crate::slug::Slug;

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

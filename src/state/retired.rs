//! What a replace left behind. Moving a tenant to another isolation mode builds a new slice,
//! and renaming its bucket a new bucket; the old one is kept, with its data, for the
//! operator to move and remove. The state remembers each such resource on its tenant, so
//! that `show` lists it, the tenant's offboarding export includes it, and its purge
//! destroys it (audited) with the rest: an erased tenant leaves nothing behind.

use serde::{Deserialize, Serialize};

use super::TenantState;
use crate::desired::{Attrs, Key, Kind};

/// A resource of a tenant that a replace retired and kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Retired {
    /// The key it had while it was the tenant's own (`database`).
    pub key: Key,
    /// What it is, as a purge names it: `schema t_acme`.
    pub resource: String,
    /// Its attributes when it was replaced: where it is, for its export and its purge.
    pub attrs: Attrs,
    pub retired_at: String,
}

impl Retired {
    /// The key a plan and the audit give it, apart from the resource that replaced it:
    /// `database/retired/schema-t_acme`.
    pub fn address_key(&self) -> Key {
        Key::named(
            self.key.kind,
            format!("retired/{}", label(self.key.kind, &self.attrs)),
        )
    }
}

impl Retired {
    /// Whether it is, after all, `current`: the resource the tenant has now under its key
    /// (a replace back to it, or one cut short before it took the old one's place). Such a
    /// one is the tenant's own, not left behind, and exported and purged as that.
    pub fn is(&self, current: Option<&Attrs>) -> bool {
        current.is_some_and(|c| label(self.key.kind, c) == label(self.key.kind, &self.attrs))
    }
}

/// A resource's identity within its kind: `schema-t_acme`, `database-acme_db`, a bucket's
/// name. Two attribute maps with the same label are the same resource.
fn label(kind: Kind, attrs: &Attrs) -> String {
    match kind {
        Kind::Database => format!("{}-{}", attrs.str("isolation"), attrs.str("name")),
        Kind::Vhost => attrs.str("vhost").to_string(),
        Kind::File => attrs.str("path").to_string(),
        _ => attrs.str("name").to_string(),
    }
}

impl TenantState {
    /// Records that a replace of `key` left `old` behind, now that `new` stands in its
    /// place. A replace back onto a resource retired earlier makes it the tenant's own
    /// again, so it is no longer listed as retired.
    pub fn retire(&mut self, key: &Key, old: Attrs, new: &Attrs, at: String) {
        let (old_label, new_label) = (label(key.kind, &old), label(key.kind, new));
        self.retired
            .retain(|r| !(r.key == *key && label(key.kind, &r.attrs) == new_label));
        if old_label == new_label
            || self
                .retired
                .iter()
                .any(|r| r.key == *key && label(key.kind, &r.attrs) == old_label)
        {
            return;
        }
        self.retired.push(Retired {
            key: key.clone(),
            resource: crate::plan::purged_resource(key.kind, &old),
            attrs: old,
            retired_at: at,
        });
    }

    /// The retired resource a plan names by `address_key`.
    pub fn retired_at_key(&self, address_key: &Key) -> Option<&Retired> {
        self.retired
            .iter()
            .find(|r| &r.address_key() == address_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(isolation: &str, name: &str) -> Attrs {
        [("isolation", json!(isolation)), ("name", json!(name))]
            .into_iter()
            .collect()
    }

    #[test]
    fn a_replace_back_makes_the_old_one_current_again() {
        let key = Key::new(Kind::Database);
        let mut t = TenantState::default();
        t.retire(
            &key,
            slice("schema", "t_acme"),
            &slice("database", "acme"),
            "a".into(),
        );
        assert_eq!(t.retired.len(), 1);
        assert_eq!(
            t.retired[0].address_key().to_string(),
            "database/retired/schema-t_acme"
        );
        assert_eq!(t.retired[0].resource, "schema t_acme");
        t.retire(
            &key,
            slice("database", "acme"),
            &slice("schema", "t_acme"),
            "b".into(),
        );
        assert_eq!(t.retired.len(), 1);
        assert_eq!(t.retired[0].resource, "database acme");
        t.retire(
            &key,
            slice("schema", "t_acme"),
            &slice("shared", "s"),
            "c".into(),
        );
        let left: Vec<&str> = t.retired.iter().map(|r| r.resource.as_str()).collect();
        assert_eq!(left, ["database acme", "schema t_acme"]);
    }
}

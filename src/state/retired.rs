//! What a replace left behind. Moving a tenant to another isolation mode builds a new slice,
//! and renaming its bucket a new bucket; the old one is kept, with its data, for the
//! operator to move and remove. The state remembers each such resource on its tenant, so
//! that `show` lists it, the tenant's offboarding export includes it, and its purge
//! destroys it (audited) with the rest: an erased tenant leaves nothing behind.

use super::TenantState;
use crate::desired::{Attrs, Key};
use crate::model::retired::label;
pub use crate::model::retired::Retired;

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
    use crate::desired::Kind;
    use serde_json::json;

    fn slice(isolation: &str, name: &str) -> Attrs {
        [("isolation", json!(isolation)), ("name", json!(name))]
            .into_iter()
            .collect()
    }

    #[test]
    fn a_replace_back_makes_the_old_one_current_again() {
        let key = Key::new(Kind::DATABASE);
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

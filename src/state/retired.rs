//! What a replace or a move left behind. Moving a tenant to another isolation mode builds a
//! new slice, and renaming its bucket a new bucket; the old one is kept, with its data, for
//! the operator to move and remove. Moving it to another Postgres server leaves its old
//! copy there, fenced, until its plan's hold has passed. The state remembers each such resource on its tenant, so
//! that `show` lists it, the tenant's offboarding export includes it, and its purge
//! destroys it (audited) with the rest: an erased tenant leaves nothing behind.

use super::TenantState;
use crate::desired::{Attrs, Key};
pub use crate::model::retired::Retired;
use crate::model::retired::{label, placed_on, LEFT_BY, SERVER};

impl TenantState {
    /// Records that a replace of `key` left `old` behind, now that `new` stands in its
    /// place (on the server the tenant is placed on, which the retired one remembers). A
    /// replace back onto a resource retired earlier makes it the tenant's own again, so it
    /// is no longer listed as retired.
    pub fn retire(&mut self, key: &Key, mut old: Attrs, new: &Attrs, at: String) {
        let placed = placed_on(&self.resources).map(str::to_string);
        if let Some(server) = &placed {
            old.insert(SERVER, serde_json::json!(server));
        }
        let placed = placed.as_deref();
        self.retired
            .retain(|r| !(r.key == *key && r.is(Some(new), placed)));
        if label(key.kind, &old) == label(key.kind, new)
            || self.retired.iter().any(|r| {
                r.key == *key
                    && label(key.kind, &r.attrs) == label(key.kind, &old)
                    && r.server() == placed
            })
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

    /// Records that the tenant moved from the Postgres server `from` to `to`, leaving its
    /// copy on `from` (its slice and role, fenced), and that what it left on `to` before
    /// (a move there and away again) is its own again: the slice the move copied over is
    /// no longer listed, and any other keeps its data but no longer takes the role there
    /// with it. What replaces left on `from` is marked as being there. Once is enough:
    /// recording the same move again changes nothing.
    pub fn record_move(&mut self, from: &str, to: &str, at: String) {
        let slice = self
            .resources
            .get(&Key::new(crate::desired::Kind::DATABASE));
        self.retired.retain(|r| {
            !(r.is_move_leftover()
                && r.server() == Some(to)
                && slice.is_some_and(|s| r.is(Some(s), Some(to))))
        });
        for r in &mut self.retired {
            if r.server().is_none() {
                r.attrs.insert(SERVER, serde_json::json!(from));
            }
            if r.server() == Some(to) && r.is_move_leftover() {
                r.attrs.remove(LEFT_BY);
                r.resource = crate::plan::purged_resource(r.key.kind, &r.attrs);
            }
        }
        let Some(slice) = slice else { return };
        let left = Retired::left_by_move(from, slice, at);
        if !self
            .retired
            .iter()
            .any(|r| r.address_key() == left.address_key())
        {
            self.retired.push(left);
        }
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

    fn placed(t: &mut TenantState, server: &str) {
        t.resources.insert(
            Key::new(Kind::PLACEMENT),
            [("server", json!(server))].into_iter().collect(),
        );
    }

    fn addresses(t: &TenantState) -> Vec<String> {
        t.retired
            .iter()
            .map(|r| format!("{} ({})", r.address_key(), r.resource))
            .collect()
    }

    #[test]
    fn a_move_leaves_its_copy_on_the_old_server_once_and_a_move_back_takes_it_again() {
        let key = Key::new(Kind::DATABASE);
        let mut t = TenantState::default();
        t.resources.insert(key.clone(), slice("schema", "t_acme"));
        placed(&mut t, "eu-1");
        // A replace on eu-1 leaves its old slice there, named by its server.
        t.retire(
            &key,
            slice("shared", "s"),
            &slice("schema", "t_acme"),
            "a".into(),
        );
        placed(&mut t, "eu-2");
        t.record_move("eu-1", "eu-2", "b".into());
        // Recorded again (a run killed before its checkpoint): nothing more.
        t.record_move("eu-1", "eu-2", "c".into());
        assert_eq!(
            addresses(&t),
            [
                "database/retired/shared-s@eu-1 (the tenant's rows in the shared schema s)",
                "database/retired/schema-t_acme@eu-1 (schema t_acme and the role on eu-1)",
            ]
        );
        assert!(t.retired[1].is_move_leftover() && !t.retired[0].is_move_leftover());
        assert_eq!(t.retired[1].retired_at, "b");
        // Neither is the tenant's current slice, on eu-2.
        assert!(t.retired.iter().all(|r| !r.is_recorded(&t.resources)));

        // Back to eu-1: the copy there was copied over, and is the tenant's again; the
        // one left on eu-2 is the one to remove after its hold.
        placed(&mut t, "eu-1");
        t.record_move("eu-2", "eu-1", "d".into());
        assert_eq!(
            addresses(&t),
            [
                "database/retired/shared-s@eu-1 (the tenant's rows in the shared schema s)",
                "database/retired/schema-t_acme@eu-2 (schema t_acme and the role on eu-2)",
            ]
        );
    }

    #[test]
    fn a_slice_left_by_a_move_on_a_server_the_tenant_returns_to_keeps_its_data_not_the_role() {
        let key = Key::new(Kind::DATABASE);
        let mut t = TenantState::default();
        t.resources.insert(key.clone(), slice("schema", "t_acme"));
        placed(&mut t, "eu-2");
        t.record_move("eu-1", "eu-2", "a".into());
        // Its isolation changes on eu-2, then it goes back to eu-1 as a database: the
        // schema left there is not what it moves into, and the role there is its own again.
        t.resources.insert(key.clone(), slice("database", "acme"));
        placed(&mut t, "eu-1");
        t.record_move("eu-2", "eu-1", "b".into());
        assert_eq!(
            addresses(&t),
            [
                "database/retired/schema-t_acme@eu-1 (schema t_acme)",
                "database/retired/database-acme@eu-2 (database acme and the role on eu-2)",
            ]
        );
        assert!(!t.retired[0].is_move_leftover());
    }
}

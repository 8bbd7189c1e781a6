//! What a replace or a move left standing: the old resource, kept until its tenant is purged
//! (or, for the copy a move left on its old server, until its plan's hold has passed), as the
//! state records it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::attrs::Attrs;
use crate::model::resource::{Key, Kind};

/// A resource of a tenant that a replace or a move retired and kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Retired {
    /// The key it had while it was the tenant's own (`database`).
    pub key: Key,
    /// What it is, as a purge names it: `schema t_acme`.
    pub resource: String,
    /// Its attributes when it was retired: where it is, for its export and its purge. On a
    /// fleet of several Postgres servers, `server` says which holds it, and a move's copy
    /// says so with `left_by = "move"` (its slice and its role there).
    pub attrs: Attrs,
    pub retired_at: String,
}

/// The attribute naming the Postgres server a retired resource is on.
pub const SERVER: &str = "server";
/// The attribute a move's old copy carries: `left_by = "move"`.
pub const LEFT_BY: &str = "left_by";

impl Retired {
    /// The copy a move left on the old server: its slice and its role there, fenced.
    pub fn left_by_move(from: &str, slice: &Attrs, at: String) -> Retired {
        let mut attrs = slice.clone();
        attrs.insert(SERVER, serde_json::json!(from));
        attrs.insert(LEFT_BY, serde_json::json!("move"));
        Retired {
            key: Key::new(Kind::DATABASE),
            resource: format!(
                "{} and the role on {from}",
                crate::plan::purged_resource(Kind::DATABASE, slice)
            ),
            attrs,
            retired_at: at,
        }
    }

    /// The key a plan and the audit give it, apart from the resource that replaced it:
    /// `database/retired/schema-t_acme`, and on a server other than the tenant's,
    /// `database/retired/schema-t_acme@eu-1`.
    pub fn address_key(&self) -> Key {
        let at = self.server().map(|s| format!("@{s}")).unwrap_or_default();
        Key::named(
            self.key.kind,
            format!("retired/{}{at}", label(self.key.kind, &self.attrs)),
        )
    }

    /// The Postgres server it is on, when the config names several.
    pub fn server(&self) -> Option<&str> {
        Some(self.attrs.str(SERVER)).filter(|s| !s.is_empty())
    }

    /// How it came to be left, as plans and `show` say it: `left behind by a replace on
    /// 2026-12-07`, or `left by a move on 2026-12-07`.
    pub fn how_left(&self) -> String {
        let since = self.retired_at.get(..10).unwrap_or(&self.retired_at);
        match self.is_move_leftover() {
            true => format!("left by a move on {since}"),
            false => format!("left behind by a replace on {since}"),
        }
    }

    /// Whether it is the copy a move left on the old server.
    pub fn is_move_leftover(&self) -> bool {
        self.attrs.str(LEFT_BY) == "move"
    }

    /// Whether it is, after all, `current`, the resource the tenant has now under its key on
    /// the server it is placed on (`placed`): a replace back to it, or one cut short before
    /// it took the old one's place. Such a one is the tenant's own, not left behind, and
    /// exported and purged as that.
    pub fn is(&self, current: Option<&Attrs>, placed: Option<&str>) -> bool {
        current.is_some_and(|c| {
            label(self.key.kind, c) == label(self.key.kind, &self.attrs)
                && self.server().is_none_or(|s| Some(s) == placed)
        })
    }

    /// Where it is, as a target reads a tenant's recorded resources: its attributes under
    /// its key, beside the tenant's placement (`recorded`'s), so a target of several
    /// servers finds one that does not name its server where the tenant is.
    pub fn as_recorded(&self, recorded: &BTreeMap<Key, Attrs>) -> BTreeMap<Key, Attrs> {
        let placement = Key::new(Kind::PLACEMENT);
        let mut at: BTreeMap<Key, Attrs> = recorded
            .get(&placement)
            .map(|p| (placement, p.clone()))
            .into_iter()
            .collect();
        at.insert(self.key.clone(), self.attrs.clone());
        at
    }

    /// [`Self::is`] against a tenant's recorded resources.
    pub fn is_recorded(&self, recorded: &BTreeMap<Key, Attrs>) -> bool {
        self.is(recorded.get(&self.key), placed_on(recorded))
    }
}

/// The Postgres server a tenant's recorded resources say it is placed on.
pub fn placed_on(recorded: &BTreeMap<Key, Attrs>) -> Option<&str> {
    recorded
        .get(&Key::new(Kind::PLACEMENT))
        .map(|a| a.str("server"))
        .filter(|s| !s.is_empty())
}

/// A resource's identity within its kind and server: `schema-t_acme`, `database-acme_db`,
/// a bucket's name. Two attribute maps with the same label are the same resource.
pub(crate) fn label(kind: Kind, attrs: &Attrs) -> String {
    match kind {
        Kind::DATABASE => format!("{}-{}", attrs.str("isolation"), attrs.str("name")),
        Kind::VHOST => attrs.str("vhost").to_string(),
        Kind::FILE => attrs.str("path").to_string(),
        _ => attrs.str("name").to_string(),
    }
}

//! What a replace left standing: the old resource, kept until its tenant is purged, as the
//! state records it.

use serde::{Deserialize, Serialize};

use crate::model::attrs::Attrs;
use crate::model::resource::{Key, Kind};

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
pub(crate) fn label(kind: Kind, attrs: &Attrs) -> String {
    match kind {
        Kind::DATABASE => format!("{}-{}", attrs.str("isolation"), attrs.str("name")),
        Kind::VHOST => attrs.str("vhost").to_string(),
        Kind::FILE => attrs.str("path").to_string(),
        _ => attrs.str("name").to_string(),
    }
}

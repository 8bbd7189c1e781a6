//! What the engine asks of a kind of resource, said by the slot that owns it: how it is
//! named in a plan and an audit, what it holds when its target did not count it, where it
//! comes in a purge, and what building it anew means.

use crate::model::attrs::Attrs;
use crate::model::resource::Kind;

/// The facts of one kind.
pub struct KindFacts {
    pub kind: Kind,
    /// What a resource of this kind is, with nothing of the tenant's own in it (no email,
    /// no value): `schema t_acme`, as a purge's plan line and its audit row say it. Without
    /// it, the kind's name.
    pub resource_of: Option<fn(&Attrs) -> String>,
    /// A live one as its target names it in a conflict: `schema t_acme`. Without it, the
    /// kind and its `name`: `role tenant_initech`.
    pub live_name_of: Option<fn(&Attrs) -> String>,
    /// What it holds when its target did not count it: what the state knows. Without it,
    /// nothing.
    pub holds_of: Option<fn(&Attrs) -> String>,
    /// Its turn in a purge, first to last; `None` when it is never purged on its own (the
    /// registry row becomes the tombstone, seed rows go with their slice, the export is
    /// what the customer keeps).
    pub purge_turn: Option<u8>,
    /// Made anew, it is empty: its data is not there (a slice, a bucket).
    pub rebuilt_empty: bool,
    /// The tenant is used through it: made anew, the tenant is smoke-tested again.
    pub used_through: bool,
    /// It stands somewhere of its own (a slice, a bucket, a vhost): what refresh found may
    /// be another one than the state recorded, and a purge destroys the one that stands.
    pub located: bool,
    /// Its attributes are a map compared whole (the flags, the quotas): a key the file no
    /// longer names is a change.
    pub whole_map: bool,
}

impl KindFacts {
    /// A kind with nothing particular about it: named by its `name`, never purged.
    pub const fn plain(kind: Kind) -> KindFacts {
        KindFacts {
            kind,
            resource_of: None,
            live_name_of: None,
            holds_of: None,
            purge_turn: None,
            rebuilt_empty: false,
            used_through: false,
            located: false,
            whole_map: false,
        }
    }

    pub fn resource(&self, attrs: &Attrs) -> String {
        match self.resource_of {
            Some(of) => of(attrs),
            None => self.kind.as_str().into(),
        }
    }

    pub fn live_name(&self, attrs: &Attrs) -> String {
        match self.live_name_of {
            Some(of) => of(attrs),
            None => format!("{} {}", self.kind.as_str(), attrs.str("name")),
        }
    }

    pub fn holds(&self, attrs: &Attrs) -> String {
        self.holds_of.map(|of| of(attrs)).unwrap_or_default()
    }
}

/// `n` and its noun, `1 flag` or `3 flags`.
pub fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// What a slice, bucket or vhost holds when live resources were not read.
pub fn not_counted(_: &Attrs) -> String {
    "not counted (live resources were not read)".into()
}

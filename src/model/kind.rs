//! A kind of resource, and what the engine asks of it, said by the slot that owns it: how it is
//! named in a plan and an audit, what it holds when its target did not count it, where it
//! comes in a purge, and what building it anew means.
//!
//! Every kind's facts are registered where they are said (`inventory::submit!` beside the
//! `KindFacts`), so a slot adds a kind without a line anywhere else, and the engine looks
//! them up here by kind ([`of`]) or by name ([`named`]).

use std::fmt;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::model::attrs::Attrs;

/// A kind of resource a tenant has, by its rank in the order a tenant's steps run. Each kind
/// may depend on any kind of a lower rank (the registry row gives the tenant its id, the role
/// must exist before the database grants it rights, the database before its seed data).
///
/// Kinds are open. The ones the engine reasons about by name are here; a target slot may
/// declare a kind of its own beside its facts (`targets/quotas`). Every kind is registered
/// with its facts, which give its name: that is how a name read from the state or a saved
/// plan finds its kind. Ranks leave room between them, so a new kind takes its place in the
/// order without renumbering the others. A kind is one byte, as a key is read and compared
/// for every resource of the fleet.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kind(u8);

impl Kind {
    pub const REGISTRY: Kind = Kind::new(0);
    pub const OWNER: Kind = Kind::new(10);
    pub const FEATURES: Kind = Kind::new(20);
    pub const QUOTAS: Kind = Kind::new(30);
    /// The Postgres server its data lives on, when the config names several.
    pub const PLACEMENT: Kind = Kind::new(35);
    pub const ROLE: Kind = Kind::new(40);
    pub const DATABASE: Kind = Kind::new(50);
    pub const SEED: Kind = Kind::new(60);
    pub const BUCKET: Kind = Kind::new(70);
    /// Its message-broker vhost, with its user, permissions and limits.
    pub const VHOST: Kind = Kind::new(80);
    /// Its DNS record.
    pub const DNS: Kind = Kind::new(90);
    pub const FILE: Kind = Kind::new(100);
    /// The tenant's data written out as it is offboarded, after its access is revoked.
    pub const EXPORT: Kind = Kind::new(120);

    /// The kind of rank `rank` (below [`Kind::RANKS`], so a set of kinds fits in a `u128`).
    pub const fn new(rank: u8) -> Kind {
        assert!(rank < Kind::RANKS, "a kind's rank is below Kind::RANKS");
        Kind(rank)
    }

    /// Ranks run from 0 to 127.
    pub const RANKS: u8 = 128;

    pub fn rank(self) -> u8 {
        self.0
    }

    /// Its name, as its facts give it: `role`.
    pub fn as_str(self) -> &'static str {
        of(self).name
    }

    /// Attributes the target works out when it applies (a new tenant's password needs the
    /// tenant id the registry gives it), so a plan can only say they are known after apply.
    pub fn computed(self) -> &'static [&'static str] {
        of(self).computed
    }

    /// The registered kind of this name.
    pub fn parse(s: &str) -> Option<Kind> {
        named(s)
    }
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match BY_RANK[self.0 as usize] {
            Some(facts) => f.write_str(facts.name),
            None => write!(f, "Kind({})", self.0),
        }
    }
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Kind::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown resource kind {name:?}")))
    }
}

/// The facts of one kind.
pub struct KindFacts {
    pub kind: Kind,
    /// Its name in keys, plans and the state: `role`, `file/namespace.yaml`.
    pub name: &'static str,
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
    /// Attributes its target works out when it applies (a password's fingerprint needs the
    /// tenant id the registry gives it), so a plan can only say they are known after apply.
    pub computed: &'static [&'static str],
    /// What it lives in (seed rows, in their slice): that one made anew makes it anew, and
    /// that one's purge takes it along.
    pub lives_in: Option<Kind>,
    /// Output generated from the repo (a rendered file): its body is shown as a text diff,
    /// and one the repo no longer generates is removed, since nothing else is kept in it.
    /// No other kind is ever destroyed by a plan.
    pub generated: bool,
}

inventory::collect!(KindFacts);

impl KindFacts {
    /// A kind called `name` with nothing particular about it: a resource of it is named by
    /// its `name` attribute, and it is never purged.
    pub const fn plain(kind: Kind, name: &'static str) -> KindFacts {
        KindFacts {
            kind,
            name,
            resource_of: None,
            live_name_of: None,
            holds_of: None,
            purge_turn: None,
            rebuilt_empty: false,
            used_through: false,
            located: false,
            whole_map: false,
            computed: &[],
            lives_in: None,
            generated: false,
        }
    }

    pub fn resource(&self, attrs: &Attrs) -> String {
        match self.resource_of {
            Some(of) => of(attrs),
            None => self.name.into(),
        }
    }

    pub fn live_name(&self, attrs: &Attrs) -> String {
        match self.live_name_of {
            Some(of) => of(attrs),
            None => format!("{} {}", self.name, attrs.str("name")),
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

/// The export a leaving tenant gets: the engine's own kind, written by every target.
const EXPORT: KindFacts = KindFacts {
    computed: &["manifest_sha256"],
    ..KindFacts::plain(Kind::EXPORT, "export")
};
inventory::submit!(EXPORT);

/// Every registered kind's facts, by rank.
static BY_RANK: LazyLock<Vec<Option<&'static KindFacts>>> = LazyLock::new(|| {
    let mut by_rank: Vec<Option<&'static KindFacts>> = vec![None; Kind::RANKS as usize];
    for facts in inventory::iter::<KindFacts> {
        let clash = by_rank
            .iter()
            .flatten()
            .find(|f| f.kind == facts.kind || f.name == facts.name);
        if let Some(taken) = clash {
            panic!(
                "the kinds {} (rank {}) and {} (rank {}) are registered at one rank or name",
                taken.name,
                taken.kind.rank(),
                facts.name,
                facts.kind.rank()
            );
        }
        by_rank[facts.kind.rank() as usize] = Some(facts);
    }
    by_rank
});

/// The facts of `kind`. Every kind is registered with its facts, so a kind without them is
/// a kind made outside a slot: a mistake in this program, not in its input.
pub fn of(kind: Kind) -> &'static KindFacts {
    BY_RANK[kind.rank() as usize]
        .unwrap_or_else(|| panic!("the kind {kind:?} has no registered facts"))
}

/// Every registered kind, in rank order.
pub fn all() -> impl Iterator<Item = Kind> {
    BY_RANK.iter().flatten().map(|f| f.kind)
}

/// The registered kind called `name`.
pub fn named(name: &str) -> Option<Kind> {
    BY_RANK
        .iter()
        .flatten()
        .find(|f| f.name == name)
        .map(|f| f.kind)
}

/// The kinds a purge destroys, in the order it destroys them (worked out once).
pub fn purge_order() -> &'static [Kind] {
    static ORDER: LazyLock<Vec<Kind>> = LazyLock::new(|| {
        let mut turns: Vec<(u8, Kind)> = BY_RANK
            .iter()
            .flatten()
            .filter_map(|f| Some((f.purge_turn?, f.kind)))
            .collect();
        turns.sort();
        turns.into_iter().map(|(_, kind)| kind).collect()
    });
    &ORDER
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMED: [Kind; 12] = [
        Kind::REGISTRY,
        Kind::OWNER,
        Kind::FEATURES,
        Kind::QUOTAS,
        Kind::ROLE,
        Kind::DATABASE,
        Kind::SEED,
        Kind::BUCKET,
        Kind::VHOST,
        Kind::DNS,
        Kind::FILE,
        Kind::EXPORT,
    ];

    #[test]
    fn every_kind_the_engine_names_is_registered_with_its_facts() {
        for kind in NAMED {
            assert_eq!(of(kind).kind, kind);
            assert_eq!(named(kind.as_str()), Some(kind));
        }
        assert_eq!(named("no-such-kind"), None);
    }

    #[test]
    fn kinds_come_in_rank_order_with_a_name_each() {
        let kinds: Vec<Kind> = all().collect();
        assert!(kinds.windows(2).all(|w| w[0] < w[1]));
        let mut names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), kinds.len(), "two kinds share a name");
    }

    /// What lives in another is made after it (its home comes first in a tenant's order)
    /// and is never purged on its own: its home's purge takes it.
    #[test]
    fn what_lives_in_a_resource_comes_after_it_and_goes_with_it() {
        let living: Vec<&KindFacts> = all().map(of).filter(|f| f.lives_in.is_some()).collect();
        assert!(living.iter().any(|f| f.kind == Kind::SEED));
        for facts in living {
            let home = facts.lives_in.unwrap();
            assert!(home < facts.kind, "{:?} lives in {home:?}", facts.kind);
            assert!(of(home).purge_turn.is_some(), "{home:?} is purged");
            assert!(facts.purge_turn.is_none(), "{:?} goes with it", facts.kind);
        }
    }

    #[test]
    fn a_purge_goes_from_what_is_used_through_the_tenant_to_its_control_plane_rows() {
        // The engine's own kinds, in their order; a slot's kind takes its turn among them.
        let order: Vec<Kind> = purge_order()
            .iter()
            .copied()
            .filter(|k| NAMED.contains(k))
            .collect();
        assert_eq!(
            order,
            [
                Kind::FILE,
                Kind::DNS,
                Kind::VHOST,
                Kind::BUCKET,
                Kind::DATABASE,
                Kind::ROLE,
                Kind::QUOTAS,
                Kind::FEATURES,
                Kind::OWNER,
            ]
        );
    }
}

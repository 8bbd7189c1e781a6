//! Every kind's facts ([`KindFacts`]), each said by the slot that owns it, as the engine
//! looks them up. A new kind is a `KindFacts` in its slot and a line in [`ALL`].

use crate::model::resource::Kind;
use crate::targets::kind_facts::KindFacts;
use crate::targets::{broker, buckets, control_plane, data, dns, files};

/// The export a leaving tenant gets: the engine's own kind, written by every target.
const EXPORT: KindFacts = KindFacts::plain(Kind::Export);

/// Every kind's facts, each from the slot that owns it, in `Kind`'s order.
const ALL: [&KindFacts; 12] = [
    &control_plane::REGISTRY,
    &control_plane::OWNER,
    &control_plane::FEATURES,
    &control_plane::QUOTAS,
    &data::ROLE,
    &data::DATABASE,
    &data::SEED,
    &buckets::BUCKET,
    &broker::VHOST,
    &dns::RECORD,
    &files::FILE,
    &EXPORT,
];

/// The facts of `kind`.
pub fn of(kind: Kind) -> &'static KindFacts {
    ALL[kind as usize]
}

/// The kinds a purge destroys, in the order it destroys them (worked out once).
pub fn purge_order() -> &'static [Kind] {
    static ORDER: std::sync::LazyLock<Vec<Kind>> = std::sync::LazyLock::new(|| {
        let mut turns: Vec<(u8, Kind)> = ALL
            .iter()
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

    #[test]
    fn every_kind_has_its_facts_in_its_place() {
        for kind in Kind::ALL {
            assert_eq!(of(kind).kind, kind);
        }
    }

    #[test]
    fn a_purge_goes_from_what_is_used_through_the_tenant_to_its_control_plane_rows() {
        assert_eq!(
            purge_order(),
            [
                Kind::File,
                Kind::Dns,
                Kind::Vhost,
                Kind::Bucket,
                Kind::Database,
                Kind::Role,
                Kind::Quotas,
                Kind::Features,
                Kind::Owner,
            ]
        );
    }
}

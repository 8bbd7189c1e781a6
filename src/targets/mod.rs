//! The target slots, one folder each, named as the config's `targets { }` keys are. A slot's
//! `mod.rs` says what its resources are called and what they hold, with its config block and
//! its checks; each implementation sits in a folder or file beneath it (`buckets/s3/`,
//! `dns/route53.rs`). `provider.rs` is the contract every implementation keeps.

pub mod broker;
pub mod buckets;
pub mod control_plane;
pub mod data;
pub mod dns;
pub mod files;
pub mod provider;
pub mod quotas;
pub mod slot;
pub mod unconfigured;

/// The slots that plug in ([`slot::Slot`]): a new one is a folder here and a line in this list.
pub const PLUGGED: &[&dyn slot::Slot] = &[&broker::SLOT, &dns::SLOT, &quotas::SLOT];

#[cfg(test)]
mod tests {
    use crate::model::resource::Kind;

    /// A tenant's resources are compiled slot by slot in this list's order, and applied in
    /// that order: it must be their kinds' rank order, between the bucket and the files.
    #[test]
    fn plugged_slots_are_listed_in_the_order_of_their_kinds() {
        let kinds: Vec<Kind> = super::PLUGGED
            .iter()
            .flat_map(|slot| slot.kinds().iter().copied())
            .collect();
        assert!(kinds.windows(2).all(|w| w[0] < w[1]), "{kinds:?}");
        assert!(
            kinds.iter().all(|k| Kind::BUCKET < *k && *k < Kind::FILE),
            "{kinds:?}"
        );
    }
}

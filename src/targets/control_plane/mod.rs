//! The control-plane slot: each tenant's registry row and lifecycle, its owner's membership,
//! its flags and quotas, and the outbox of events, with the audit of its offboarding.

pub mod local;
pub mod postgres;
pub mod rows;
pub mod store;

use crate::model::kind::{count, KindFacts};
use crate::model::resource::Kind;

/// A tenant's registry row: made a tombstone by its purge, never destroyed.
const REGISTRY: KindFacts = KindFacts::plain(Kind::REGISTRY, "registry");
inventory::submit!(REGISTRY);

/// The owner's membership.
const OWNER: KindFacts = KindFacts {
    resource_of: Some(|_| "owner membership".into()),
    holds_of: Some(|_| "1 member".into()),
    purge_turn: Some(9),
    ..KindFacts::plain(Kind::OWNER, "owner")
};
inventory::submit!(OWNER);

/// The tenant's feature flags.
const FEATURES: KindFacts = KindFacts {
    resource_of: Some(|_| "feature flags".into()),
    holds_of: Some(|a| count(a.len(), "flag")),
    purge_turn: Some(8),
    whole_map: true,
    ..KindFacts::plain(Kind::FEATURES, "features")
};
inventory::submit!(FEATURES);

/// The tenant's quotas.
const QUOTAS: KindFacts = KindFacts {
    resource_of: Some(|_| "quotas".into()),
    holds_of: Some(|a| count(a.len(), "quota")),
    purge_turn: Some(7),
    whole_map: true,
    ..KindFacts::plain(Kind::QUOTAS, "quotas")
};
inventory::submit!(QUOTAS);

//! The control-plane slot: each tenant's registry row and lifecycle, its owner's membership,
//! its flags and quotas, and the outbox of events, with the audit of its offboarding.

pub mod local;
pub mod postgres;
pub mod rows;

use crate::model::resource::Kind;
use crate::targets::kind_facts::{count, KindFacts};

/// A tenant's registry row: made a tombstone by its purge, never destroyed.
pub const REGISTRY: KindFacts = KindFacts::plain(Kind::Registry);

/// The owner's membership.
pub const OWNER: KindFacts = KindFacts {
    resource_of: Some(|_| "owner membership".into()),
    holds_of: Some(|_| "1 member".into()),
    purge_turn: Some(9),
    ..KindFacts::plain(Kind::Owner)
};

/// The tenant's feature flags.
pub const FEATURES: KindFacts = KindFacts {
    resource_of: Some(|_| "feature flags".into()),
    holds_of: Some(|a| count(a.len(), "flag")),
    purge_turn: Some(8),
    whole_map: true,
    ..KindFacts::plain(Kind::Features)
};

/// The tenant's quotas.
pub const QUOTAS: KindFacts = KindFacts {
    resource_of: Some(|_| "quotas".into()),
    holds_of: Some(|a| count(a.len(), "quota")),
    purge_turn: Some(7),
    whole_map: true,
    ..KindFacts::plain(Kind::Quotas)
};

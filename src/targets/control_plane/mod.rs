//! The control-plane slot: each tenant's registry row and lifecycle, its owner's membership,
//! its flags and quotas, and the outbox of events, with the audit of its offboarding.

pub mod local;
pub mod postgres;
pub mod rows;
pub mod store;

use std::path::Path;
use std::sync::Arc;

use crate::clients::postgres::PgServer;
use crate::model::kind::{count, KindFacts};
use crate::model::resource::Kind;
use crate::targets::provider::ControlPlane;

/// What `targets.control_plane` can be set to; `local` is the default.
pub const IMPLEMENTATIONS: &[&str] = &["local", "postgres"];

/// The control plane `implementation` names (one of [`IMPLEMENTATIONS`]): tables in the
/// Postgres server's admin schema, or a SQLite file in the local target's folder.
pub fn target(
    implementation: &str,
    server: &Arc<PgServer>,
    local_dir: &Path,
) -> Arc<dyn ControlPlane> {
    match implementation {
        "postgres" => Arc::new(postgres::PgControl::new(server.clone())),
        _ => Arc::new(local::LocalControl::new(local_dir.join("control.sqlite"))),
    }
}

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

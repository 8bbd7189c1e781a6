//! The operations behind the commands, one file each. The binary parses arguments, calls one
//! of these and prints; all decisions live here.

mod apply;
mod audit;
mod claim;
mod credentials;
mod drift;
pub mod events;
mod export;
mod key;
mod plan;
pub mod rollout;
mod shard;
mod state_rm;

pub use apply::{apply, read_plan_file, ApplyOptions, ApplyOutcome};
pub use audit::audit;
pub use claim::{claim, plan_file_digest, Claimed};
pub use credentials::{credentials, Login};
pub use drift::drift;
pub use export::{export, export_links};
pub(crate) use key::check_key;
pub use plan::{plan, PlanOptions};
pub use shard::Shard;
pub use state_rm::state_rm;

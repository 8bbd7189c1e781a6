//! The floor beneath everything else: the records the rest of the crate shares, with no import
//! of anything above them (`tests/layers.rs` keeps them out of import circles).

pub mod attrs;
pub mod audit;
pub mod change;
pub mod checks;
pub mod count;
pub mod digest;
pub mod health;
pub mod hook_runs;
pub mod kind;
pub mod lifecycle;
pub mod migration;
pub mod outbox;
pub mod resource;
pub mod retired;
pub mod rollout;
pub mod tenant;

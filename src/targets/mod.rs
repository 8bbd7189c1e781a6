//! The target slots, one folder each, named as the config's `targets { }` keys are: what a
//! slot's resources are called and what they hold, its config block and its checks. The
//! implementations that talk to servers are still under `provider/`.

pub mod broker;
pub mod buckets;
pub mod data;
pub mod dns;

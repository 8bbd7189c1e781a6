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
pub const PLUGGED: &[&dyn slot::Slot] = &[&broker::BrokerSlot, &dns::DnsSlot, &quotas::QuotasSlot];

//! tenant-reconcile: provision the tenants of a multi-tenant SaaS from files in a git
//! repository, the way `terraform plan` / `terraform apply` provisions infrastructure.
//!
//! The flow is **load** ([`repo`]) → **compile** ([`desired`]) → **refresh** ([`targets`])
//! → **diff** ([`plan`]) → **render** ([`render`]) or **apply** ([`apply`]), with the
//! recorded [`state`] beside it. See ARCHITECTURE.md.

pub mod apply;
pub mod causes;
pub mod changes;
pub mod check;
pub mod clients;
pub mod configured;
pub mod credentials;
pub mod delivery;
pub mod desired;
pub mod diagnostic;
pub mod error;
pub mod export;
pub mod hooks;
pub mod model;
pub mod offboarding;
pub mod ops;
pub mod placement;
pub mod plan;
pub mod private_files;
pub mod render;
pub mod repo;
pub mod rollout;
pub mod scaffold;
pub mod schema;
pub mod slug;
pub mod smoke;
pub mod state;
pub mod targets;
pub mod workspace;

pub use error::Error;

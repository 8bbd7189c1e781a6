//! The control-plane slot: each tenant's registry row and lifecycle, its owner's membership,
//! its flags and quotas, and the outbox of events, with the audit of its offboarding.

pub mod local;
pub mod postgres;
pub mod rows;

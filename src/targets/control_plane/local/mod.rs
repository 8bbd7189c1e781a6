//! The control plane in `control.sqlite` under the local target's folder.

pub mod control;

pub use control::LocalControl;

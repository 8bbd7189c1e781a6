//! Each tenant's data in a SQLite file of its own under the local target's folder, with the
//! login roles and slices kept in `catalog.sqlite` as Postgres keeps them in its catalog.

pub mod data;
pub mod smoke;

pub use data::LocalData;

//! Where a tenant's data lives when the config names several Postgres servers
//! (`postgres_server "eu-2" { … }` blocks).
//!
//! A tenant is placed once, when it is first provisioned, and stays where it was placed:
//! adding a server moves nobody. The choice (`policy`) keeps to hard rules first (the
//! tenant's region, since a region is where its data may live; the isolation modes a server
//! takes; the labels its plan or file asks for; the server's cap), and among the servers
//! left takes the least loaded. A tenant no server can take is refused with the reason for
//! each server, and the rest of the fleet goes on.

mod policy;

use std::collections::BTreeMap;

use crate::model::tenant::Isolation;

pub use policy::{Placed, Placer, Refused};

/// A Postgres server, as far as placement is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub name: String,
    /// The region its data is in: only tenants of that region are placed on it.
    pub region: String,
    /// Tenants at most. Placement never goes past it.
    pub cap: u32,
    /// What it offers (`tier = "dedicated"`), for plans and tenants that ask for it.
    pub labels: BTreeMap<String, String>,
    /// The isolation modes it takes.
    pub isolation: Vec<Isolation>,
    /// Being emptied: it takes no tenant, and the tenants on it are moved off.
    pub draining: bool,
}

/// What a tenant asks of the server it is placed on.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub region: &'a str,
    pub isolation: Isolation,
    /// One server by name (the tenant file's `server`).
    pub server: Option<&'a str>,
    /// Labels the server must carry, each with the value asked (the plan's and the tenant
    /// file's `server_labels`).
    pub labels: &'a BTreeMap<String, String>,
}

//! What every control plane reads in its refresh, and how those rows become live
//! resources. Targets differ in how they fetch the rows (SQLite, PostgreSQL), not in what
//! the rows mean.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{LiveFleet, LiveTenant, RefreshTarget};
use crate::desired::{self, Attrs, Kind};
use crate::slug::Slug;
use crate::state::Lifecycle;

/// tenant_id, slug, name, plan, region, locale, isolation, labels, lifecycle, step.
pub type RegistryRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Value,
    String,
    Option<String>,
);

/// The whole fleet's control-plane rows, one read per table.
pub struct ControlRows {
    pub registry: Vec<RegistryRow>,
    /// tenant_id, owner email.
    pub owners: Vec<(String, String)>,
    /// Per tenant_id, its flag → enabled map.
    pub flags: HashMap<String, Attrs>,
    /// Per tenant_id, its quota → value map.
    pub quotas: HashMap<String, Attrs>,
}

/// Records the rows of the tenants being refreshed in `live`; rows of other tenants are
/// skipped.
pub fn record(targets: &[RefreshTarget], live: &mut LiveFleet, rows: ControlRows) {
    let wanted: HashMap<&str, &Slug> = targets.iter().map(|t| (t.slug.as_str(), &t.slug)).collect();
    let mut by_id: HashMap<String, &Slug> = HashMap::new();
    for (id, slug, name, plan, region, locale, isolation, labels, lifecycle, step) in rows.registry
    {
        let Some(&slug) = wanted.get(slug.as_str()) else {
            continue;
        };
        live.insert_attrs(
            slug,
            Kind::Registry,
            desired::attrs([
                ("name", json!(name)),
                ("plan", json!(plan)),
                ("region", json!(region)),
                ("locale", json!(locale)),
                ("isolation", json!(isolation)),
                ("labels", labels),
                ("lifecycle", json!(lifecycle)),
            ]),
        );
        live.tenants.insert(
            slug.clone(),
            LiveTenant {
                tenant_id: id.clone(),
                lifecycle: Lifecycle::parse(&lifecycle).unwrap_or_default(),
                step,
            },
        );
        by_id.insert(id, slug);
    }
    for (id, email) in rows.owners {
        if let Some(slug) = by_id.get(&id) {
            live.insert_attrs(
                slug,
                Kind::Owner,
                desired::attrs([("email", json!(email)), ("role", json!("owner"))]),
            );
        }
    }
    for (kind, mut maps) in [(Kind::Features, rows.flags), (Kind::Quotas, rows.quotas)] {
        for (id, slug) in &by_id {
            // Flags and quotas exist as soon as the tenant does; an empty map is still a map.
            live.insert_attrs(slug, kind, maps.remove(id).unwrap_or_default());
        }
    }
}

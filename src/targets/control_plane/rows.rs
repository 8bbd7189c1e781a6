//! What every control plane reads in its refresh, and how those rows become live
//! resources. Targets differ in how they fetch the rows (SQLite, PostgreSQL), not in what
//! the rows mean.

use std::collections::HashMap;

use rayon::prelude::*;
use serde_json::{json, Value};

use crate::model::attrs::Attrs;
use crate::model::lifecycle::Lifecycle;
use crate::model::resource::Kind;
use crate::slug::Slug;
use crate::targets::provider::{LiveFleet, LiveTenant, RefreshTarget};

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
/// skipped. The attributes are built on all cores: at 10,000 tenants this was the one part
/// of a refresh that kept a single core busy while the other waited.
pub fn record(targets: &[RefreshTarget], live: &mut LiveFleet, rows: ControlRows) {
    let wanted: HashMap<&str, &Slug> = targets.iter().map(|t| (t.slug.as_str(), &t.slug)).collect();
    let ControlRows {
        registry,
        owners,
        mut flags,
        mut quotas,
    } = rows;
    let owners: HashMap<String, String> = owners.into_iter().collect();
    let found: Vec<(&Slug, LiveTenant, Attrs, Option<Attrs>)> = registry
        .into_par_iter()
        .filter_map(
            |(id, slug, name, plan, region, locale, isolation, labels, lifecycle, step)| {
                let slug = *wanted.get(slug.as_str())?;
                let registry = crate::model::attrs::attrs([
                    ("name", json!(name)),
                    ("plan", json!(plan)),
                    ("region", json!(region)),
                    ("locale", json!(locale)),
                    ("isolation", json!(isolation)),
                    ("labels", labels),
                    ("lifecycle", json!(lifecycle)),
                ]);
                let owner = owners.get(&id).map(|email| {
                    crate::model::attrs::attrs([("email", json!(email)), ("role", json!("owner"))])
                });
                let tenant = LiveTenant {
                    lifecycle: Lifecycle::parse(&lifecycle).unwrap_or_default(),
                    tenant_id: id,
                    step,
                };
                Some((slug, tenant, registry, owner))
            },
        )
        .collect();
    for (slug, tenant, attrs, owner) in found {
        live.insert_attrs(slug, Kind::REGISTRY, attrs);
        if let Some(owner) = owner {
            live.insert_attrs(slug, Kind::OWNER, owner);
        }
        // Flags and quotas exist as soon as the tenant does; an empty map is still a map.
        let id = tenant.tenant_id.as_str();
        live.insert_attrs(slug, Kind::FEATURES, flags.remove(id).unwrap_or_default());
        live.insert_attrs(slug, Kind::QUOTAS, quotas.remove(id).unwrap_or_default());
        live.tenants.insert(slug.clone(), tenant);
    }
}

/// The control-plane table that holds a tenant's rows of `kind`, which a purge deletes:
/// the same names on every control plane. Constants, never input.
pub fn table_of(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::OWNER => Some("memberships"),
        Kind::FEATURES => Some("feature_flags"),
        Kind::QUOTAS => Some("quotas"),
        _ => None,
    }
}

/// The control plane's smoke tests, from its one read, begun at `started`: the registry
/// row by the tenant's id (its slug), and the owner's membership (its email). The messages
/// name no email.
pub fn smoke_verdicts(
    ctx: &crate::targets::provider::StepContext<'_>,
    started: std::time::Instant,
    read: Result<(Option<String>, Option<String>), crate::targets::provider::ProviderError>,
) -> Vec<crate::model::health::CheckOutcome> {
    use crate::model::health::CheckOutcome;
    let slug = ctx.tenant.slug.as_str();
    let (registry, owner) = match read {
        Ok((registry, owner)) => (Ok(registry), Ok(owner)),
        Err(e) => (Err(crate::causes::chain(&e)), Err(crate::causes::chain(&e))),
    };
    let registry_verdict = match registry {
        Ok(Some(found)) if found == slug => Ok(format!("the registry row of {slug} reads back")),
        Ok(Some(found)) => Err(format!(
            "the registry row of this id has the slug {found:?}"
        )),
        Ok(None) => Err("the tenant has no registry row".into()),
        Err(e) => Err(e),
    };
    let owner_verdict = match owner {
        Ok(Some(email)) if email.eq_ignore_ascii_case(&ctx.tenant.owner_email) => {
            Ok("the owner's membership reads back".to_string())
        }
        Ok(Some(_)) => Err("the owner's membership names another email than the file".into()),
        Ok(None) => Err("the tenant has no owner membership: its owner cannot sign in".into()),
        Err(e) => Err(e),
    };
    vec![
        CheckOutcome::of("registry", started, registry_verdict),
        CheckOutcome::of("owner", started, owner_verdict),
    ]
}

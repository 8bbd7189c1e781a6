//! The control plane's refresh, once for both servers: one statement per table for the tenants
//! refreshed, however many there are, the four sent at once. Each folds its table into one
//! JSON document: a driver hands rows over one at a time, and at 10,000 tenants that hand-off,
//! not the server, was most of a refresh; one row makes it vanish. Flags and quotas arrive
//! already grouped per tenant.

use std::collections::HashMap;

use crate::clients::sql::{spawn_json_of, Statement};
use crate::targets::control_plane::rows::{self, ControlRows};
use crate::targets::control_plane::store::{ControlDb, Reading};
use crate::targets::provider::{LiveFleet, Provider, ProviderError, RefreshTarget};

// Each reads the rows of the tenants refreshed ($1, their slugs) only: a plan of one tenant
// reads its rows, whatever the fleet; the full plan's list is every tenant's.
const REGISTRY: &str = "SELECT CAST({json_list}({json_array}(tenant_id, slug, name, plan, region, \
     locale, isolation, {json_column labels}, lifecycle, step)) AS TEXT) FROM {schema}.tenants \
     WHERE slug IN ({each $1})";
const OWNERS: &str = "SELECT CAST({json_list}({json_array}(tenant_id, email)) AS TEXT) \
     FROM {schema}.memberships WHERE role = 'owner' AND tenant_id IN (SELECT tenant_id \
     FROM {schema}.tenants WHERE slug IN ({each $1}))";
const FLAGS: &str = "SELECT CAST({json_map}(tenant_id, {json_column m}) AS TEXT) FROM \
     (SELECT tenant_id, {json_map}(flag, {json_bool enabled}) AS m \
      FROM {schema}.feature_flags WHERE tenant_id IN (SELECT tenant_id \
      FROM {schema}.tenants WHERE slug IN ({each $1})) GROUP BY tenant_id) AS f";
const QUOTAS: &str = "SELECT CAST({json_map}(tenant_id, {json_column m}) AS TEXT) FROM \
     (SELECT tenant_id, {json_map}(name, value) AS m FROM {schema}.quotas \
      WHERE tenant_id IN (SELECT tenant_id FROM {schema}.tenants WHERE slug IN ({each $1})) \
      GROUP BY tenant_id) AS q";

/// Records the control-plane rows of `targets`' tenants in `live`. A plan changes nothing:
/// the tables are read through [`ControlDb::reader`], which makes none.
pub async fn refresh<C: ControlDb + Provider>(
    db: &C,
    targets: &[RefreshTarget],
    live: &mut LiveFleet,
) -> Result<(), ProviderError> {
    let Reading { pool, calls, close } = db.reader().await?;
    let Some(pool) = pool else {
        live.calls.push((db.name(), calls));
        return Ok(());
    };
    let d = db.dialect();
    let slugs = serde_json::to_string(&targets.iter().map(|t| t.slug.as_str()).collect::<Vec<_>>())
        .expect("slugs serialize");
    let read = |doing, sql| Statement::new(d, doing, sql).text(slugs.clone());
    let registry = spawn_json_of(&pool, read("read the registry", REGISTRY));
    let owners = spawn_json_of(&pool, read("read memberships", OWNERS));
    let flags = spawn_json_of::<HashMap<_, _>>(&pool, read("read feature flags", FLAGS));
    let quotas = spawn_json_of::<HashMap<_, _>>(&pool, read("read quotas", QUOTAS));
    let read = async {
        Ok::<_, ProviderError>((registry.await?, owners.await?, flags.await?, quotas.await?))
    };
    let read = read.await;
    if close {
        pool.close().await;
    }
    let (registry, owners, flags, quotas) = read?;
    rows::record(
        targets,
        live,
        ControlRows {
            registry: registry.unwrap_or_default(),
            owners: owners.unwrap_or_default(),
            flags: flags.unwrap_or_default(),
            quotas: quotas.unwrap_or_default(),
        },
    );
    live.calls.push((db.name(), calls + 4));
    Ok(())
}

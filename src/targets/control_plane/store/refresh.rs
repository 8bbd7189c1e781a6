//! The control plane's refresh, once for both servers: one statement per table, however many
//! tenants are refreshed, the four sent at once. Each folds its table into one
//! JSON document: a driver hands rows over one at a time, and at 10,000 tenants that hand-off,
//! not the server, was most of a refresh; one row makes it vanish. Flags and quotas arrive
//! already grouped per tenant.

use std::collections::HashMap;

use crate::clients::sql::{spawn_json_of, Dialect, Statement};
use crate::targets::control_plane::rows::{self, ControlRows};
use crate::targets::control_plane::store::{ControlDb, Reading};
use crate::targets::provider::{LiveFleet, Provider, ProviderError, RefreshTarget};

// `@slugs` and `@tenants` say where the rows of the tenants refreshed are chosen: in a plan
// of some tenants by their slugs ($1, looked up by key, whatever the fleet), and in a full
// plan not at all (each table read whole, which at 10,000 tenants costs less than looking
// every one up).
const REGISTRY: &str = "SELECT CAST({json_list}({json_array}(tenant_id, slug, name, plan, region, \
     locale, isolation, {json_column labels}, lifecycle, step)) AS TEXT) FROM {schema}.tenants \
     WHERE @slugs";
const OWNERS: &str = "SELECT CAST({json_list}({json_array}(tenant_id, email)) AS TEXT) \
     FROM {schema}.memberships WHERE role = 'owner' AND @tenants";
const FLAGS: &str = "SELECT CAST({json_map}(tenant_id, {json_column m}) AS TEXT) FROM \
     (SELECT tenant_id, {json_map}(flag, {json_bool enabled}) AS m \
      FROM {schema}.feature_flags WHERE @tenants GROUP BY tenant_id) AS f";
const QUOTAS: &str = "SELECT CAST({json_map}(tenant_id, {json_column m}) AS TEXT) FROM \
     (SELECT tenant_id, {json_map}(name, value) AS m FROM {schema}.quotas \
      WHERE @tenants GROUP BY tenant_id) AS q";

/// A statement above, choosing the rows of `slugs` (a JSON list), or every row.
fn chosen(dialect: &Dialect, doing: &'static str, sql: &str, slugs: Option<&str>) -> Statement {
    let (by_slug, by_id) = match slugs {
        Some(_) => (
            "slug IN ({each $1})",
            "tenant_id IN (SELECT tenant_id FROM {schema}.tenants WHERE slug IN ({each $1}))",
        ),
        None => ("true", "true"),
    };
    let sql = sql.replace("@slugs", by_slug).replace("@tenants", by_id);
    let statement = Statement::new(dialect, doing, &sql);
    match slugs {
        Some(slugs) => statement.text(slugs),
        None => statement,
    }
}

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
    let slugs = (!live.whole_fleet).then(|| {
        serde_json::to_string(&targets.iter().map(|t| t.slug.as_str()).collect::<Vec<_>>())
            .expect("slugs serialize")
    });
    let read = |doing, sql| chosen(d, doing, sql, slugs.as_deref());
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

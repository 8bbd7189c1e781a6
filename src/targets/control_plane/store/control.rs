//! The control plane's rules, once for both servers: a tenant's registry row, its owner's
//! membership, its flags and quotas, the events that announce their changes, the step a
//! tenant is at, its hooks' outputs, the deletion audit, its smoke tests and the purge of
//! its rows. Each is a statement or two, written for one tenant or many alike.

use serde_json::{json, Value};

use crate::clients::sql::{read_rows, Pool, Statement, Tx};
use crate::model::attrs::Attrs;
use crate::model::audit::AuditEntry;
use crate::model::change::ResourceChange;
use crate::model::health::CheckOutcome;
use crate::model::lifecycle::Lifecycle;
use crate::model::resource::{Key, Kind};
use crate::slug::Slug;
use crate::targets::control_plane::rows;
use crate::targets::control_plane::store::ControlDb;
use crate::targets::provider::{
    desired_of, events, unmanaged, Provider, ProviderError, StepContext, TogetherFailed,
};

/// `change` made in `tx`; the attributes it leaves once `tx` commits.
pub async fn apply_in<C: ControlDb + Provider>(
    db: &C,
    tx: &mut Tx,
    ctx: &StepContext<'_>,
    change: &ResourceChange,
) -> Result<Attrs, ProviderError> {
    let d = db.dialect();
    let tenant_id = ctx.tenant_id()?;
    let desired = desired_of(change)?;
    let a = &desired.attrs;
    match change.key.kind {
        Kind::REGISTRY => {
            update_registry(db, tx, &[(tenant_id, a)]).await?;
        }
        Kind::OWNER => {
            Statement::new(
                d,
                "write the owner membership",
                "INSERT INTO {schema}.memberships (tenant_id, role, email, created_at)
                 VALUES ($1, 'owner', $2, {now})
                 ON CONFLICT (tenant_id, role) DO UPDATE SET email = excluded.email",
            )
            .text(tenant_id)
            .text(a.str("email"))
            .execute(&mut *tx)
            .await?;
        }
        Kind::FEATURES | Kind::QUOTAS => {
            // The whole map is replaced: its names and values travel as one JSON object.
            // Table and column names are these constants, never input.
            let (table, key, value, of) = if change.key.kind == Kind::FEATURES {
                ("feature_flags", "flag", "enabled", "BOOLEAN")
            } else {
                ("quotas", "name", "value", "BIGINT")
            };
            let map: serde_json::Map<String, Value> =
                a.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
            let map = Value::Object(map);
            let rows = format!("SELECT $1, key, CAST(value AS {of}) FROM {{entries $2}}");
            if d.writes_in_with() {
                // One statement: each entry written over its row, the rows of names no
                // longer in the map deleted. (A delete and an insert of the same keys in
                // one statement would collide: the insert still meets the deleted rows.)
                Statement::new(
                    d,
                    "write the tenant's map",
                    &format!(
                        "WITH put AS (INSERT INTO {{schema}}.{table} (tenant_id, {key}, {value}) {rows}
                           ON CONFLICT (tenant_id, {key}) DO UPDATE SET {value} = excluded.{value}
                           RETURNING {key})
                         DELETE FROM {{schema}}.{table}
                         WHERE tenant_id = $1 AND {key} NOT IN (SELECT {key} FROM put)"
                    ),
                )
                .text(tenant_id)
                .json(&map)
                .execute(&mut *tx)
                .await?;
            } else {
                Statement::new(
                    d,
                    "clear the tenant's map",
                    &format!("DELETE FROM {{schema}}.{table} WHERE tenant_id = $1"),
                )
                .text(tenant_id)
                .execute(&mut *tx)
                .await?;
                Statement::new(
                    d,
                    "write the tenant's map",
                    &format!("INSERT INTO {{schema}}.{table} (tenant_id, {key}, {value}) {rows}"),
                )
                .text(tenant_id)
                .json(&map)
                .execute(&mut *tx)
                .await?;
            }
        }
        other => return Err(unmanaged(db, other)),
    }
    // A change to a live tenant is announced in the same transaction that makes it, so the
    // event exists exactly when the change does.
    if events::announces_update(ctx, change) {
        let event = events::new(
            ctx,
            tenant_id,
            events::UPDATED,
            events::update_detail(change),
        );
        insert_events(db, tx, &[(tenant_id, &event)]).await?;
    }
    let mut attrs = a.clone();
    if change.key.kind == Kind::REGISTRY {
        // The lifecycle moves in its own step, at the end of the tenant's run.
        attrs.insert("lifecycle", json!(ctx.lifecycle.as_str()));
    }
    Ok(attrs)
}

/// Each of `changes` made, in one transaction; the attributes each leaves.
pub async fn apply_all<C: ControlDb + Provider>(
    db: &C,
    ctx: &StepContext<'_>,
    changes: &[ResourceChange],
) -> Result<Vec<Attrs>, TogetherFailed> {
    let failed = |at| move |error| TogetherFailed { at, error };
    let mut tx = db
        .tables()
        .await
        .map_err(failed(0))?
        .begin()
        .await
        .map_err(failed(0))?;
    let mut out = Vec::with_capacity(changes.len());
    for (at, change) in changes.iter().enumerate() {
        out.push(
            apply_in(db, &mut tx, ctx, change)
                .await
                .map_err(failed(at))?,
        );
    }
    tx.commit().await.map_err(failed(changes.len() - 1))?;
    Ok(out)
}

/// Registry rows set to `attrs` (name, plan, region, locale, isolation, labels), one
/// tenant's or many, in one statement. Returns how many rows it found.
pub async fn update_registry<C: ControlDb + ?Sized>(
    db: &C,
    tx: &mut Tx,
    rows: &[(&str, &Attrs)],
) -> Result<u64, ProviderError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let rows: Vec<Value> = rows
        .iter()
        .map(|(id, a)| {
            json!([
                id,
                a.str("name"),
                a.str("plan"),
                a.str("region"),
                a.str("locale"),
                a.str("isolation"),
                a.get("labels").cloned().unwrap_or(json!({})).to_string(),
            ])
        })
        .collect();
    Statement::new(
        db.dialect(),
        "update the registry",
        "UPDATE {schema}.tenants AS t SET name = u.name, plan = u.plan, region = u.region,
           locale = u.locale, isolation = u.isolation, labels = {json u.labels},
           updated_at = {now}
         FROM {rows $1 tenant_id name plan region locale isolation labels} AS u
         WHERE t.tenant_id = u.tenant_id",
    )
    .rows(rows)
    .execute(tx)
    .await
}

/// The start of every write to the outbox: its columns, in the order each writer selects them.
const OUTBOX_INSERT: &str =
    "INSERT INTO {schema}.outbox (event_id, tenant_id, type, payload, created_at)";

/// Events written to the outbox in the order given, one tenant's or many, in one statement.
pub async fn insert_events<C: ControlDb + ?Sized>(
    db: &C,
    tx: &mut Tx,
    events: &[(&str, &events::Event)],
) -> Result<(), ProviderError> {
    if events.is_empty() {
        return Ok(());
    }
    let rows: Vec<Value> = events
        .iter()
        .map(|(tenant_id, e)| {
            json!([
                e.id,
                tenant_id,
                e.payload["type"],
                e.payload.to_string(),
                e.at
            ])
        })
        .collect();
    Statement::new(
        db.dialect(),
        "write to the outbox",
        &format!(
            "{OUTBOX_INSERT}
             SELECT id, tenant_id, type, {{json payload}}, {{now}}
             FROM {{rows $1 id tenant_id type payload}} AS e WHERE true ORDER BY i"
        ),
    )
    .rows(rows)
    .execute(tx)
    .await
    .map(drop)
}

/// The tenant's registry row, made in `provisioning` unless it exists; its id either way. A
/// rerun after a crash finds the row and keeps its id, and an insert does nothing if
/// another run got there first.
pub async fn register<C: ControlDb + ?Sized>(
    db: &C,
    ctx: &StepContext<'_>,
    a: &Attrs,
) -> Result<String, ProviderError> {
    let d = db.dialect();
    let slug = ctx.tenant.slug.as_str();
    let insert =
        "INSERT INTO {schema}.tenants (tenant_id, slug, name, plan, region, locale, isolation,
           labels, lifecycle, step, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, {json $8}, 'provisioning', 'registry', {now}, {now})
         ON CONFLICT (slug) DO NOTHING";
    let bound = |text: &str| {
        Statement::new(d, "create the registry row", text)
            .text(uuid::Uuid::new_v4().to_string())
            .text(slug)
            .text(a.str("name"))
            .text(a.str("plan"))
            .text(a.str("region"))
            .text(a.str("locale"))
            .text(a.str("isolation"))
            .json(a.get("labels").unwrap_or(&json!({})))
    };
    let read = |slug: &str| format!("SELECT tenant_id FROM {{schema}}.tenants WHERE slug = {slug}");
    let row = if d.writes_in_with() {
        // One statement and one round trip: the row inserted, or the one there already
        // (the insert's own row is not in the statement's snapshot, the other one is).
        bound(&format!(
            "WITH made AS ({insert} RETURNING tenant_id)
             SELECT tenant_id FROM made UNION ALL ({})",
            read("$2")
        ))
        .first(&db.tables().await?)
        .await?
    } else {
        let mut tx = db.tables().await?.begin().await?;
        bound(insert).execute(&mut tx).await?;
        let row = Statement::new(d, "read the registry", &read("$1"))
            .text(slug)
            .first(&mut tx)
            .await?;
        tx.commit().await?;
        row
    };
    let id = row
        .ok_or(ProviderError::NoRegistryRow)?
        .text(0)
        .map_err(ProviderError::sql("read the registry"))?;
    Ok(id)
}

/// One event of the tenant's, in a transaction of its own.
pub async fn emit_event<C: ControlDb + ?Sized>(
    db: &C,
    ctx: &StepContext<'_>,
    kind: &str,
    detail: Value,
) -> Result<(), ProviderError> {
    let tenant_id = ctx.tenant_id()?;
    let event = events::new(ctx, tenant_id, kind, detail);
    let mut tx = db.tables().await?.begin().await?;
    insert_events(db, &mut tx, &[(tenant_id, &event)]).await?;
    tx.commit().await
}

/// An event of the fleet (no tenant's: its tenant id is empty), once by its id.
pub async fn emit_fleet_event<C: ControlDb + ?Sized>(
    db: &C,
    event_id: &str,
    kind: &str,
    detail: Value,
) -> Result<(), ProviderError> {
    let at = crate::model::lifecycle::now();
    let mut payload = json!({
        "event_id": event_id,
        "type": kind,
        "occurred_at": at,
    });
    if let (Value::Object(p), Value::Object(d)) = (&mut payload, detail) {
        p.extend(d);
    }
    let mut tx = db.tables().await?.begin().await?;
    Statement::new(
        db.dialect(),
        "write a fleet event to the outbox",
        "INSERT INTO {schema}.outbox (event_id, tenant_id, type, payload, created_at)
         VALUES ($1, '', $2, {json $3}, {now}) ON CONFLICT (event_id) DO NOTHING",
    )
    .text(event_id)
    .text(kind)
    .json(&payload)
    .execute(&mut tx)
    .await?;
    tx.commit().await
}

pub async fn set_outputs<C: ControlDb + ?Sized>(
    db: &C,
    tenant_id: &str,
    outputs: &std::collections::BTreeMap<String, String>,
) -> Result<(), ProviderError> {
    Statement::new(
        db.dialect(),
        "record the hooks' outputs",
        "UPDATE {schema}.tenants SET outputs = {json $1} WHERE tenant_id = $2",
    )
    .json(&json!(outputs))
    .text(tenant_id)
    .execute(&db.tables().await?)
    .await
    .map(drop)
}

pub async fn set_step<C: ControlDb + ?Sized>(
    db: &C,
    tenant_id: &str,
    step: Option<&str>,
) -> Result<(), ProviderError> {
    Statement::new(
        db.dialect(),
        "record the current step",
        "UPDATE {schema}.tenants SET step = $1 WHERE tenant_id = $2",
    )
    .maybe_text(step)
    .text(tenant_id)
    .execute(&db.tables().await?)
    .await
    .map(drop)
}

/// Marks the current step of several tenants in one statement, each its own (`None` clears
/// it): the tenants in flight, whose markers are written together.
pub async fn set_steps<C: ControlDb + ?Sized>(
    db: &C,
    steps: &[(String, Option<String>)],
) -> Result<(), ProviderError> {
    let rows: Vec<Value> = steps.iter().map(|(id, step)| json!([id, step])).collect();
    Statement::new(
        db.dialect(),
        "record the current steps",
        "UPDATE {schema}.tenants SET step = s.step FROM {rows $1 tenant_id step} AS s
         WHERE {schema}.tenants.tenant_id = s.tenant_id",
    )
    .rows(rows)
    .execute(&db.tables().await?)
    .await
    .map(drop)
}

/// The audit rows of purges that begin, one tenant's or many, each tenant's step set to
/// `purge` with them; a row written before is left as it is.
pub async fn write_audits<C: ControlDb + ?Sized>(
    db: &C,
    entries: &[&AuditEntry],
) -> Result<(), ProviderError> {
    let d = db.dialect();
    let mut tx = db.tables().await?.begin().await?;
    Statement::new(
        d,
        "record the current step",
        "UPDATE {schema}.tenants SET step = 'purge' WHERE tenant_id IN ({each $1})",
    )
    .list(entries.iter().map(|e| &e.tenant_id))
    .execute(&mut tx)
    .await?;
    let rows: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!([
                e.tenant_id,
                e.slug,
                e.address,
                e.resource,
                e.holds,
                e.erasure,
                e.export,
                e.export_sha256,
                e.export_until,
                e.git_commit,
                e.run_by,
                e.started_at
            ])
        })
        .collect();
    Statement::new(
        d,
        "write the deletion audit",
        "INSERT INTO {schema}.deletion_audit (tenant_id, slug, address, resource, holds, erasure,
           export, export_sha256, export_until, git_commit, run_by, started_at)
         SELECT tenant_id, slug, address, resource, holds, CAST(erasure AS BOOLEAN),
           export, export_sha256, export_until, git_commit, run_by, started_at
         FROM {rows $1 tenant_id slug address resource holds erasure export export_sha256 export_until git_commit run_by started_at} AS a
         WHERE true ORDER BY i
         ON CONFLICT (tenant_id, address) DO NOTHING",
    )
    .rows(rows)
    .execute(&mut tx)
    .await?;
    tx.commit().await
}

/// The audit, of one tenant or of all, oldest first.
pub async fn audit_log<C: ControlDb + ?Sized>(
    db: &C,
    pool: &Pool,
    slug: Option<&Slug>,
) -> Result<Vec<AuditEntry>, ProviderError> {
    let rows = Statement::new(
        db.dialect(),
        "read the deletion audit",
        "SELECT tenant_id, slug, address, resource, holds, erasure, export, export_sha256,
           export_until, git_commit, run_by, started_at, purged_at
         FROM {schema}.deletion_audit WHERE CAST($1 AS TEXT) IS NULL OR slug = $1 ORDER BY id",
    )
    .maybe_text(slug.map(Slug::as_str))
    .fetch(pool)
    .await?;
    read_rows(&rows, "read the deletion audit", |r| {
        Ok(AuditEntry {
            tenant_id: r.text(0)?,
            slug: r.text(1)?,
            address: r.text(2)?,
            resource: r.text(3)?,
            holds: r.text(4)?,
            erasure: r.bool(5)?,
            export: r.maybe_text(6)?,
            export_sha256: r.maybe_text(7)?,
            export_until: r.maybe_text(8)?,
            git_commit: r.maybe_text(9)?,
            run_by: r.text(10)?,
            started_at: r.text(11)?,
            purged_at: r.maybe_text(12)?,
        })
    })
}

/// The tenant's rows of `key`'s kind deleted.
pub async fn purge<C: ControlDb + Provider>(
    db: &C,
    ctx: &StepContext<'_>,
    key: &Key,
) -> Result<(), ProviderError> {
    let table = rows::table_of(key.kind).ok_or_else(|| unmanaged(db, key.kind))?;
    // The table is one of three constants.
    Statement::new(
        db.dialect(),
        "purge the tenant's rows",
        &format!("DELETE FROM {{schema}}.{table} WHERE tenant_id = $1"),
    )
    .text(ctx.tenant_id()?)
    .execute(&db.tables().await?)
    .await
    .map(drop)
}

/// The control plane's smoke tests: the registry row read back by the tenant's id, and the
/// owner's membership, in one statement.
pub async fn smoke<C: ControlDb + ?Sized>(db: &C, ctx: &StepContext<'_>) -> Vec<CheckOutcome> {
    let id = ctx.tenant_id.unwrap_or_default();
    let started = std::time::Instant::now();
    let read = async {
        let row = Statement::new(
            db.dialect(),
            "read the control plane back",
            "SELECT (SELECT slug FROM {schema}.tenants WHERE tenant_id = $1),
               (SELECT email FROM {schema}.memberships WHERE tenant_id = $1 AND role = 'owner')",
        )
        .text(id)
        .first(&db.tables().await?)
        .await?;
        let read = |row: &crate::clients::sql::Row| Ok((row.maybe_text(0)?, row.maybe_text(1)?));
        row.map(|r| read(&r))
            .transpose()
            .map_err(ProviderError::sql("read the control plane back"))
            .map(Option::unwrap_or_default)
    }
    .await;
    rows::smoke_verdicts(ctx, started, read)
}

/// Moves the tenants `ids` to `to`: their rows locked (in one order) and read as they were,
/// each moved unless it is there already, and, for the tombstone, the owner's email taken out
/// of the events kept (it holds no personal data, and neither do they). Returns the id and
/// former lifecycle of each tenant moved; a tenant with no registry row is not among them.
pub async fn move_lifecycle<C: ControlDb + ?Sized>(
    db: &C,
    tx: &mut Tx,
    ids: &[&str],
    to: Lifecycle,
) -> Result<Vec<(String, Lifecycle)>, ProviderError> {
    let d = db.dialect();
    let rows = Statement::new(
        d,
        "read the lifecycle",
        "SELECT tenant_id, lifecycle FROM {schema}.tenants WHERE tenant_id IN ({each $1})
         ORDER BY tenant_id {locked}",
    )
    .list(ids)
    .fetch(&mut *tx)
    .await?;
    let moving: Vec<(String, Lifecycle)> = read_rows(&rows, "read the lifecycle", |r| {
        Ok((r.text(0)?, r.text(1)?))
    })?
    .into_iter()
    .map(|(id, was)| (id, Lifecycle::parse(&was).unwrap_or_default()))
    .filter(|(_, was)| *was != to)
    .collect();
    if moving.is_empty() {
        return Ok(moving);
    }
    Statement::new(
        d,
        "update the lifecycle",
        "UPDATE {schema}.tenants SET lifecycle = $1, step = NULL, updated_at = {now},
           deprovisioned_at = CASE WHEN $1 = 'deprovisioned' THEN {now} ELSE deprovisioned_at END
         WHERE tenant_id IN ({each $2})",
    )
    .text(to.as_str())
    .list(moving.iter().map(|(id, _)| id))
    .execute(&mut *tx)
    .await?;
    if to == Lifecycle::Deprovisioned {
        Statement::new(
            d,
            "erase the owner's email from the events",
            "UPDATE {schema}.outbox SET payload = {erase payload owner_email}
             WHERE tenant_id IN ({each $1}) AND payload ->> 'owner_email' IS NOT NULL",
        )
        .list(moving.iter().map(|(id, _)| id))
        .execute(&mut *tx)
        .await?;
    }
    Ok(moving)
}

/// The tenant's move to `to` made in `tx`, with its events; nothing when it is there
/// already, an error when it has no registry row.
pub async fn transition_in<C: ControlDb + ?Sized>(
    db: &C,
    tx: &mut Tx,
    ctx: &StepContext<'_>,
    to: Lifecycle,
) -> Result<(), ProviderError> {
    let tenant_id = ctx.tenant_id()?;
    let moved = move_lifecycle(db, tx, &[tenant_id], to).await?;
    let Some((_, from)) = moved.into_iter().next() else {
        // There already, or no registry row at all, which is an error.
        Statement::new(
            db.dialect(),
            "read the lifecycle",
            "SELECT 1 FROM {schema}.tenants WHERE tenant_id = $1",
        )
        .text(tenant_id)
        .first(&mut *tx)
        .await?
        .ok_or(ProviderError::NoRegistryRow)?;
        return Ok(());
    };
    let events: Vec<events::Event> = events::for_transition(from, to)?
        .iter()
        .map(|&kind| {
            events::new(
                ctx,
                tenant_id,
                kind,
                events::transition_detail(ctx, from, to),
            )
        })
        .collect();
    let events: Vec<(&str, &events::Event)> = events.iter().map(|e| (tenant_id, e)).collect();
    insert_events(db, tx, &events).await
}

/// [`transition_in`] in a transaction of its own, or as one statement where the server
/// writes inside `WITH` (Postgres).
pub async fn transition<C: ControlDb + ?Sized>(
    db: &C,
    ctx: &StepContext<'_>,
    to: Lifecycle,
) -> Result<(), ProviderError> {
    // The move to deprovisioned keeps its transaction: it also takes the owner's email out
    // of the tenant's events.
    if db.dialect().writes_in_with() && to != Lifecycle::Deprovisioned {
        return transition_at_once(db, ctx, to).await;
    }
    let mut tx = db.tables().await?.begin().await?;
    transition_in(db, &mut tx, ctx, to).await?;
    tx.commit().await
}

/// [`transition_in`] as one statement, one round trip where its transaction took five: the
/// registry row is locked and read, moved, and the move's events written. Which events
/// depends on where the row is, so those of every move to `to` it may be making are made
/// here, by where it moves from, and the statement writes the ones of the move it makes.
async fn transition_at_once<C: ControlDb + ?Sized>(
    db: &C,
    ctx: &StepContext<'_>,
    to: Lifecycle,
) -> Result<(), ProviderError> {
    let tenant_id = ctx.tenant_id()?;
    let mut moves = serde_json::Map::new();
    for from in Lifecycle::ALL.into_iter().filter(|&from| from != to) {
        let Ok(kinds) = events::for_transition(from, to) else {
            continue;
        };
        let rows = kinds
            .iter()
            .map(|&kind| {
                let e = events::new(
                    ctx,
                    tenant_id,
                    kind,
                    events::transition_detail(ctx, from, to),
                );
                json!([e.id, kind, e.payload.to_string()])
            })
            .collect();
        moves.insert(from.as_str().to_string(), Value::Array(rows));
    }
    let row = Statement::new(
        db.dialect(),
        "move the lifecycle",
        &format!(
            "WITH was AS (SELECT lifecycle FROM {{schema}}.tenants WHERE tenant_id = $1 FOR UPDATE),
         moved AS (UPDATE {{schema}}.tenants t SET lifecycle = $2, step = NULL, updated_at = now()
                   FROM was WHERE t.tenant_id = $1 AND CAST($3 AS jsonb) ? was.lifecycle
                   RETURNING was.lifecycle AS was),
         sent AS ({OUTBOX_INSERT}
                  SELECT e.r->>0, $1, e.r->>1, CAST(e.r->>2 AS jsonb), now()
                  FROM moved, jsonb_array_elements(CAST($3 AS jsonb) -> moved.was)
                    WITH ORDINALITY AS e (r, n)
                  ORDER BY e.n)
         SELECT lifecycle FROM was"
        ),
    )
    .text(tenant_id)
    .text(to.as_str())
    .json(&Value::Object(moves))
    .first(&db.tables().await?)
    .await?
    .ok_or(ProviderError::NoRegistryRow)?;
    let was = row
        .text(0)
        .map_err(ProviderError::sql("read the lifecycle"))?;
    match Lifecycle::parse(&was) {
        // There already, or moved from there.
        Some(from) if from == to || events::for_transition(from, to).is_ok() => Ok(()),
        // Not moved: no move from there to `to` is planned.
        _ => Err(ProviderError::Unplanned(format!(
            "cannot move a tenant from {was} to {to}"
        ))),
    }
}

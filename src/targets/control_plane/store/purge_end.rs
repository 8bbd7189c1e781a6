//! The end of a purge in the control plane, in one transaction: the tenant's rows, the
//! completion of its audit rows, its tombstone, its move and their events. A control plane
//! may end the purges that come at the same moment together ([`write_ends`]), in one
//! transaction of a statement of each kind for the whole batch: a mass purge's drops make
//! the server plan each statement again, in every session, so a statement per batch instead
//! of one per tenant is what the batch saves, and a commit.
//!
//! Only the plain case goes together. A tenant that is not where its plan says, or a batch
//! that fails (rolled back whole, it changed nothing), is answered `Together::Alone` by the
//! queue, and the tenant's own call does its part and says what went wrong.

use serde_json::json;

use crate::clients::group_commit::Together;
use crate::clients::sql::{execute_together, Statement, Tx};
use crate::model::attrs::Attrs;
use crate::model::lifecycle::{now, Lifecycle};
use crate::model::resource::Kind;
use crate::targets::control_plane::rows;
use crate::targets::control_plane::store::{control as store, ControlDb};
use crate::targets::provider::{
    desired_of, events, unmanaged, Provider, ProviderError, PurgeEnd, StepContext,
};

/// A tenant whose purge ends: the control-plane tables its rows go from, and the addresses
/// whose audit rows are completed.
struct Ending<'a> {
    tenant_id: &'a str,
    tables: &'a [&'static str],
    audited: &'a [String],
}

/// The rows of the tenants of `ends` deleted and their audit rows completed, in `tx`: a
/// statement per table and one for the audit, for all of them, sent together.
async fn delete_and_complete<C: ControlDb + ?Sized>(
    db: &C,
    tx: &mut Tx,
    ends: &[Ending<'_>],
) -> Result<(), ProviderError> {
    let mut tables: Vec<&'static str> =
        ends.iter().flat_map(|e| e.tables.iter().copied()).collect();
    tables.sort_unstable();
    tables.dedup();
    let mut statements = Vec::new();
    for table in tables {
        let of = ends
            .iter()
            .filter(|e| e.tables.contains(&table))
            .map(|e| e.tenant_id);
        // The table is one of the constants of `rows::table_of`.
        statements.push(
            Statement::new(
                db.dialect(),
                "purge the tenants' control-plane rows",
                &format!("DELETE FROM {{schema}}.{table} WHERE tenant_id IN ({{each $1}})"),
            )
            .list(of),
        );
    }
    let audited: Vec<serde_json::Value> = ends
        .iter()
        .flat_map(|e| e.audited.iter().map(|a| json!([e.tenant_id, a])))
        .collect();
    if !audited.is_empty() {
        statements.push(
            Statement::new(
                db.dialect(),
                "complete the deletion audit",
                "UPDATE {schema}.deletion_audit SET purged_at = $1
                 WHERE purged_at IS NULL
                   AND (tenant_id, address) IN (SELECT c.tenant_id, c.address FROM {rows $2 tenant_id address} AS c)",
            )
            .text(now())
            .rows(audited),
        );
    }
    execute_together(
        tx,
        "purge the control-plane rows and complete the deletion audit",
        statements,
    )
    .await
}

/// [`crate::targets::provider::ControlPlane::end_purge`] for one tenant, in one transaction.
pub async fn end_purge<C: ControlDb + Provider>(
    db: &C,
    ctx: &StepContext<'_>,
    end: &PurgeEnd<'_>,
) -> Result<Option<Attrs>, ProviderError> {
    let tables = end
        .rows
        .iter()
        .map(|key| rows::table_of(key.kind).ok_or_else(|| unmanaged(db, key.kind)))
        .collect::<Result<Vec<_>, _>>()?;
    let ending = Ending {
        tenant_id: ctx.tenant_id()?,
        tables: &tables,
        audited: end.audited,
    };
    let mut tx = db.tables().await?.begin().await?;
    delete_and_complete(db, &mut tx, &[ending]).await?;
    let attrs = match end.tombstone {
        Some(change) => Some(store::apply_in(db, &mut tx, ctx, change).await?),
        None => None,
    };
    if let Some(to) = end.to {
        store::transition_in(db, &mut tx, ctx, to).await?;
    }
    tx.commit().await?;
    Ok(attrs)
}

/// The end of one tenant's purge, owned, as it goes into a batch.
pub struct EndOfPurge {
    tenant_id: String,
    /// The control-plane tables its rows are deleted from.
    tables: Vec<&'static str>,
    audited: Vec<String>,
    /// The registry row's attributes as its tombstone leaves them.
    tombstone: Option<Attrs>,
    /// Where the tenant is before the move: what the state records of a tombstone.
    at: Lifecycle,
    /// The move: where the tenant must be now, and where it goes.
    moves: Option<(Lifecycle, Lifecycle)>,
    /// The events of the tombstone's change and of the move, in order.
    events: Vec<events::Event>,
}

impl EndOfPurge {
    /// `end` as a batch item, or `None` where it is not the plain case (a tombstone of
    /// something other than the registry row, a move the lifecycle does not allow).
    pub fn of(ctx: &StepContext<'_>, end: &PurgeEnd<'_>) -> Option<EndOfPurge> {
        let tenant_id = ctx.tenant_id().ok()?.to_string();
        let tables = end
            .rows
            .iter()
            .map(|key| rows::table_of(key.kind))
            .collect::<Option<Vec<_>>>()?;
        let mut events = Vec::new();
        let tombstone = match end.tombstone {
            None => None,
            Some(change) if change.key.kind == Kind::REGISTRY => {
                let a = &desired_of(change).ok()?.attrs;
                if events::announces_update(ctx, change) {
                    let detail = events::update_detail(change);
                    events.push(events::new(ctx, &tenant_id, events::UPDATED, detail));
                }
                Some(a.clone())
            }
            Some(_) => return None,
        };
        let moves = match end.to {
            None => None,
            Some(to) => {
                let from = ctx.lifecycle;
                for &kind in events::for_transition(from, to).ok()? {
                    let detail = events::transition_detail(ctx, from, to);
                    events.push(events::new(ctx, &tenant_id, kind, detail));
                }
                Some((from, to))
            }
        };
        Some(EndOfPurge {
            tenant_id,
            tables,
            audited: end.audited.to_vec(),
            tombstone,
            at: ctx.lifecycle,
            moves,
            events,
        })
    }
}

/// The ends of the purges in `items`, in one transaction: each tenant's rows, the completion
/// of its audit rows, its tombstone, its move and their events. Every tenant that moves must
/// be where its item says, or nothing is written. Answers each item with the attributes of
/// its tombstone.
pub async fn write_ends<C: ControlDb + ?Sized>(
    db: &C,
    items: Vec<EndOfPurge>,
) -> Result<Vec<Together<Option<Attrs>>>, ProviderError> {
    let mut tx = db.tables().await?.begin().await?;
    let ends: Vec<Ending> = items
        .iter()
        .map(|i| Ending {
            tenant_id: &i.tenant_id,
            tables: &i.tables,
            audited: &i.audited,
        })
        .collect();
    delete_and_complete(db, &mut tx, &ends).await?;
    write_tombstones(db, &mut tx, &items).await?;
    write_events(db, &mut tx, &items).await?;
    move_all(db, &mut tx, &items).await?;
    tx.commit().await?;
    Ok(items
        .into_iter()
        .map(|item| {
            Together::Done(item.tombstone.map(|mut attrs| {
                attrs.insert("lifecycle", json!(item.at.as_str()));
                attrs
            }))
        })
        .collect())
}

async fn write_tombstones<C: ControlDb + ?Sized>(
    db: &C,
    tx: &mut Tx,
    items: &[EndOfPurge],
) -> Result<(), ProviderError> {
    let rows: Vec<(&str, &Attrs)> = items
        .iter()
        .filter_map(|i| Some((i.tenant_id.as_str(), i.tombstone.as_ref()?)))
        .collect();
    if store::update_registry(db, tx, &rows).await? != rows.len() as u64 {
        return Err(ProviderError::Unplanned(
            "a tenant of the batch has no registry row".into(),
        ));
    }
    Ok(())
}

/// The events, in the order of the items and of each item's own.
async fn write_events<C: ControlDb + ?Sized>(
    db: &C,
    tx: &mut Tx,
    items: &[EndOfPurge],
) -> Result<(), ProviderError> {
    let events: Vec<(&str, &events::Event)> = items
        .iter()
        .flat_map(|i| i.events.iter().map(|e| (i.tenant_id.as_str(), e)))
        .collect();
    store::insert_events(db, tx, &events).await
}

/// The moves, one statement for each destination; every tenant must have been where
/// its item says, and is moved.
async fn move_all<C: ControlDb + ?Sized>(
    db: &C,
    tx: &mut Tx,
    items: &[EndOfPurge],
) -> Result<(), ProviderError> {
    let mut destinations: Vec<Lifecycle> = items.iter().filter_map(|i| Some(i.moves?.1)).collect();
    destinations.sort_unstable_by_key(|to| to.as_str());
    destinations.dedup();
    for to in destinations {
        let moving: Vec<(&str, Lifecycle)> = items
            .iter()
            .filter_map(|i| match i.moves {
                Some((from, t)) if t == to => Some((i.tenant_id.as_str(), from)),
                _ => None,
            })
            .collect();
        let ids: Vec<&str> = moving.iter().map(|(id, _)| *id).collect();
        let moved = store::move_lifecycle(db, tx, &ids, to).await?;
        let as_planned = moved.len() == moving.len()
            && moved
                .iter()
                .all(|(id, was)| moving.iter().any(|(m, from)| m == id && from == was));
        if !as_planned {
            return Err(ProviderError::Unplanned(
                "a tenant of the batch is not where its plan says".into(),
            ));
        }
    }
    Ok(())
}

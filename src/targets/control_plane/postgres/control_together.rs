//! The control plane's part of purges that come at the same moment, written together: the
//! audit rows of every tenant whose purge begins in one statement, and the end of every
//! purge (its rows, the audit's completion, the tombstone, the move and its events) in one
//! transaction of a statement of each kind. A mass purge's drops make the server plan each
//! statement again, in every session: one statement per batch instead of one per tenant is
//! what the batch saves, and one commit.
//!
//! Only the plain case goes together. A tenant that is not where its plan says, or a batch
//! that fails (rolled back whole, it changed nothing), is answered `Together::Alone` by the
//! queue, and the tenant's own call does its part and says what went wrong.

use serde_json::json;

use crate::clients::group_commit::Together;
use crate::clients::sql::Tx;
use crate::model::attrs::Attrs;
use crate::model::lifecycle::Lifecycle;
use crate::model::resource::Kind;
use crate::targets::control_plane::postgres::control::{Ending, PgControl};
use crate::targets::control_plane::rows;
use crate::targets::control_plane::store::{control as store, ControlDb};
use crate::targets::provider::{desired_of, events, ProviderError, PurgeEnd, StepContext};

/// The end of one tenant's purge, owned, as it goes into a batch.
pub(crate) struct EndOfPurge {
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
    pub(crate) fn of(ctx: &StepContext<'_>, end: &PurgeEnd<'_>) -> Option<EndOfPurge> {
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

impl PgControl {
    /// The ends of the purges in `items`, in one transaction: each tenant's rows, the
    /// completion of its audit rows, its tombstone, its move and their events. Every
    /// tenant that moves must be where its item says, or nothing is written. Answers each
    /// item with the attributes of its tombstone.
    pub(crate) async fn write_ends(
        &self,
        items: Vec<EndOfPurge>,
    ) -> Result<Vec<Together<Option<Attrs>>>, ProviderError> {
        let mut tx = self.tables().await?.begin().await?;
        let ends: Vec<Ending> = items
            .iter()
            .map(|i| Ending {
                tenant_id: &i.tenant_id,
                tables: &i.tables,
                audited: &i.audited,
            })
            .collect();
        self.delete_and_complete(tx.postgres().expect("a Postgres transaction"), &ends)
            .await?;
        self.write_tombstones(&mut tx, &items).await?;
        self.write_events(&mut tx, &items).await?;
        self.move_all(&mut tx, &items).await?;
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

    async fn write_tombstones(
        &self,
        tx: &mut Tx,
        items: &[EndOfPurge],
    ) -> Result<(), ProviderError> {
        let rows: Vec<(&str, &Attrs)> = items
            .iter()
            .filter_map(|i| Some((i.tenant_id.as_str(), i.tombstone.as_ref()?)))
            .collect();
        if store::update_registry(self, tx, &rows).await? != rows.len() as u64 {
            return Err(ProviderError::Unplanned(
                "a tenant of the batch has no registry row".into(),
            ));
        }
        Ok(())
    }

    /// The events, in the order of the items and of each item's own.
    async fn write_events(&self, tx: &mut Tx, items: &[EndOfPurge]) -> Result<(), ProviderError> {
        let events: Vec<(&str, &events::Event)> = items
            .iter()
            .flat_map(|i| i.events.iter().map(|e| (i.tenant_id.as_str(), e)))
            .collect();
        store::insert_events(self, tx, &events).await
    }

    /// The moves, one statement for each destination; every tenant must have been where
    /// its item says, and is moved.
    async fn move_all(&self, tx: &mut Tx, items: &[EndOfPurge]) -> Result<(), ProviderError> {
        let mut destinations: Vec<Lifecycle> =
            items.iter().filter_map(|i| Some(i.moves?.1)).collect();
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
            let moved = store::move_lifecycle(self, tx, &ids, to).await?;
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
}

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

use serde_json::{json, Value};
use sqlx::PgConnection;

use super::control::PgControl;
use super::server::connection;
use crate::audit::AuditEntry;
use crate::desired::{Attrs, Kind};
use crate::group_commit::Together;
use crate::provider::control_rows;
use crate::provider::{desired_of, events, ProviderError, PurgeEnd, StepContext};
use crate::state::Lifecycle;

/// The most tenants whose audit rows or purge ends go in one transaction.
pub(super) const TOGETHER_TENANTS: usize = 32;

/// The end of one tenant's purge, owned, as it goes into a batch.
pub(super) struct EndOfPurge {
    tenant_id: String,
    /// The control-plane tables its rows are deleted from.
    tables: Vec<&'static str>,
    audited: Vec<String>,
    tombstone: Option<Tombstone>,
    /// The move: where the tenant must be now, and where it goes.
    moves: Option<(Lifecycle, Lifecycle)>,
    /// The events of the tombstone's change and of the move, in order.
    events: Vec<events::Event>,
}

/// A registry row as its tombstone leaves it, and the attributes the state records for it.
struct Tombstone {
    /// Name, plan, region, locale and isolation, in the order of [`REGISTRY_FIELDS`].
    fields: [String; 5],
    labels: Value,
    attrs: Attrs,
}

const REGISTRY_FIELDS: [&str; 5] = ["name", "plan", "region", "locale", "isolation"];

impl EndOfPurge {
    /// `end` as a batch item, or `None` where it is not the plain case (a tombstone of
    /// something other than the registry row, a move the lifecycle does not allow).
    pub(super) fn of(ctx: &StepContext<'_>, end: &PurgeEnd<'_>) -> Option<EndOfPurge> {
        let tenant_id = ctx.tenant_id().ok()?.to_string();
        let tables = end
            .rows
            .iter()
            .map(|key| control_rows::table_of(key.kind))
            .collect::<Option<Vec<_>>>()?;
        let mut events = Vec::new();
        let tombstone = match end.tombstone {
            None => None,
            Some(change) if change.key.kind == Kind::Registry => {
                let a = &desired_of(change).ok()?.attrs;
                if events::announces_update(ctx, change) {
                    let detail = events::update_detail(change);
                    events.push(events::new(ctx, &tenant_id, events::UPDATED, detail));
                }
                let mut attrs = a.clone();
                attrs.insert("lifecycle", json!(ctx.lifecycle.as_str()));
                Some(Tombstone {
                    fields: REGISTRY_FIELDS.map(|f| a.str(f).to_string()),
                    labels: a.get("labels").cloned().unwrap_or(json!({})),
                    attrs,
                })
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
            moves,
            events,
        })
    }
}

impl PgControl {
    /// The one statement that writes audit rows, for one tenant or many.
    pub(super) async fn write_audits(&self, entries: &[&AuditEntry]) -> Result<(), ProviderError> {
        let sql = self.sql(
            "WITH step AS (UPDATE {schema}.tenants SET step = 'purge' WHERE tenant_id = ANY($1))
             INSERT INTO {schema}.deletion_audit (tenant_id, slug, address, resource, holds, erasure, export, export_sha256, export_until, git_commit, run_by, started_at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::boolean[],
                                  $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[])
             ON CONFLICT (tenant_id, address) DO NOTHING",
        );
        let text = |f: fn(&AuditEntry) -> &String| entries.iter().map(|e| f(e)).collect::<Vec<_>>();
        let maybe = |f: fn(&AuditEntry) -> &Option<String>| {
            entries.iter().map(|e| f(e).as_deref()).collect::<Vec<_>>()
        };
        sqlx::query(&sql)
            .bind(text(|e| &e.tenant_id))
            .bind(text(|e| &e.slug))
            .bind(text(|e| &e.address))
            .bind(text(|e| &e.resource))
            .bind(text(|e| &e.holds))
            .bind(entries.iter().map(|e| e.erasure).collect::<Vec<_>>())
            .bind(maybe(|e| &e.export))
            .bind(maybe(|e| &e.export_sha256))
            .bind(maybe(|e| &e.export_until))
            .bind(maybe(|e| &e.git_commit))
            .bind(text(|e| &e.run_by))
            .bind(text(|e| &e.started_at))
            .execute(self.pool().await?)
            .await
            .map_err(ProviderError::sql("write the deletion audit"))
            .map(drop)
    }

    /// The ends of the purges in `items`, in one transaction: each tenant's rows, the
    /// completion of its audit rows, its tombstone, its move and their events. Every
    /// tenant that moves must be where its item says, or nothing is written. Answers each
    /// item with the attributes of its tombstone.
    pub(super) async fn write_ends(
        &self,
        items: Vec<EndOfPurge>,
    ) -> Result<Vec<Together<Option<Attrs>>>, ProviderError> {
        let mut conn = connection(self.pool().await?).await?;
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(ProviderError::sql("begin"))?;
        let ends: Vec<_> = items
            .iter()
            .map(|i| {
                (
                    i.tenant_id.as_str(),
                    i.tables.as_slice(),
                    i.audited.as_slice(),
                )
            })
            .collect();
        self.delete_and_complete(tx.as_mut(), &ends).await?;
        self.write_tombstones(tx.as_mut(), &items).await?;
        self.write_events(tx.as_mut(), &items).await?;
        self.move_all(tx.as_mut(), &items).await?;
        tx.commit().await.map_err(ProviderError::sql("commit"))?;
        Ok(items
            .into_iter()
            .map(|item| Together::Done(item.tombstone.map(|t| t.attrs)))
            .collect())
    }

    /// The control-plane rows of each `(tenant id, tables, addresses)` deleted from those
    /// tables, and its audit rows of those addresses completed (the first time only), in
    /// one statement: for one tenant's purge or many.
    pub(super) async fn delete_and_complete(
        &self,
        tx: &mut PgConnection,
        ends: &[(&str, &[&'static str], &[String])],
    ) -> Result<(), ProviderError> {
        let mut tables: Vec<&'static str> = ends.iter().flat_map(|e| e.1.iter().copied()).collect();
        tables.sort_unstable();
        tables.dedup();
        let mut deletes = String::new();
        for (n, table) in tables.iter().enumerate() {
            deletes += &format!(
                "d{n} AS (DELETE FROM {{schema}}.{table} WHERE tenant_id = ANY(${})), ",
                n + 4
            );
        }
        let sql = self.sql(&format!(
            "WITH {deletes}done AS (SELECT 1)
             UPDATE {{schema}}.deletion_audit a SET purged_at = $1
             FROM unnest($2::text[], $3::text[]) AS c (tenant_id, address)
             WHERE a.tenant_id = c.tenant_id AND a.address = c.address AND a.purged_at IS NULL"
        ));
        let (ids, addresses): (Vec<&str>, Vec<&str>) = ends
            .iter()
            .flat_map(|(id, _, audited)| audited.iter().map(move |a| (*id, a.as_str())))
            .unzip();
        let mut query = sqlx::query(&sql)
            .bind(crate::state::now())
            .bind(ids)
            .bind(addresses);
        for table in &tables {
            let of: Vec<&str> = ends
                .iter()
                .filter(|e| e.1.contains(table))
                .map(|e| e.0)
                .collect();
            query = query.bind(of);
        }
        query.execute(&mut *tx).await.map_err(ProviderError::sql(
            "purge the control-plane rows and complete the deletion audit",
        ))?;
        Ok(())
    }

    async fn write_tombstones(
        &self,
        tx: &mut PgConnection,
        items: &[EndOfPurge],
    ) -> Result<(), ProviderError> {
        let rows: Vec<_> = items
            .iter()
            .filter_map(|i| Some((i.tenant_id.as_str(), i.tombstone.as_ref()?)))
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let sql = self.sql(
            "UPDATE {schema}.tenants t SET name = u.name, plan = u.plan, region = u.region,
               locale = u.locale, isolation = u.isolation, labels = u.labels, updated_at = now()
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[])
               AS u (tenant_id, name, plan, region, locale, isolation, labels)
             WHERE t.tenant_id = u.tenant_id",
        );
        let field = |n: usize| {
            rows.iter()
                .map(|(_, t)| t.fields[n].as_str())
                .collect::<Vec<_>>()
        };
        let done = sqlx::query(&sql)
            .bind(rows.iter().map(|(id, _)| *id).collect::<Vec<_>>())
            .bind(field(0))
            .bind(field(1))
            .bind(field(2))
            .bind(field(3))
            .bind(field(4))
            .bind(rows.iter().map(|(_, t)| &t.labels).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .map_err(ProviderError::sql("update the registry"))?;
        if done.rows_affected() != rows.len() as u64 {
            return Err(ProviderError::Message(
                "a tenant of the batch has no registry row".into(),
            ));
        }
        Ok(())
    }

    /// The events, in the order of the items and of each item's own.
    async fn write_events(
        &self,
        tx: &mut PgConnection,
        items: &[EndOfPurge],
    ) -> Result<(), ProviderError> {
        let events: Vec<(&str, &events::Event)> = items
            .iter()
            .flat_map(|i| i.events.iter().map(|e| (i.tenant_id.as_str(), e)))
            .collect();
        if events.is_empty() {
            return Ok(());
        }
        let sql = self.sql(
            "INSERT INTO {schema}.outbox (event_id, tenant_id, type, payload)
             SELECT id, tenant_id, type, payload
             FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[]) WITH ORDINALITY
               AS e (id, tenant_id, type, payload, i)
             ORDER BY i",
        );
        sqlx::query(&sql)
            .bind(
                events
                    .iter()
                    .map(|(_, e)| e.id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(events.iter().map(|(id, _)| *id).collect::<Vec<_>>())
            .bind(
                events
                    .iter()
                    .map(|(_, e)| e.payload["type"].as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(events.iter().map(|(_, e)| &e.payload).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .map_err(ProviderError::sql("write to the outbox"))
            .map(drop)
    }

    /// The moves, one statement for each destination; every tenant must have been where
    /// its item says, and is moved.
    async fn move_all(
        &self,
        tx: &mut PgConnection,
        items: &[EndOfPurge],
    ) -> Result<(), ProviderError> {
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
            let moved: Vec<(String, String)> = sqlx::query_as(&self.sql(super::control::MOVE))
                .bind(to.as_str())
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await
                .map_err(ProviderError::sql("update the lifecycle"))?;
            let as_planned = moved.len() == moving.len()
                && moved.iter().all(|(id, was)| {
                    moving
                        .iter()
                        .any(|(m, from)| m == id && from.as_str() == was.as_str())
                });
            if !as_planned {
                return Err(ProviderError::Message(
                    "a tenant of the batch is not where its plan says".into(),
                ));
            }
        }
        Ok(())
    }
}

//! The control plane's side of the outbox relay: deliveries made from the outbox, handed out
//! in order per tenant and subscriber, and every attempt recorded.
//!
//! On Postgres, relays may run at once (two cron jobs overlapping, several machines): each
//! claims what it sends with `FOR UPDATE SKIP LOCKED` and a lease, so no delivery is sent by
//! two relays together, and a relay killed mid-delivery leaves its claims to the next one
//! once their lease is over. The local file is one machine's: a claim there is recorded but
//! holds nothing, so the run after a killed relay sends its in-flight events at once.

use async_trait::async_trait;

use crate::clients::sql::{read_rows, Dialect, Pool, Statement, Tx};
use crate::model::outbox::{Attempt, AttemptRow, Due, Filter, Outcome, Row};
use crate::targets::control_plane::store::ControlDb;
use crate::targets::provider::{Outbox, ProviderError};

/// The events delivered to every subscriber before `$1`.
const PRUNABLE: &str = "SELECT d.event_id FROM {schema}.deliveries d
     WHERE d.status = 'delivered' AND d.delivered_at < {time $1}
       AND NOT EXISTS (SELECT 1 FROM {schema}.deliveries e WHERE e.event_id = d.event_id
                       AND (e.status <> 'delivered' OR e.delivered_at >= {time $1}))";

/// How far the outbox can be read with nothing before it still to appear (`{horizon}`).
async fn horizon<C: ControlDb>(db: &C, pool: &Pool) -> Result<String, ProviderError> {
    const WHAT: &str = "read how far the outbox is whole";
    let row = Statement::new(db.dialect(), WHAT, "{horizon}")
        .first(pool)
        .await?;
    let text = row.map(|r| r.text(0)).transpose();
    Ok(text
        .map_err(ProviderError::sql(WHAT))?
        .unwrap_or_else(|| "0".into()))
}

/// A database dumped on one Postgres server and restored on another keeps its rows'
/// transaction ids and its subscribers' marks from the first, above any this server has given
/// out, where they would hide every event written since. Found (each a lookup by index), each
/// such subscriber is marked again by the largest id it was given, which the restore kept
/// true, and read by id once; the rows' ids from the first server are set below every mark,
/// so none is read again by them.
async fn take_back_marks_from_another_server<C: ControlDb>(
    db: &C,
    tx: &mut Tx,
) -> Result<(), ProviderError> {
    let d = db.dialect();
    Statement::new(
        d,
        "mark again a subscriber marked on another server",
        "UPDATE {schema}.subscribers s SET horizon = NULL,
           outbox_id = GREATEST(s.outbox_id, coalesce((SELECT max(x.outbox_id)
             FROM {schema}.deliveries x WHERE x.subscriber = s.name), 0))
         WHERE s.horizon > pg_snapshot_xmax(pg_current_snapshot())",
    )
    .execute(&mut *tx)
    .await?;
    Statement::new(
        d,
        "set aside the transaction ids of another server",
        "UPDATE {schema}.outbox SET tx = CAST('0' AS xid8)
         WHERE tx > pg_snapshot_xmax(pg_current_snapshot())",
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[async_trait]
impl<C: ControlDb> Outbox for C {
    async fn register_subscribers(
        &self,
        subscribers: &[(String, bool)],
    ) -> Result<(), ProviderError> {
        if subscribers.is_empty() {
            return Ok(());
        }
        let d = self.dialect();
        let pool = self.tables().await?;
        let horizon = horizon(self, &pool).await?;
        let mut tx = pool.begin().await?;
        // Once a run, before it reads the outbox: every relay and every apply registers
        // its subscribers first.
        if matches!(d, Dialect::Postgres { .. }) {
            Statement::new(d, "wait for the outbox", "{outbox turn}")
                .execute(&mut tx)
                .await?;
            take_back_marks_from_another_server(self, &mut tx).await?;
        }
        for (name, history) in subscribers {
            // A new subscriber with its history is given every event kept; one without,
            // every event written from about now (on Postgres, from the oldest writer still
            // open, so an event whose id was taken before but which commits after is not
            // lost to it).
            let new = Statement::new(
                d,
                "record a subscriber",
                "INSERT INTO {schema}.subscribers (name, outbox_id)
                 SELECT $1, CASE WHEN $2 THEN 0 ELSE (SELECT coalesce(max(id), 0) FROM {schema}.outbox) END
                 WHERE true ON CONFLICT DO NOTHING RETURNING name",
            )
            .text(name)
            .bool(*history)
            .first(&mut tx)
            .await?
            .is_some();
            if new && !history {
                Statement::new(
                    d,
                    "start a subscriber from now",
                    "UPDATE {schema}.subscribers SET {seen $2} WHERE name = $1",
                )
                .text(name)
                .text(&horizon)
                .execute(&mut tx)
                .await?;
            }
        }
        tx.commit().await
    }

    async fn due_deliveries(
        &self,
        subscribers: &[(String, Vec<String>)],
        now: std::time::SystemTime,
        limit: usize,
    ) -> Result<Vec<Due>, ProviderError> {
        let d = self.dialect();
        let now = d.moment(now);
        let pool = self.tables().await?;
        // Read before the rows it marks are: a row this misses is one the next run reads.
        let horizon = horizon(self, &pool).await?;
        let mut tx = pool.begin().await?;
        // Never beside a prune: it could delete an event this reads again, and leave its
        // delivery made after it without the event.
        Statement::new(d, "wait for the outbox", "{outbox turn}")
            .execute(&mut tx)
            .await?;
        for (name, types) in subscribers {
            // Only the events written since this subscriber's mark: the outbox is read by
            // index from there, never scanned whole. On Postgres that reads again the rows
            // of transactions that were still writing at the last mark, and the deliveries'
            // key keeps the ones given already from being given twice.
            Statement::new(
                d,
                "make the deliveries of new events",
                "INSERT INTO {schema}.deliveries (event_id, subscriber, tenant_id, outbox_id, status, next_at)
                 SELECT o.event_id, s.name, o.tenant_id, o.id, 'pending', o.created_at
                 FROM {schema}.subscribers s JOIN {schema}.outbox o ON {unseen o s}
                 WHERE s.name = $1 AND o.type IN ({each $2})
                 ON CONFLICT DO NOTHING",
            )
            .text(name)
            .list(types)
            .execute(&mut tx)
            .await?;
            Statement::new(
                d,
                "record how far a subscriber was given events",
                "UPDATE {schema}.subscribers SET {seen $2} WHERE name = $1",
            )
            .text(name)
            .text(&horizon)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        // The claim's RETURNING names the claimed table's columns plainly, which SQLite asks
        // for; the subquery's columns are renamed so Postgres finds no two of one name.
        let rows = Statement::new(
            d,
            "claim the deliveries due",
            "WITH due AS (
               SELECT d.event_id AS due_event, d.subscriber AS due_subscriber
               FROM {schema}.deliveries d
               JOIN {schema}.subscribers s ON s.name = d.subscriber AND s.disabled_at IS NULL
               WHERE d.status = 'pending' AND d.next_at <= {time $1}
                 AND {unleased d $1}
                 AND d.subscriber IN ({each $2})
                 AND NOT EXISTS (
                   SELECT 1 FROM {schema}.deliveries e
                   WHERE e.subscriber = d.subscriber AND e.tenant_id = d.tenant_id
                     AND e.status = 'pending' AND e.outbox_id < d.outbox_id)
               ORDER BY d.outbox_id LIMIT $3
               {lock d})
             UPDATE {schema}.deliveries SET lease_until = {later $1}
             FROM due WHERE event_id = due_event AND subscriber = due_subscriber
             RETURNING event_id, tenant_id, subscriber, CAST(attempts AS BIGINT), {stamp first_attempt_at},
               (SELECT o.type FROM {schema}.outbox o WHERE o.id = deliveries.outbox_id),
               (SELECT CAST(o.payload AS TEXT) FROM {schema}.outbox o WHERE o.id = deliveries.outbox_id),
               outbox_id",
        )
        .text(now)
        .list(subscribers.iter().map(|(n, _)| n))
        .int(limit as i64)
        .fetch(&pool)
        .await?;
        let mut due = read_rows(&rows, "read the deliveries due", |r| {
            Ok((
                r.int(7)?,
                Due {
                    event_id: r.text(0)?,
                    tenant_id: r.text(1)?,
                    subscriber: r.text(2)?,
                    attempts: r.int(3)? as u32,
                    first_attempt_at: r.maybe_text(4)?,
                    event_type: r.text(5)?,
                    payload: r.text(6)?,
                },
            ))
        })?;
        // RETURNING keeps no order.
        due.sort_by_key(|(outbox_id, _)| *outbox_id);
        Ok(due.into_iter().map(|(_, due)| due).collect())
    }

    async fn record_delivery(&self, a: &Attempt) -> Result<(), ProviderError> {
        let d = self.dialect();
        let mut tx = self.tables().await?.begin().await?;
        Statement::new(
            d,
            "record a delivery attempt",
            "INSERT INTO {schema}.delivery_attempts (event_id, subscriber, at, status_code, error, latency_ms)
             VALUES ($1, $2, {time $3}, $4, $5, $6)",
        )
        .text(&a.event_id)
        .text(&a.subscriber)
        .text(&a.at)
        .maybe_int(a.status_code.map(i64::from))
        .maybe_text(a.error.as_deref())
        .int(a.latency_ms as i64)
        .execute(&mut tx)
        .await?;
        let (status, next_at) = match &a.outcome {
            Outcome::Delivered => ("delivered", None),
            Outcome::Retry { next_at } => ("pending", Some(next_at.as_str())),
            Outcome::Dead => ("dead", None),
            // The delivery waits for the subscriber to be enabled again.
            Outcome::Disabled => ("pending", None),
        };
        Statement::new(
            d,
            "record a delivery",
            "UPDATE {schema}.deliveries SET status = $1, attempts = attempts + 1,
               next_at = coalesce({time $2}, next_at),
               delivered_at = CASE WHEN $3 THEN {time $4} END,
               last_error = $5, first_attempt_at = coalesce(first_attempt_at, {time $4}),
               lease_until = NULL
             WHERE event_id = $6 AND subscriber = $7",
        )
        .text(status)
        .maybe_text(next_at)
        .bool(a.outcome == Outcome::Delivered)
        .text(&a.at)
        .maybe_text(a.error.as_deref())
        .text(&a.event_id)
        .text(&a.subscriber)
        .execute(&mut tx)
        .await?;
        if a.outcome == Outcome::Disabled {
            Statement::new(
                d,
                "disable a subscriber",
                "UPDATE {schema}.subscribers SET disabled_at = {time $1} WHERE name = $2",
            )
            .text(&a.at)
            .text(&a.subscriber)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await
    }

    async fn deliveries(&self, f: &Filter) -> Result<Vec<Row>, ProviderError> {
        let rows = Statement::new(
            self.dialect(),
            "read the deliveries",
            "SELECT d.event_id, o.type, t.slug, d.subscriber, d.status, CAST(d.attempts AS BIGINT),
                    CASE WHEN d.status = 'pending' THEN {stamp d.next_at} END,
                    {stamp d.delivered_at}, d.last_error
             FROM {schema}.deliveries d
             JOIN {schema}.outbox o ON o.id = d.outbox_id
             LEFT JOIN {schema}.tenants t ON t.tenant_id = d.tenant_id
             WHERE (CAST($1 AS TEXT) IS NULL OR t.slug = $1)
               AND (NOT $2 OR (d.status = 'pending' AND d.attempts > 0))
               AND (NOT $3 OR d.status = 'dead')
               AND (CAST($4 AS TEXT) IS NULL OR d.event_id = $4)
             ORDER BY d.outbox_id, d.subscriber",
        )
        .maybe_text(f.slug.as_deref())
        .bool(f.failed)
        .bool(f.dead)
        .maybe_text(f.event_id.as_deref())
        .fetch(&self.tables().await?)
        .await?;
        read_rows(&rows, "read the deliveries", |r| {
            Ok(Row {
                event_id: r.text(0)?,
                event_type: r.text(1)?,
                slug: r.maybe_text(2)?,
                subscriber: r.text(3)?,
                status: r.text(4)?,
                attempts: r.int(5)? as u32,
                next_at: r.maybe_text(6)?,
                delivered_at: r.maybe_text(7)?,
                last_error: r.maybe_text(8)?,
            })
        })
    }

    async fn delivery_attempts(&self, event_id: &str) -> Result<Vec<AttemptRow>, ProviderError> {
        let rows = Statement::new(
            self.dialect(),
            "read the delivery attempts",
            "SELECT subscriber, {stamp at}, CAST(status_code AS BIGINT), error, latency_ms
             FROM {schema}.delivery_attempts WHERE event_id = $1 ORDER BY id",
        )
        .text(event_id)
        .fetch(&self.tables().await?)
        .await?;
        read_rows(&rows, "read the delivery attempts", |r| {
            Ok(AttemptRow {
                subscriber: r.text(0)?,
                at: r.text(1)?,
                status_code: r.maybe_int(2)?.map(|c| c as u16),
                error: r.maybe_text(3)?,
                latency_ms: r.int(4)? as u64,
            })
        })
    }

    async fn redeliver(&self, event_ids: &[String]) -> Result<usize, ProviderError> {
        let d = self.dialect();
        let done = Statement::new(
            d,
            "make deliveries due again",
            "UPDATE {schema}.deliveries SET status = 'pending', next_at = {now},
               first_attempt_at = NULL, lease_until = NULL
             WHERE event_id IN ({each $1})",
        )
        .list(event_ids)
        .execute(&self.tables().await?)
        .await?;
        Ok(done as usize)
    }

    async fn enable_subscriber(&self, name: &str) -> Result<bool, ProviderError> {
        let done = Statement::new(
            self.dialect(),
            "enable a subscriber",
            "UPDATE {schema}.subscribers SET disabled_at = NULL WHERE name = $1 AND disabled_at IS NOT NULL",
        )
        .text(name)
        .execute(&self.tables().await?)
        .await?;
        Ok(done > 0)
    }

    async fn prune_deliveries(
        &self,
        cutoff: std::time::SystemTime,
    ) -> Result<usize, ProviderError> {
        let d = self.dialect();
        let cutoff = d.moment(cutoff);
        let mut tx = self.tables().await?.begin().await?;
        Statement::new(d, "wait for the outbox", "{outbox turn}")
            .execute(&mut tx)
            .await?;
        let mut pruned = 0;
        for table in ["delivery_attempts", "outbox", "deliveries"] {
            // Table names are this list's own.
            let done = Statement::new(
                d,
                "prune delivered events",
                &format!("DELETE FROM {{schema}}.{table} WHERE event_id IN ({PRUNABLE})"),
            )
            .text(&cutoff)
            .execute(&mut tx)
            .await?;
            if table == "outbox" {
                pruned = done as usize;
            }
        }
        tx.commit().await?;
        Ok(pruned)
    }
}

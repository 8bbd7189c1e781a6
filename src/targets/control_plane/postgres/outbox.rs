//! The Postgres control plane's side of the outbox relay. Relays may run at once (two cron
//! jobs overlapping, several machines): each claims what it sends with `FOR UPDATE SKIP
//! LOCKED` and a lease, so no delivery is sent by two relays together, and a relay killed
//! mid-delivery leaves its claims to the next one once their lease is over.

use async_trait::async_trait;
use sqlx::Row as _;

use crate::model::outbox::{Attempt, AttemptRow, Due, Filter, Outcome, Row};
use crate::targets::control_plane::postgres::control::PgControl;
use crate::targets::provider::{Outbox, ProviderError};

/// How long a claim holds: longer than any webhook's timeout (at most 5 minutes).
const LEASE: &str = "6 minutes";

/// A time as the relay's output writes them.
const STAMP: &str = "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'";

#[async_trait]
impl Outbox for PgControl {
    async fn register_subscribers(
        &self,
        subscribers: &[(String, bool)],
    ) -> Result<(), ProviderError> {
        if subscribers.is_empty() {
            return Ok(());
        }
        let (names, history): (Vec<&String>, Vec<bool>) =
            subscribers.iter().map(|(n, h)| (n, *h)).unzip();
        let sql = self.sql(
            "INSERT INTO {schema}.subscribers (name, outbox_id)
             SELECT n, CASE WHEN h THEN 0 ELSE (SELECT coalesce(max(id), 0) FROM {schema}.outbox) END
             FROM unnest($1::text[], $2::bool[]) AS s (n, h)
             ON CONFLICT DO NOTHING",
        );
        let mut tx = self.begin().await?;
        sqlx::query(&sql)
            .bind(&names)
            .bind(&history)
            .execute(tx.as_mut())
            .await
            .map_err(ProviderError::sql("record a subscriber"))?;
        tx.commit().await.map_err(ProviderError::sql("commit"))
    }

    async fn due_deliveries(
        &self,
        subscribers: &[(String, Vec<String>)],
        now: std::time::SystemTime,
        limit: usize,
    ) -> Result<Vec<Due>, ProviderError> {
        // To the microsecond, as the outbox's times are: an event written within this second
        // is due now.
        let now = &humantime::format_rfc3339_micros(now).to_string();
        let mut tx = self.begin().await?;
        for (name, types) in subscribers {
            // Only the events written since this subscriber was last given some: the
            // outbox is read by its primary key from there, never scanned whole.
            sqlx::query(&self.sql(
                "INSERT INTO {schema}.deliveries (event_id, subscriber, tenant_id, outbox_id, status, next_at)
                 SELECT o.event_id, s.name, o.tenant_id, o.id, 'pending', o.created_at
                 FROM {schema}.subscribers s JOIN {schema}.outbox o ON o.id > s.outbox_id
                 WHERE s.name = $1 AND o.type = ANY($2)
                 ON CONFLICT DO NOTHING",
            ))
            .bind(name)
            .bind(types)
            .execute(tx.as_mut())
            .await
            .map_err(ProviderError::sql("make the deliveries of new events"))?;
            sqlx::query(&self.sql(
                "UPDATE {schema}.subscribers
                 SET outbox_id = GREATEST(outbox_id, (SELECT coalesce(max(id), 0) FROM {schema}.outbox))
                 WHERE name = $1",
            ))
            .bind(name)
            .execute(tx.as_mut())
            .await
            .map_err(ProviderError::sql("record how far a subscriber was given events"))?;
        }
        tx.commit().await.map_err(ProviderError::sql("commit"))?;
        let names: Vec<&String> = subscribers.iter().map(|(n, _)| n).collect();
        let sql = self.sql(&format!(
            "WITH due AS (
               SELECT d.event_id, d.subscriber FROM {{schema}}.deliveries d
               JOIN {{schema}}.subscribers s ON s.name = d.subscriber AND s.disabled_at IS NULL
               WHERE d.status = 'pending' AND d.next_at <= $1::timestamptz
                 AND (d.lease_until IS NULL OR d.lease_until < $1::timestamptz)
                 AND d.subscriber = ANY($2)
                 AND NOT EXISTS (
                   SELECT 1 FROM {{schema}}.deliveries e
                   WHERE e.subscriber = d.subscriber AND e.tenant_id = d.tenant_id
                     AND e.status = 'pending' AND e.outbox_id < d.outbox_id)
               ORDER BY d.outbox_id LIMIT $3
               FOR UPDATE OF d SKIP LOCKED)
             UPDATE {{schema}}.deliveries d SET lease_until = $1::timestamptz + interval '{LEASE}'
             FROM due WHERE d.event_id = due.event_id AND d.subscriber = due.subscriber
             RETURNING d.event_id, d.tenant_id, d.subscriber, d.attempts,
               to_char(d.first_attempt_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
               (SELECT o.type FROM {{schema}}.outbox o WHERE o.id = d.outbox_id),
               (SELECT o.payload::text FROM {{schema}}.outbox o WHERE o.id = d.outbox_id),
               d.outbox_id"
        ));
        let mut rows = sqlx::query(&sql)
            .bind(now)
            .bind(&names)
            .bind(limit as i64)
            .fetch_all(self.pool().await?)
            .await
            .map_err(ProviderError::sql("claim the deliveries due"))?;
        rows.sort_by_key(|r| r.try_get::<i64, _>(7).unwrap_or_default());
        rows.iter()
            .map(|r| {
                Ok(Due {
                    event_id: r.try_get(0)?,
                    tenant_id: r.try_get(1)?,
                    subscriber: r.try_get(2)?,
                    attempts: r.try_get::<i32, _>(3)? as u32,
                    first_attempt_at: r.try_get(4)?,
                    event_type: r.try_get(5)?,
                    payload: r.try_get(6)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ProviderError::sql("read the deliveries due"))
    }

    async fn record_delivery(&self, a: &Attempt) -> Result<(), ProviderError> {
        let mut tx = self.begin().await?;
        sqlx::query(&self.sql(
            "INSERT INTO {schema}.delivery_attempts (event_id, subscriber, at, status_code, error, latency_ms)
             VALUES ($1, $2, $3::timestamptz, $4, $5, $6)",
        ))
        .bind(&a.event_id)
        .bind(&a.subscriber)
        .bind(&a.at)
        .bind(a.status_code.map(i32::from))
        .bind(&a.error)
        .bind(a.latency_ms as i64)
        .execute(tx.as_mut())
        .await
        .map_err(ProviderError::sql("record a delivery attempt"))?;
        let (status, next_at, delivered) = match &a.outcome {
            Outcome::Delivered => ("delivered", None, true),
            Outcome::Retry { next_at } => ("pending", Some(next_at.as_str()), false),
            Outcome::Dead => ("dead", None, false),
            Outcome::Disabled => ("pending", None, false),
        };
        sqlx::query(&self.sql(
            "UPDATE {schema}.deliveries SET status = $1, attempts = attempts + 1,
               next_at = coalesce($2::timestamptz, next_at),
               delivered_at = CASE WHEN $3 THEN $4::timestamptz END,
               last_error = $5, first_attempt_at = coalesce(first_attempt_at, $4::timestamptz),
               lease_until = NULL
             WHERE event_id = $6 AND subscriber = $7",
        ))
        .bind(status)
        .bind(next_at)
        .bind(delivered)
        .bind(&a.at)
        .bind(&a.error)
        .bind(&a.event_id)
        .bind(&a.subscriber)
        .execute(tx.as_mut())
        .await
        .map_err(ProviderError::sql("record a delivery"))?;
        if a.outcome == Outcome::Disabled {
            sqlx::query(&self.sql(
                "UPDATE {schema}.subscribers SET disabled_at = $1::timestamptz WHERE name = $2",
            ))
            .bind(&a.at)
            .bind(&a.subscriber)
            .execute(tx.as_mut())
            .await
            .map_err(ProviderError::sql("disable a subscriber"))?;
        }
        tx.commit().await.map_err(ProviderError::sql("commit"))
    }
    async fn deliveries(&self, f: &Filter) -> Result<Vec<Row>, ProviderError> {
        let sql = self.sql(&format!(
            "SELECT d.event_id, o.type, t.slug, d.subscriber, d.status, d.attempts,
                    CASE WHEN d.status = 'pending' THEN to_char(d.next_at AT TIME ZONE 'UTC', {STAMP}) END,
                    to_char(d.delivered_at AT TIME ZONE 'UTC', {STAMP}), d.last_error
             FROM {{schema}}.deliveries d
             JOIN {{schema}}.outbox o ON o.id = d.outbox_id
             LEFT JOIN {{schema}}.tenants t ON t.tenant_id = d.tenant_id
             WHERE ($1::text IS NULL OR t.slug = $1)
               AND (NOT $2 OR (d.status = 'pending' AND d.attempts > 0))
               AND (NOT $3 OR d.status = 'dead')
               AND ($4::text IS NULL OR d.event_id = $4)
             ORDER BY d.outbox_id, d.subscriber"
        ));
        let rows = sqlx::query(&sql)
            .bind(&f.slug)
            .bind(f.failed)
            .bind(f.dead)
            .bind(&f.event_id)
            .fetch_all(self.pool().await?)
            .await
            .map_err(ProviderError::sql("read the deliveries"))?;
        rows.iter()
            .map(|r| {
                Ok(Row {
                    event_id: r.try_get(0)?,
                    event_type: r.try_get(1)?,
                    slug: r.try_get(2)?,
                    subscriber: r.try_get(3)?,
                    status: r.try_get(4)?,
                    attempts: r.try_get::<i32, _>(5)? as u32,
                    next_at: r.try_get(6)?,
                    delivered_at: r.try_get(7)?,
                    last_error: r.try_get(8)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ProviderError::sql("read the deliveries"))
    }

    async fn delivery_attempts(&self, event_id: &str) -> Result<Vec<AttemptRow>, ProviderError> {
        let sql = self.sql(&format!(
            "SELECT subscriber, to_char(at AT TIME ZONE 'UTC', {STAMP}), status_code, error, latency_ms
             FROM {{schema}}.delivery_attempts WHERE event_id = $1 ORDER BY id"
        ));
        let rows = sqlx::query(&sql)
            .bind(event_id)
            .fetch_all(self.pool().await?)
            .await
            .map_err(ProviderError::sql("read the delivery attempts"))?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRow {
                    subscriber: r.try_get(0)?,
                    at: r.try_get(1)?,
                    status_code: r.try_get::<Option<i32>, _>(2)?.map(|c| c as u16),
                    error: r.try_get(3)?,
                    latency_ms: r.try_get::<i64, _>(4)? as u64,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ProviderError::sql("read the delivery attempts"))
    }

    async fn redeliver(&self, event_ids: &[String]) -> Result<usize, ProviderError> {
        let done = sqlx::query(&self.sql(
            "UPDATE {schema}.deliveries SET status = 'pending', next_at = now(),
               first_attempt_at = NULL, lease_until = NULL
             WHERE event_id = ANY($1)",
        ))
        .bind(event_ids)
        .execute(self.pool().await?)
        .await
        .map_err(ProviderError::sql("make deliveries due again"))?;
        Ok(done.rows_affected() as usize)
    }

    async fn enable_subscriber(&self, name: &str) -> Result<bool, ProviderError> {
        let done = sqlx::query(&self.sql(
            "UPDATE {schema}.subscribers SET disabled_at = NULL WHERE name = $1 AND disabled_at IS NOT NULL",
        ))
        .bind(name)
        .execute(self.pool().await?)
        .await
        .map_err(ProviderError::sql("enable a subscriber"))?;
        Ok(done.rows_affected() > 0)
    }
    async fn prune_deliveries(
        &self,
        cutoff: std::time::SystemTime,
    ) -> Result<usize, ProviderError> {
        let cutoff = humantime::format_rfc3339_micros(cutoff).to_string();
        let prunable = "SELECT d.event_id FROM {schema}.deliveries d
             WHERE d.status = 'delivered' AND d.delivered_at < $1::timestamptz
               AND NOT EXISTS (SELECT 1 FROM {schema}.deliveries e WHERE e.event_id = d.event_id
                               AND (e.status <> 'delivered' OR e.delivered_at >= $1::timestamptz))";
        let mut tx = self.begin().await?;
        let mut pruned = 0;
        for table in ["delivery_attempts", "outbox", "deliveries"] {
            // Table names are this list's own.
            let done = sqlx::query(&self.sql(&format!(
                "DELETE FROM {{schema}}.{table} WHERE event_id IN ({prunable})"
            )))
            .bind(&cutoff)
            .execute(tx.as_mut())
            .await
            .map_err(ProviderError::sql("prune delivered events"))?;
            if table == "outbox" {
                pruned = done.rows_affected() as usize;
            }
        }
        tx.commit().await.map_err(ProviderError::sql("commit"))?;
        Ok(pruned)
    }
}

//! The local control plane's side of the outbox relay: deliveries made from the outbox,
//! handed out in order per tenant and subscriber, and every attempt recorded.

use async_trait::async_trait;
use sqlx::Row as _;

use crate::model::outbox::{Attempt, AttemptRow, Due, Filter, Outcome, Row};
use crate::targets::control_plane::local::control::LocalControl;
use crate::targets::provider::{Outbox, ProviderError};

/// The events delivered to every subscriber before `?1`.
const PRUNABLE: &str = "SELECT d.event_id FROM deliveries d
     WHERE d.status = 'delivered' AND d.delivered_at < ?1
       AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.event_id = d.event_id
                       AND (e.status <> 'delivered' OR e.delivered_at >= ?1))";

#[async_trait]
impl Outbox for LocalControl {
    async fn register_subscribers(
        &self,
        subscribers: &[(String, bool)],
    ) -> Result<(), ProviderError> {
        if subscribers.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for (name, history) in subscribers {
            sqlx::query(
                "INSERT INTO subscribers (name, outbox_id)
                 VALUES (?1, CASE WHEN ?2 THEN 0 ELSE (SELECT coalesce(max(id), 0) FROM outbox) END)
                 ON CONFLICT DO NOTHING",
            )
            .bind(name)
            .bind(history)
            .execute(tx.as_mut())
            .await
            .map_err(ProviderError::sql("record a subscriber"))?;
        }
        tx.commit().await.map_err(ProviderError::sql("commit"))
    }

    async fn due_deliveries(
        &self,
        subscribers: &[(String, Vec<String>)],
        now: std::time::SystemTime,
        limit: usize,
    ) -> Result<Vec<Due>, ProviderError> {
        // As the outbox's times are written: whole seconds here, microseconds on Postgres.
        let now = &humantime::format_rfc3339_seconds(now).to_string();
        let mut tx = self.begin().await?;
        for (name, types) in subscribers {
            // Only the events written since this subscriber was last given some: the
            // outbox is read by its primary key from there, never scanned whole.
            sqlx::query(
                "INSERT INTO deliveries (event_id, subscriber, tenant_id, outbox_id, status, next_at)
                 SELECT o.event_id, s.name, o.tenant_id, o.id, 'pending', o.created_at
                 FROM subscribers s JOIN outbox o ON o.id > s.outbox_id
                 WHERE s.name = ? AND o.type IN (SELECT value FROM json_each(?))
                 ON CONFLICT DO NOTHING",
            )
            .bind(name)
            .bind(serde_json::to_string(types).expect("json"))
            .execute(tx.as_mut())
            .await
            .map_err(ProviderError::sql("make the deliveries of new events"))?;
            sqlx::query(
                "UPDATE subscribers SET outbox_id = (SELECT coalesce(max(id), 0) FROM outbox) WHERE name = ?",
            )
            .bind(name)
            .execute(tx.as_mut())
            .await
            .map_err(ProviderError::sql("record how far a subscriber was given events"))?;
        }
        tx.commit().await.map_err(ProviderError::sql("commit"))?;
        let names: Vec<&String> = subscribers.iter().map(|(n, _)| n).collect();
        let rows = sqlx::query(
            "SELECT d.event_id, d.tenant_id, o.type, o.payload, d.subscriber, d.attempts, d.first_attempt_at
             FROM deliveries d
             JOIN outbox o ON o.id = d.outbox_id
             JOIN subscribers s ON s.name = d.subscriber AND s.disabled_at IS NULL
             WHERE d.status = 'pending' AND d.next_at <= ?
               AND d.subscriber IN (SELECT value FROM json_each(?))
               AND NOT EXISTS (
                 SELECT 1 FROM deliveries e
                 WHERE e.subscriber = d.subscriber AND e.tenant_id = d.tenant_id
                   AND e.status = 'pending' AND e.outbox_id < d.outbox_id)
             ORDER BY d.outbox_id LIMIT ?",
        )
        .bind(now)
        .bind(serde_json::to_string(&names).expect("json"))
        .bind(limit as i64)
        .fetch_all(self.pool().await?)
        .await
        .map_err(ProviderError::sql("read the deliveries due"))?;
        rows.iter()
            .map(|r| {
                Ok(Due {
                    event_id: r.try_get(0)?,
                    tenant_id: r.try_get(1)?,
                    event_type: r.try_get(2)?,
                    payload: r.try_get(3)?,
                    subscriber: r.try_get(4)?,
                    attempts: r.try_get::<i64, _>(5)? as u32,
                    first_attempt_at: r.try_get(6)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ProviderError::sql("read the deliveries due"))
    }

    async fn record_delivery(&self, a: &Attempt) -> Result<(), ProviderError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO delivery_attempts (event_id, subscriber, at, status_code, error, latency_ms)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&a.event_id)
        .bind(&a.subscriber)
        .bind(&a.at)
        .bind(a.status_code.map(i64::from))
        .bind(&a.error)
        .bind(a.latency_ms as i64)
        .execute(tx.as_mut())
        .await
        .map_err(ProviderError::sql("record a delivery attempt"))?;
        let (status, next_at, delivered_at) = match &a.outcome {
            Outcome::Delivered => ("delivered", None, Some(a.at.as_str())),
            Outcome::Retry { next_at } => ("pending", Some(next_at.as_str()), None),
            Outcome::Dead => ("dead", None, None),
            // The delivery waits for the subscriber to be enabled again.
            Outcome::Disabled => ("pending", None, None),
        };
        sqlx::query(
            "UPDATE deliveries SET status = ?, attempts = attempts + 1,
               next_at = coalesce(?, next_at), delivered_at = ?, last_error = ?,
               first_attempt_at = coalesce(first_attempt_at, ?)
             WHERE event_id = ? AND subscriber = ?",
        )
        .bind(status)
        .bind(next_at)
        .bind(delivered_at)
        .bind(&a.error)
        .bind(&a.at)
        .bind(&a.event_id)
        .bind(&a.subscriber)
        .execute(tx.as_mut())
        .await
        .map_err(ProviderError::sql("record a delivery"))?;
        if a.outcome == Outcome::Disabled {
            sqlx::query("UPDATE subscribers SET disabled_at = ? WHERE name = ?")
                .bind(&a.at)
                .bind(&a.subscriber)
                .execute(tx.as_mut())
                .await
                .map_err(ProviderError::sql("disable a subscriber"))?;
        }
        tx.commit().await.map_err(ProviderError::sql("commit"))
    }
    async fn deliveries(&self, f: &Filter) -> Result<Vec<Row>, ProviderError> {
        let rows = sqlx::query(
            "SELECT d.event_id, o.type, t.slug, d.subscriber, d.status, d.attempts,
                    CASE WHEN d.status = 'pending' THEN d.next_at END, d.delivered_at, d.last_error
             FROM deliveries d
             JOIN outbox o ON o.id = d.outbox_id
             LEFT JOIN tenants t ON t.tenant_id = d.tenant_id
             WHERE (?1 IS NULL OR t.slug = ?1)
               AND (NOT ?2 OR (d.status = 'pending' AND d.attempts > 0))
               AND (NOT ?3 OR d.status = 'dead')
               AND (?4 IS NULL OR d.event_id = ?4)
             ORDER BY d.outbox_id, d.subscriber",
        )
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
                    attempts: r.try_get::<i64, _>(5)? as u32,
                    next_at: r.try_get(6)?,
                    delivered_at: r.try_get(7)?,
                    last_error: r.try_get(8)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ProviderError::sql("read the deliveries"))
    }

    async fn delivery_attempts(&self, event_id: &str) -> Result<Vec<AttemptRow>, ProviderError> {
        let rows = sqlx::query(
            "SELECT subscriber, at, status_code, error, latency_ms FROM delivery_attempts
             WHERE event_id = ? ORDER BY id",
        )
        .bind(event_id)
        .fetch_all(self.pool().await?)
        .await
        .map_err(ProviderError::sql("read the delivery attempts"))?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRow {
                    subscriber: r.try_get(0)?,
                    at: r.try_get(1)?,
                    status_code: r.try_get::<Option<i64>, _>(2)?.map(|c| c as u16),
                    error: r.try_get(3)?,
                    latency_ms: r.try_get::<i64, _>(4)? as u64,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ProviderError::sql("read the delivery attempts"))
    }

    async fn redeliver(&self, event_ids: &[String]) -> Result<usize, ProviderError> {
        let done = sqlx::query(
            "UPDATE deliveries SET status = 'pending', next_at = ?, first_attempt_at = NULL
             WHERE event_id IN (SELECT value FROM json_each(?))",
        )
        .bind(crate::model::lifecycle::now())
        .bind(serde_json::to_string(event_ids).expect("json"))
        .execute(self.pool().await?)
        .await
        .map_err(ProviderError::sql("make deliveries due again"))?;
        Ok(done.rows_affected() as usize)
    }

    async fn enable_subscriber(&self, name: &str) -> Result<bool, ProviderError> {
        let done = sqlx::query(
            "UPDATE subscribers SET disabled_at = NULL WHERE name = ? AND disabled_at IS NOT NULL",
        )
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
        let cutoff = humantime::format_rfc3339_seconds(cutoff).to_string();
        let mut tx = self.begin().await?;
        let mut pruned = 0;
        for table in ["delivery_attempts", "outbox", "deliveries"] {
            // Table names are this list's own.
            let done = sqlx::query(&format!(
                "DELETE FROM {table} WHERE event_id IN ({PRUNABLE})"
            ))
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

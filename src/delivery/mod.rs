//! The outbox relay: every event the control plane wrote is delivered to the config's
//! subscribers, at least once, in order per tenant and subscriber.
//!
//! A delivery is one event for one subscriber. The control plane keeps them
//! ([`Outbox::due_deliveries`] makes the missing ones and hands out what is due: per
//! tenant and subscriber only the oldest one not delivered, so a later event waits for an
//! earlier one) and every attempt ([`Outbox::record_delivery`]). A failure is tried
//! again on [`SCHEDULE`], with jitter, or after the receiver's `Retry-After`; a delivery
//! still failing `retry_for` after its first try is dead, and its tenant's later events go
//! on. `410 Gone` disables the subscriber.
//!
//! [`Outbox::due_deliveries`]: crate::targets::provider::Outbox::due_deliveries
//! [`Outbox::record_delivery`]: crate::targets::provider::Outbox::record_delivery

mod bus;
pub mod signature;
mod webhook;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::Semaphore;

pub use crate::model::outbox::{Attempt, AttemptRow, Due, Filter, Outcome, Row};
use crate::repo::subscribers::Webhook;
use crate::targets::provider::ControlPlane;
use crate::workspace::Workspace;
use crate::Error;

/// The waits after each failed attempt, like the common webhook providers': seconds, then
/// minutes, then hours, about three days in all.
pub const SCHEDULE: &[Duration] = &[
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
    Duration::from_secs(1800),
    Duration::from_secs(3600),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(14 * 3600),
    Duration::from_secs(20 * 3600),
    Duration::from_secs(20 * 3600),
];

/// What a relay pass did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub delivered: usize,
    pub failed: usize,
    pub dead: usize,
    pub disabled: Vec<String>,
    /// Events delivered to every subscriber more than `keep_days` ago, removed.
    pub pruned: usize,
}

/// Where a delivery goes.
enum Subscriber<'a> {
    Webhook(&'a Webhook, Vec<signature::Secret>),
    Bus(Box<bus::Publisher>),
}

/// Delivers what is due, pass after pass, until nothing is due now.
pub async fn deliver(ws: &Workspace) -> Result<Report, Error> {
    let config = &ws.repo.config;
    let mut report = Report::default();
    if config.webhooks.is_empty() && config.buses.is_empty() {
        return Ok(report);
    }
    // Every subscriber is checked before anything is sent: a secret missing or malformed,
    // or a broker unreachable, is said at once.
    let mut subscribers: Vec<(String, Vec<String>, Subscriber<'_>)> = Vec::new();
    for w in &config.webhooks {
        let text = std::env::var(&w.secret_env).map_err(|_| {
            Error::Refused(format!(
                "the webhook {} has no secret: set {} to its whsec_ secret",
                w.name, w.secret_env
            ))
        })?;
        let secrets = signature::Secret::parse_all(&text).map_err(|e| {
            Error::Refused(format!(
                "the secret in {} (webhook {}): {e}",
                w.secret_env, w.name
            ))
        })?;
        subscribers.push((
            w.name.clone(),
            w.events.clone(),
            Subscriber::Webhook(w, secrets),
        ));
    }
    for b in &config.buses {
        // Its text says what failed and why.
        let publisher = bus::Publisher::connect(b)
            .await
            .map_err(|doing| Error::Failed {
                doing,
                source: None,
            })?;
        subscribers.push((
            b.name.clone(),
            b.events.clone(),
            Subscriber::Bus(Box::new(publisher)),
        ));
    }
    let targets = ws.targets(ws.repo.migrations.clone());
    let control: Arc<dyn ControlPlane> = targets.control.clone();
    let wanted: Vec<(String, Vec<String>)> = subscribers
        .iter()
        .map(|(name, events, _)| (name.clone(), events.clone()))
        .collect();
    let retry_for = config.events.retry_for();
    let schedule = config
        .events
        .schedule()
        .unwrap_or_else(|| SCHEDULE.to_vec());
    let schedule = &schedule;
    let permits = Semaphore::new(config.events.parallelism.max(1));
    let keep = Duration::from_secs(u64::from(config.events.keep_days) * 86_400);
    control
        .register_subscribers(&config.subscribers())
        .await
        .map_err(outbox_error)?;
    report.pruned = control
        .prune_deliveries(SystemTime::now() - keep)
        .await
        .map_err(outbox_error)?;
    loop {
        let due = control
            .due_deliveries(&wanted, SystemTime::now(), 1000)
            .await
            .map_err(outbox_error)?;
        if due.is_empty() {
            return Ok(report);
        }
        let sends = due.iter().map(|d| {
            let (_, _, to) = subscribers
                .iter()
                .find(|(name, ..)| *name == d.subscriber)
                .expect("due only for configured subscribers");
            let (permits, control) = (&permits, &control);
            async move {
                let _permit = permits.acquire().await.expect("semaphore stays open");
                let attempt = attempt(to, d, schedule, retry_for).await;
                control.record_delivery(&attempt).await.map(|()| attempt)
            }
        });
        for attempt in futures::future::join_all(sends).await {
            let attempt = attempt.map_err(outbox_error)?;
            match attempt.outcome {
                Outcome::Delivered => report.delivered += 1,
                Outcome::Retry { .. } => report.failed += 1,
                Outcome::Dead => report.dead += 1,
                Outcome::Disabled => {
                    if !report.disabled.contains(&attempt.subscriber) {
                        report.disabled.push(attempt.subscriber.clone());
                    }
                }
            }
        }
    }
}

fn outbox_error(e: crate::targets::provider::ProviderError) -> Error {
    Error::failed("delivering the outbox", e)
}

/// One attempt of one delivery, and what it leaves the delivery as.
async fn attempt(
    to: &Subscriber<'_>,
    d: &Due,
    schedule: &[Duration],
    retry_for: Duration,
) -> Attempt {
    let started = std::time::Instant::now();
    let sent = match to {
        Subscriber::Webhook(hook, secrets) => webhook::post(hook, secrets, d).await,
        // A confirmed publish is what a 2xx is to a webhook.
        Subscriber::Bus(publisher) => publisher.publish(d).await.map(|()| webhook::Answer {
            status: 200,
            retry_after: None,
        }),
    };
    let latency_ms = started.elapsed().as_millis() as u64;
    let now = SystemTime::now();
    let first = d
        .first_attempt_at
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .unwrap_or(now);
    let (status_code, error, outcome) = match sent {
        Ok(webhook::Answer { status, .. }) if (200..300).contains(&status) => {
            (Some(status), None, Outcome::Delivered)
        }
        Ok(webhook::Answer { status: 410, .. }) => (
            Some(410),
            Some("410 Gone: the subscriber is disabled".to_string()),
            Outcome::Disabled,
        ),
        Ok(webhook::Answer {
            status,
            retry_after,
        }) => (
            Some(status),
            Some(format!("answered {status}")),
            retry(schedule, d.attempts, first, now, retry_for, retry_after),
        ),
        Err(e) => (
            None,
            Some(e),
            retry(schedule, d.attempts, first, now, retry_for, None),
        ),
    };
    Attempt {
        event_id: d.event_id.clone(),
        subscriber: d.subscriber.clone(),
        at: humantime::format_rfc3339_seconds(now).to_string(),
        // A bus answers with a confirm, not a status.
        status_code: status_code.filter(|_| matches!(to, Subscriber::Webhook(..))),
        error,
        latency_ms,
        outcome,
    }
}

/// When a failed delivery is tried again: the schedule's wait after its `attempts`-th
/// failure (or the receiver's `Retry-After`, when longer), give or take a fifth; dead when
/// that is past `retry_for` from its first try.
fn retry(
    schedule: &[Duration],
    attempts: u32,
    first: SystemTime,
    now: SystemTime,
    retry_for: Duration,
    retry_after: Option<Duration>,
) -> Outcome {
    let Some(wait) = schedule.get(attempts as usize) else {
        return Outcome::Dead;
    };
    let wait = jitter(*wait).max(retry_after.unwrap_or_default());
    let next = now + wait;
    if next > first + retry_for {
        return Outcome::Dead;
    }
    Outcome::Retry {
        next_at: humantime::format_rfc3339_seconds(next).to_string(),
    }
}

/// `wait` give or take a fifth, so that receivers coming back are not met by every
/// retry at once.
fn jitter(wait: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    let factor = 0.8 + 0.4 * f64::from(byte[0]) / 255.0;
    wait.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_follow_the_schedule_and_die_after_retry_for() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let day = Duration::from_secs(86_400);
        match retry(SCHEDULE, 0, t0, t0, 3 * day, None) {
            Outcome::Retry { next_at } => {
                let next = humantime::parse_rfc3339(&next_at).unwrap();
                let wait = next.duration_since(t0).unwrap();
                assert!(
                    wait >= Duration::from_secs(3) && wait <= Duration::from_secs(7),
                    "{wait:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        // Retry-After wins when it is longer.
        match retry(SCHEDULE, 0, t0, t0, 3 * day, Some(Duration::from_secs(120))) {
            Outcome::Retry { next_at } => {
                assert!(
                    humantime::parse_rfc3339(&next_at).unwrap() >= t0 + Duration::from_secs(120)
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            retry(SCHEDULE, 0, t0, t0 + 3 * day, 3 * day, None),
            Outcome::Dead
        );
        assert_eq!(
            retry(SCHEDULE, SCHEDULE.len() as u32, t0, t0, 30 * day, None),
            Outcome::Dead
        );
        let total: Duration = SCHEDULE.iter().sum();
        assert!(total > 2 * day && total < 4 * day, "{total:?}");
    }
}

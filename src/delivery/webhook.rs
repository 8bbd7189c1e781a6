//! One webhook POST, signed as Standard Webhooks says: `webhook-id` (the event's id, the
//! same on every retry: the receiver's idempotency key), `webhook-timestamp` and
//! `webhook-signature`.

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;

use super::signature::{sign, Secret};
use super::Due;
use crate::clients::http::client;
use crate::repo::subscribers::Webhook;

/// What the receiver answered.
pub struct Answer {
    pub status: u16,
    /// Its `Retry-After`, in seconds (a 429 or 503 says when to come back).
    pub retry_after: Option<Duration>,
}

pub async fn post(hook: &Webhook, secrets: &[Secret], d: &Due) -> Result<Answer, String> {
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let body = d.payload.as_bytes();
    let request = hyper::Request::post(hook.url.as_str())
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("tenant-reconcile/", env!("CARGO_PKG_VERSION")),
        )
        .header("webhook-id", d.event_id.as_str())
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            sign(secrets, &d.event_id, timestamp, body),
        )
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(hook.timeout, client()?.request(request))
        .await
        .map_err(|_| {
            format!(
                "no answer within {}",
                humantime::format_duration(hook.timeout)
            )
        })?
        .map_err(|e| crate::causes::chain(&e))?;
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(86_400)));
    Ok(Answer {
        status: response.status().as_u16(),
        retry_after,
    })
}

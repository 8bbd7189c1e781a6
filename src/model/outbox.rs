//! The outbox relay's records: a delivery due, an attempt and what became of it, and the rows
//! `events list` and `events show` print. Every control plane keeps them (`targets::provider::Outbox`),
//! and the relay (`delivery`) reads and writes them.

use serde::Serialize;

/// A delivery due now.
#[derive(Debug, Clone)]
pub struct Due {
    pub event_id: String,
    pub tenant_id: String,
    pub event_type: String,
    /// The event as the outbox holds it (JSON text), sent as it is.
    pub payload: String,
    pub subscriber: String,
    pub attempts: u32,
    /// When it was first tried (RFC 3339), if it was.
    pub first_attempt_at: Option<String>,
}

/// What became of one attempt, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub event_id: String,
    pub subscriber: String,
    pub at: String,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: u64,
    /// What the delivery is now.
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Outcome {
    Delivered,
    /// Tried again at `next_at` (RFC 3339).
    Retry {
        next_at: String,
    },
    /// Given up: kept and shown, and delivered again only when asked.
    Dead,
    /// The receiver said `410 Gone`: the subscriber is disabled until re-enabled.
    Disabled,
}

/// Which deliveries `events list` shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub slug: Option<String>,
    /// Only those that failed and are to be tried again.
    pub failed: bool,
    /// Only those given up.
    pub dead: bool,
    /// Only those of this event.
    pub event_id: Option<String>,
}

/// A delivery as `events list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub event_id: String,
    pub event_type: String,
    pub slug: Option<String>,
    pub subscriber: String,
    pub status: String,
    pub attempts: u32,
    pub next_at: Option<String>,
    pub delivered_at: Option<String>,
    pub last_error: Option<String>,
}

/// One recorded attempt, as `events show` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRow {
    pub subscriber: String,
    pub at: String,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: u64,
}

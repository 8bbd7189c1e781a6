//! `webhook "name" { … }` blocks and the `events` block of the config: who the outbox's
//! events are delivered to, and how long deliveries are retried and kept.
//!
//! ```hcl
//! webhook "billing" {
//!   url        = "https://billing.internal/hooks/tenants"
//!   secret_env = "BILLING_WEBHOOK_SECRET"   # whsec_…; several, space-separated, while rotating
//!   events     = ["TenantProvisioned", "TenantDeprovisioned"]   # every type when left out
//!   timeout    = "15s"
//!   history    = false   # true: first given every event kept, not only those from now on
//! }
//! events {
//!   retry_for   = "3d"   # a delivery still failing after this long is dead
//!   keep_days   = 30     # delivered events older than this are pruned
//!   parallelism = 16     # tenants and subscribers delivered to at once
//! }
//! ```
//!
//! Only these URLs are ever called: nothing of a tenant's reaches one.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::hcl_file;
use crate::diagnostic::Diagnostic;
use crate::targets::provider::events;

/// Every event type the outbox holds.
pub const EVENT_TYPES: &[&str] = &[
    events::PROVISIONED,
    events::UPDATED,
    events::SUSPENDED,
    events::RESUMED,
    events::OFFBOARDING_STARTED,
    events::DEPROVISIONED,
    events::PROVISIONING_FAILED,
    events::MOVED,
    events::ROLLOUT_HALTED,
    events::ROLLOUT_COMPLETED,
];

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    url: String,
    secret_env: String,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    timeout: Option<String>,
    /// Whether it is first given every event the outbox keeps (`true`), or only those
    /// written from the first run that has it in the config (the default).
    #[serde(default)]
    history: bool,
}

/// A webhook subscriber, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub name: String,
    pub url: String,
    /// The environment variable holding its `whsec_` secret(s), read when delivering.
    pub secret_env: String,
    /// The event types it gets.
    pub events: Vec<String>,
    pub timeout: Duration,
    /// Given the events kept from before it was added, not only those written since.
    pub history: bool,
}

impl Webhook {
    pub fn wants(&self, event_type: &str) -> bool {
        self.events.iter().any(|e| e == event_type)
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBus {
    amqp_url_env: String,
    exchange: String,
    #[serde(default)]
    events: Option<Vec<String>>,
    /// As a webhook's `history`.
    #[serde(default)]
    history: bool,
}

/// A message-bus subscriber: a RabbitMQ exchange the events are published to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bus {
    pub name: String,
    /// The environment variable holding the broker's `amqp://` URL (it holds a password).
    pub amqp_url_env: String,
    pub exchange: String,
    pub events: Vec<String>,
    /// As a webhook's `history`.
    pub history: bool,
}

/// Whether `name` can name an environment variable here: upper-case letters, digits, `_`.
fn plain_env(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The event types a subscriber asks for (every one when it names none), and those of them
/// that are not event types.
fn event_types(
    events: Option<Vec<String>>,
    problem: &mut impl FnMut(String, &str, &str),
) -> Vec<String> {
    let events = events.unwrap_or_else(|| EVENT_TYPES.iter().map(|e| e.to_string()).collect());
    for e in events.iter().filter(|e| !EVENT_TYPES.contains(&e.as_str())) {
        problem(
            format!("{e:?} is not an event type"),
            "events",
            &format!("events can list: {}", EVENT_TYPES.join(", ")),
        );
    }
    events
}

/// The `events` block.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    #[serde(default = "default_retry_for")]
    pub retry_for: String,
    #[serde(default = "default_keep_days")]
    pub keep_days: u32,
    #[serde(default = "default_parallelism")]
    pub parallelism: usize,
    /// The waits after each failed attempt (the default is the relay's own schedule).
    #[serde(default)]
    pub schedule: Option<Vec<String>>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            retry_for: default_retry_for(),
            keep_days: default_keep_days(),
            parallelism: default_parallelism(),
            schedule: None,
        }
    }
}

impl EventsConfig {
    /// `retry_for` as a duration (checked when the file is loaded).
    pub fn retry_for(&self) -> Duration {
        humantime::parse_duration(&self.retry_for).unwrap_or(Duration::from_secs(3 * 86_400))
    }

    /// `schedule` as durations (checked when the file is loaded), or `None` for the default.
    pub fn schedule(&self) -> Option<Vec<Duration>> {
        self.schedule.as_ref().map(|s| {
            s.iter()
                .filter_map(|w| humantime::parse_duration(w).ok())
                .collect()
        })
    }
}

fn default_retry_for() -> String {
    "3d".into()
}
fn default_keep_days() -> u32 {
    30
}
fn default_parallelism() -> usize {
    16
}

/// The buses of the config, or every problem with them; `taken` are the webhooks' names,
/// which a bus may not have too (deliveries are kept by subscriber name).
pub fn parse_buses(
    spans: &hcl_file::Spans,
    raw: BTreeMap<String, RawBus>,
    taken: &[String],
) -> Result<Vec<Bus>, Vec<Diagnostic>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (name, raw) in raw {
        let mut problem = |message: String, field: &str, hint: &str| {
            // A field not written (the block's name) is placed at its block.
            let path = format!("bus.{name}.{field}");
            problems.push(spans.problem(&path, message).hint(hint.to_string()))
        };
        if !crate::slug::check_name(&name) || taken.contains(&name) {
            problem(
                format!("{name:?} cannot name a bus"),
                "name",
                "lowercase letters, digits, `-` and `_`, and not a webhook's name",
            );
            continue;
        }
        if !plain_env(&raw.amqp_url_env) {
            problem(
                format!("{:?} cannot name an environment variable", raw.amqp_url_env),
                "amqp_url_env",
                "the name of the variable holding the amqp:// URL, like EVENTS_AMQP_URL",
            );
        }
        let exchange_ok = !raw.exchange.is_empty()
            && raw.exchange.len() <= 255
            && raw
                .exchange
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
        if !exchange_ok {
            problem(
                format!("{:?} is not an exchange name", raw.exchange),
                "exchange",
                "letters, digits, `-`, `_`, `.` and `:`, like \"tenant-events\"",
            );
        }
        let events = event_types(raw.events, &mut problem);
        out.push(Bus {
            name,
            amqp_url_env: raw.amqp_url_env,
            exchange: raw.exchange,
            events,
            history: raw.history,
        });
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The webhooks of the config and the `events` block's values, or every problem with them.
pub fn parse(
    spans: &hcl_file::Spans,
    raw: BTreeMap<String, RawWebhook>,
    events: &EventsConfig,
) -> Result<Vec<Webhook>, Vec<Diagnostic>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    if humantime::parse_duration(&events.retry_for).is_err() {
        problems.push(
            spans
                .problem(
                    "events.retry_for",
                    format!("{:?} is not a duration", events.retry_for),
                )
                .hint("a duration, like \"3d\" or \"12h\""),
        );
    }
    let bad_wait =
        events.schedule.iter().flatten().enumerate().find(|(_, w)| {
            humantime::parse_duration(w).map_or(true, |d| d < Duration::from_secs(1))
        });
    let bad_wait = bad_wait.map(|(i, w)| (format!("events.schedule[{i}]"), w));
    if let Some((path, w)) = bad_wait {
        problems.push(
            spans
                .problem(&path, format!("{w:?} is not a wait of a second or more"))
                .hint("waits like [\"5s\", \"5m\", \"1h\"]"),
        );
    }
    if events.parallelism == 0 {
        problems.push(spans.problem("events.parallelism", "parallelism must be at least 1"));
    }
    for (name, raw) in raw {
        let mut problem = |message: String, field: &str, hint: &str| {
            // A field not written (the block's name) is placed at its block.
            let path = format!("webhook.{name}.{field}");
            problems.push(spans.problem(&path, message).hint(hint.to_string()))
        };
        if !crate::slug::check_name(&name) {
            problem(
                format!("{name:?} cannot name a webhook"),
                "name",
                "lowercase letters, digits, `-` and `_`",
            );
            continue;
        }
        match url::Url::parse(&raw.url) {
            // Not repeated: the credentials would be printed with it.
            Ok(u) if !u.username().is_empty() || u.password().is_some() => problem(
                "the URL carries a user or password".into(),
                "url",
                "the receiver's URL; its secret goes in secret_env, never in the URL",
            ),
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            _ => problem(
                format!("{:?} is not an http:// or https:// URL", raw.url),
                "url",
                "the receiver's URL, like \"https://billing.internal/hooks/tenants\"",
            ),
        }
        if !plain_env(&raw.secret_env) {
            problem(
                format!("{:?} cannot name an environment variable", raw.secret_env),
                "secret_env",
                "the name of the variable holding the whsec_ secret, like BILLING_WEBHOOK_SECRET",
            );
        }
        let events = event_types(raw.events, &mut problem);
        let timeout = match raw.timeout.as_deref().map(humantime::parse_duration) {
            None => Duration::from_secs(15),
            Some(Ok(d)) if !d.is_zero() && d <= Duration::from_secs(300) => d,
            Some(_) => {
                problem(
                    format!("{:?} is not a timeout", raw.timeout.unwrap_or_default()),
                    "timeout",
                    "a duration up to 5m, like \"15s\"",
                );
                continue;
            }
        };
        out.push(Webhook {
            name,
            url: raw.url,
            secret_env: raw.secret_env,
            events,
            timeout,
            history: raw.history,
        });
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

//! What a vhost about to be purged holds, for the plan.

use crate::targets::provider::ProviderError;

use super::{rows::QueueRow, RabbitMq};

impl RabbitMq {
    /// What a vhost about to be purged holds: its queues and their messages.
    pub(super) async fn holdings(&self, vhost: &str) -> Result<String, ProviderError> {
        let queues: Vec<QueueRow> = self
            .api()
            .await?
            .get(&["queues", vhost], Some("columns=name,messages"))
            .await?
            .unwrap_or_default();
        let messages: u64 = queues.iter().filter_map(|q| q.messages).sum();
        let n = queues.len();
        Ok(format!(
            "{} queue{}, {} message{}",
            n,
            if n == 1 { "" } else { "s" },
            crate::targets::provider::thousands(messages),
            if messages == 1 { "" } else { "s" }
        ))
    }
}

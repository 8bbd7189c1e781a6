//! The management API's rows, as refresh and apply read them.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::targets::broker::{self};

#[derive(Deserialize)]
pub(super) struct VhostRow {
    pub(super) name: String,
    #[serde(default)]
    pub(super) description: Option<String>,
    /// Each node's word for the vhost: `running`, `stopped`, `nodedown`.
    #[serde(default)]
    pub(super) cluster_state: BTreeMap<String, String>,
}

impl VhostRow {
    /// `running` when every node runs it, or what the others say (`stopped on rabbit@a`).
    /// A vhost whose start was cut off (its creator killed mid-request) exists and is
    /// listed, yet refuses every connection until it is started.
    pub(super) fn state(&self) -> String {
        let down: Vec<String> = self
            .cluster_state
            .iter()
            .filter(|(_, state)| state.as_str() != broker::RUNNING)
            .map(|(node, state)| format!("{state} on {node}"))
            .collect();
        if self.cluster_state.is_empty() {
            "not started on any node".to_string()
        } else if down.is_empty() {
            broker::RUNNING.to_string()
        } else {
            down.join(", ")
        }
    }
}

#[derive(Deserialize)]
pub(super) struct UserRow {
    pub(super) name: String,
    #[serde(default)]
    pub(super) password_hash: String,
    #[serde(default)]
    pub(super) tags: Tags,
}

/// A user's tags: a list on RabbitMQ 3.9 and later, one comma-separated string before.
#[derive(Deserialize, Default)]
#[serde(untagged)]
pub(super) enum Tags {
    List(Vec<String>),
    Text(String),
    #[default]
    None,
}

impl Tags {
    pub(super) fn list(&self) -> Vec<String> {
        match self {
            Tags::List(l) => l.clone(),
            Tags::Text(t) => t
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
            Tags::None => Vec::new(),
        }
    }
}

#[derive(Deserialize)]
pub(super) struct PermissionRow {
    pub(super) user: String,
    pub(super) vhost: String,
    pub(super) configure: String,
    pub(super) write: String,
    pub(super) read: String,
}

#[derive(Deserialize)]
pub(super) struct LimitRow {
    pub(super) vhost: String,
    /// The limits set, by name; a vhost whose limits were all cleared has `[]` (an empty
    /// Erlang map, as the API writes it).
    pub(super) value: Value,
}

#[derive(Deserialize)]
pub(super) struct QueueRow {
    #[serde(default)]
    pub(super) messages: Option<u64>,
}

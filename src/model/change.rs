//! A change to one resource, as a plan shows it and a target carries it out: the action, the
//! fields that differ, and what a purge destroys.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::attrs::Attrs;
use crate::model::resource::{Key, Resource};

/// The pseudo-field a plan shows when apply is to put the mark on a resource of ours.
pub const MARK_FIELD: &str = "managed_by";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Replace,
    Delete,
    /// Adopted: it exists, made outside this state, and `--import` makes it this state's.
    Import,
}

impl Action {
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Import => "<=",
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResourceChange {
    pub key: Key,
    pub action: Action,
    pub fields: Vec<FieldChange>,
    /// The live resource differed from what the state recorded: changed outside.
    pub drift: bool,
    /// A unified diff of the body text, for rendered files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// What the resource should be; absent for a delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<Resource>,
    /// For a purge: what is destroyed, as the deletion audit records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged: Option<Purged>,
    /// For a replace that keeps the old one: what it leaves behind (`schema t_acme`), kept
    /// with its data until the tenant's purge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaves: Option<String>,
}

impl ResourceChange {
    /// A destroy of `key`: a rendered file whose template is gone, or a purge.
    pub fn delete(key: Key, purged: Option<Purged>) -> ResourceChange {
        ResourceChange {
            key,
            action: Action::Delete,
            fields: Vec::new(),
            drift: false,
            diff: None,
            desired: None,
            purged,
            leaves: None,
        }
    }
}

/// A resource a purge destroys: what it is (`schema t_acme`) and what it holds
/// (`2 tables, 1,204 rows`), counted when the plan was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Purged {
    pub resource: String,
    pub holds: String,
    /// A resource of the tenant's that refresh found and the state never recorded (one
    /// adopted, or made by a run cut short before its checkpoint): where it is, as read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<Attrs>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forces_replace: bool,
}

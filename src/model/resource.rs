//! Resources: what a tenant is made of, each with a stable address such as `acme/role`
//! or `acme/file/namespace.yaml`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::attrs::Attrs;
use crate::slug::Slug;

pub use super::kind::Kind;

/// A resource's key within its tenant: `role`, or `file/namespace.yaml` for named kinds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Key {
    pub kind: Kind,
    pub name: Option<String>,
}

impl Key {
    pub fn new(kind: Kind) -> Key {
        Key { kind, name: None }
    }
    pub fn named(kind: Kind, name: impl Into<String>) -> Key {
        Key {
            kind,
            name: Some(name.into()),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{}/{}", self.kind.as_str(), n),
            None => f.write_str(self.kind.as_str()),
        }
    }
}

impl From<Key> for String {
    fn from(k: Key) -> String {
        k.to_string()
    }
}

impl TryFrom<String> for Key {
    type Error = String;
    fn try_from(s: String) -> Result<Key, String> {
        let (kind, name) = match s.split_once('/') {
            Some((k, n)) => (k, Some(n.to_string())),
            None => (s.as_str(), None),
        };
        let kind = Kind::parse(kind).ok_or_else(|| format!("unknown resource kind in {s:?}"))?;
        Ok(Key { kind, name })
    }
}

/// `tenant/key`, the name people read in plans and logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address<'a> {
    pub tenant: &'a Slug,
    pub key: &'a Key,
}

impl fmt::Display for Address<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.key)
    }
}

/// One desired resource of one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub key: Key,
    /// The values compared against the live and recorded ones.
    pub attrs: Attrs,
    /// Body text that is compared by its `sha256` attribute and shown as a diff
    /// (rendered files) or carried to apply (seed rows). Never stored in state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

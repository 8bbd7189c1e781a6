//! A change to one resource, as a plan shows it and a target carries it out: the action, the
//! fields that differ, and what a purge destroys.

use std::borrow::Cow;

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

/// A change to one resource. Written and read as [`Wire`], where every change lists its
/// fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(into = "Wire", from = "Wire")]
pub struct ResourceChange {
    pub key: Key,
    pub action: Action,
    /// The fields that change. A create lists none here: its fields are its desired
    /// attributes, made when asked for ([`ResourceChange::fields`]) rather than held a
    /// second time beside them (a fresh plan of 100,000 tenants holds 5 million).
    pub listed: Vec<FieldChange>,
    /// The live resource differed from what the state recorded: changed outside.
    pub drift: bool,
    /// A unified diff of the body text, for rendered files.
    pub diff: Option<String>,
    /// What the resource should be; absent for a delete.
    pub desired: Option<Resource>,
    /// For a purge: what is destroyed, as the deletion audit records it.
    pub purged: Option<Purged>,
    /// For a replace that keeps the old one: what it leaves behind (`schema t_acme`), kept
    /// with its data until the tenant's purge.
    pub leaves: Option<String>,
}

impl ResourceChange {
    /// A destroy of `key`: a rendered file whose template is gone, or a purge.
    pub fn delete(key: Key, purged: Option<Purged>) -> ResourceChange {
        ResourceChange {
            key,
            action: Action::Delete,
            listed: Vec::new(),
            drift: false,
            diff: None,
            desired: None,
            purged,
            leaves: None,
        }
    }

    /// A create of `desired`, its fields made from it when asked for.
    pub fn create(desired: Resource, drift: bool, diff: Option<String>) -> ResourceChange {
        ResourceChange {
            key: desired.key.clone(),
            action: Action::Create,
            listed: Vec::new(),
            drift,
            diff,
            desired: Some(desired),
            purged: None,
            leaves: None,
        }
    }

    /// The fields that change: those listed, or a create's, from nothing to each of its
    /// desired attributes, with those only apply learns (a password) shown as such.
    pub fn fields(&self) -> Cow<'_, [FieldChange]> {
        match (&self.desired, self.action) {
            (Some(desired), Action::Create) if self.listed.is_empty() => {
                Cow::Owned(created_fields(desired))
            }
            _ => Cow::Borrowed(&self.listed),
        }
    }
}

/// Every attribute of a resource about to be created as a field change from nothing, and
/// each attribute only apply learns as one whose value is known after apply.
pub fn created_fields(r: &Resource) -> Vec<FieldChange> {
    // Read without keeping the parse: the plan holds `r` until it is applied.
    let mut fields: Vec<FieldChange> = r
        .attrs
        .to_fields()
        .into_iter()
        .map(|(k, v)| FieldChange {
            field: k.to_string(),
            old: None,
            new: Some(v),
            forces_replace: false,
        })
        .collect();
    fields.extend(known_after_apply(r));
    fields.sort_by(|a, b| a.field.cmp(&b.field));
    fields
}

/// The fields the target works out as it applies (a new tenant's password needs the id
/// its registry row gets): neither old nor new is known yet, shown as known after apply.
pub fn known_after_apply(r: &Resource) -> impl Iterator<Item = FieldChange> + '_ {
    r.key
        .kind
        .computed()
        .iter()
        .filter(|f| r.attrs.value_of(f).is_none())
        .map(|f| FieldChange {
            field: f.to_string(),
            old: None,
            new: None,
            forces_replace: false,
        })
}

/// A change as a plan file and the JSON plan write it: every change with its fields.
#[derive(Serialize, Deserialize)]
struct Wire {
    key: Key,
    action: Action,
    fields: Vec<FieldChange>,
    drift: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    diff: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    desired: Option<Resource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    purged: Option<Purged>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    leaves: Option<String>,
}

impl From<ResourceChange> for Wire {
    fn from(c: ResourceChange) -> Wire {
        Wire {
            fields: c.fields().into_owned(),
            key: c.key,
            action: c.action,
            drift: c.drift,
            diff: c.diff,
            desired: c.desired,
            purged: c.purged,
            leaves: c.leaves,
        }
    }
}

impl From<Wire> for ResourceChange {
    /// A create read back holds no fields of its own where they are the ones its desired
    /// attributes give (a plan file written by this build, or an earlier one).
    fn from(w: Wire) -> ResourceChange {
        let derived = match (&w.desired, w.action) {
            (Some(desired), Action::Create) => created_fields(desired) == w.fields,
            _ => false,
        };
        ResourceChange {
            key: w.key,
            action: w.action,
            listed: if derived { Vec::new() } else { w.fields },
            drift: w.drift,
            diff: w.diff,
            desired: w.desired,
            purged: w.purged,
            leaves: w.leaves,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kind::Kind;
    use serde_json::json;

    /// A create holds no field list of its own, yet shows, writes and reads back every
    /// field; a change of another kind keeps the list it was given.
    #[test]
    fn a_create_lists_its_fields_from_its_attributes_and_holds_none() {
        let role = Resource {
            key: Key::new(Kind::ROLE),
            attrs: Attrs::from_iter([("name", json!("t_acme")), ("login", json!(true))]),
            content: None,
        };
        let create = ResourceChange::create(role.clone(), false, None);
        assert!(create.listed.is_empty());
        let fields: Vec<String> = create.fields().iter().map(|f| f.field.clone()).collect();
        let mut expected: Vec<String> = ["login", "name"].map(String::from).to_vec();
        expected.extend(Kind::ROLE.computed().iter().map(|f| f.to_string()));
        expected.sort();
        assert_eq!(fields, expected);

        let text = serde_json::to_value(&create).unwrap();
        assert_eq!(text["fields"].as_array().unwrap().len(), expected.len());
        let read: ResourceChange = serde_json::from_value(text).unwrap();
        assert!(read.listed.is_empty(), "read back, a create holds no list");
        assert_eq!(read.fields(), create.fields());

        let update = ResourceChange {
            action: Action::Update,
            listed: vec![FieldChange {
                field: "login".into(),
                old: Some(json!(true)),
                new: Some(json!(false)),
                forces_replace: false,
            }],
            ..create
        };
        let read: ResourceChange =
            serde_json::from_value(serde_json::to_value(&update).unwrap()).unwrap();
        assert_eq!(read.listed, update.listed);
        assert_eq!(read.fields().len(), 1);
    }
}

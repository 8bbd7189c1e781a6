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
    /// The live resource differed from what the state recorded: changed outside.
    pub drift: bool,
    /// What the resource should be; absent for a delete.
    pub desired: Option<Resource>,
    /// What only some changes carry, boxed: a plan holds every change until it is applied,
    /// and a fresh plan of 100,000 tenants holds 900,000 creates, none of which has any of it.
    more: Option<Box<More>>,
}

/// What a change carries besides its resource, when it carries anything.
#[derive(Debug, Clone, Default)]
struct More {
    /// The fields that change. A create lists none here: its fields are its desired
    /// attributes, made when asked for ([`ResourceChange::fields`]) rather than held a
    /// second time beside them.
    listed: Vec<FieldChange>,
    /// A unified diff of the body text of a rendered file that changes. A new file's is
    /// made from its content when asked for ([`ResourceChange::text_diff`]).
    diff: Option<String>,
    /// For a purge: what is destroyed, as the deletion audit records it.
    purged: Option<Purged>,
    /// For a replace that keeps the old one: what it leaves behind (`schema t_acme`), kept
    /// with its data until the tenant's purge.
    leaves: Option<String>,
}

impl ResourceChange {
    /// A change of `key` that lists no fields; the `with_` methods add what it carries.
    pub fn new(key: Key, action: Action, desired: Option<Resource>) -> ResourceChange {
        ResourceChange {
            key,
            action,
            drift: false,
            desired,
            more: None,
        }
    }

    /// A destroy of `key`: a rendered file whose template is gone, or a purge.
    pub fn delete(key: Key, purged: Option<Purged>) -> ResourceChange {
        ResourceChange::new(key, Action::Delete, None).with_purged(purged)
    }

    /// A create of `desired`, its fields (and a rendered file's diff) made from it when
    /// asked for.
    pub fn create(desired: Resource, drift: bool) -> ResourceChange {
        ResourceChange::new(desired.key.clone(), Action::Create, Some(desired)).drifted(drift)
    }

    /// The change, marked as drifted or not.
    pub fn drifted(mut self, drift: bool) -> ResourceChange {
        self.drift = drift;
        self
    }

    /// The change with `value` set in its box through `slot`: a box is made only for a
    /// value, so a change that carries none of these stays without one.
    fn with<T>(mut self, value: Option<T>, slot: fn(&mut More) -> &mut Option<T>) -> Self {
        if value.is_some() {
            *slot(self.more.get_or_insert_with(Box::default)) = value;
        }
        self
    }

    /// The change with `listed` as the fields that change.
    pub fn with_fields(mut self, listed: Vec<FieldChange>) -> ResourceChange {
        if !listed.is_empty() {
            self.more.get_or_insert_with(Box::default).listed = listed;
        }
        self
    }

    /// The change with `diff` as its rendered text's diff.
    pub fn with_diff(self, diff: Option<String>) -> ResourceChange {
        self.with(diff, |m| &mut m.diff)
    }

    /// The change with what its purge destroys.
    pub fn with_purged(self, purged: Option<Purged>) -> ResourceChange {
        self.with(purged, |m| &mut m.purged)
    }

    /// The change with what its replace leaves behind.
    pub fn with_leaves(self, leaves: Option<String>) -> ResourceChange {
        self.with(leaves, |m| &mut m.leaves)
    }

    /// The fields listed as changing (none for a create, whose fields are made from its
    /// resource: see [`ResourceChange::fields`]).
    pub fn listed(&self) -> &[FieldChange] {
        self.more.as_ref().map_or(&[], |m| &m.listed)
    }

    /// For a purge: what is destroyed.
    pub fn purged(&self) -> Option<&Purged> {
        self.more.as_ref()?.purged.as_ref()
    }

    /// For a replace that keeps the old one: what it leaves behind.
    pub fn leaves(&self) -> Option<&str> {
        self.more.as_ref()?.leaves.as_deref()
    }

    fn diff(&self) -> Option<&str> {
        self.more.as_ref()?.diff.as_deref()
    }

    /// The fields that change: those listed, or a create's, from nothing to each of its
    /// desired attributes, with those only apply learns (a password) shown as such.
    pub fn fields(&self) -> Cow<'_, [FieldChange]> {
        match (&self.desired, self.action) {
            (Some(desired), Action::Create) if self.listed().is_empty() => {
                Cow::Owned(created_fields(desired))
            }
            _ => Cow::Borrowed(self.listed()),
        }
    }

    /// The unified diff of a rendered file's text: the one listed, or a new file's, made
    /// from its content.
    pub fn text_diff(&self) -> Option<Cow<'_, str>> {
        match (self.diff(), &self.desired, self.action) {
            (Some(diff), _, _) => Some(Cow::Borrowed(diff)),
            (None, Some(desired), Action::Create) => created_diff(desired).map(Cow::Owned),
            _ => None,
        }
    }
}

/// A new rendered file's text as a diff from nothing; none for other kinds.
fn created_diff(r: &Resource) -> Option<String> {
    r.content
        .as_deref()
        .filter(|_| crate::model::kind::of(r.key.kind).generated)
        .map(|c| content_diff("", c))
}

/// A unified diff of rendered content, for people to read.
pub fn content_diff(old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header("live", "rendered")
        .to_string()
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
        let diff = c.text_diff().map(Cow::into_owned);
        let fields = c.fields().into_owned();
        let more = c.more.map(|m| *m).unwrap_or_default();
        Wire {
            fields,
            key: c.key,
            action: c.action,
            drift: c.drift,
            diff,
            desired: c.desired,
            purged: more.purged,
            leaves: more.leaves,
        }
    }
}

impl From<Wire> for ResourceChange {
    /// A create read back holds no fields (nor a new file's diff) of its own where they are
    /// the ones its desired resource gives (a plan file written by this build, or an
    /// earlier one).
    fn from(w: Wire) -> ResourceChange {
        let (fields_derived, diff_derived) = match (&w.desired, w.action) {
            (Some(desired), Action::Create) => (
                created_fields(desired) == w.fields,
                created_diff(desired) == w.diff,
            ),
            _ => (false, false),
        };
        ResourceChange::new(w.key, w.action, w.desired)
            .drifted(w.drift)
            .with_fields(if fields_derived { Vec::new() } else { w.fields })
            .with_diff(if diff_derived { None } else { w.diff })
            .with_purged(w.purged)
            .with_leaves(w.leaves)
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
        let create = ResourceChange::create(role.clone(), false);
        assert!(create.listed().is_empty());
        let fields: Vec<String> = create.fields().iter().map(|f| f.field.clone()).collect();
        let mut expected: Vec<String> = ["login", "name"].map(String::from).to_vec();
        expected.extend(Kind::ROLE.computed().iter().map(|f| f.to_string()));
        expected.sort();
        assert_eq!(fields, expected);

        let text = serde_json::to_value(&create).unwrap();
        assert_eq!(text["fields"].as_array().unwrap().len(), expected.len());
        let read: ResourceChange = serde_json::from_value(text).unwrap();
        assert!(
            read.listed().is_empty(),
            "read back, a create holds no list"
        );
        assert_eq!(read.fields(), create.fields());

        let update = ResourceChange {
            action: Action::Update,
            ..create
        }
        .with_fields(vec![FieldChange {
            field: "login".into(),
            old: Some(json!(true)),
            new: Some(json!(false)),
            forces_replace: false,
        }]);
        let read: ResourceChange =
            serde_json::from_value(serde_json::to_value(&update).unwrap()).unwrap();
        assert_eq!(read.listed(), update.listed());
        assert_eq!(read.fields().len(), 1);
    }

    /// A new rendered file holds no diff of its own, yet shows, writes and reads back the
    /// diff of its whole text; a changed file keeps the diff it was given.
    #[test]
    fn a_new_file_s_diff_is_made_from_its_text_and_held_once() {
        let file = Resource {
            key: Key::named(Kind::FILE, "app.env"),
            attrs: Attrs::from_iter([("sha256", json!("abc"))]),
            content: Some("A=1\nB=2\n".into()),
        };
        let create = ResourceChange::create(file.clone(), false);
        assert!(create.diff().is_none());
        let diff = create.text_diff().expect("a new file shows its text");
        assert!(diff.contains("+A=1\n+B=2"), "{diff}");

        let text = serde_json::to_value(&create).unwrap();
        assert_eq!(text["diff"].as_str(), Some(diff.as_ref()));
        let read: ResourceChange = serde_json::from_value(text).unwrap();
        assert!(read.diff().is_none(), "read back, a new file holds no diff");
        assert_eq!(read.text_diff(), create.text_diff());

        let changed = ResourceChange {
            action: Action::Update,
            ..create
        }
        .with_diff(Some(content_diff("A=0\n", "A=1\n")));
        let read: ResourceChange =
            serde_json::from_value(serde_json::to_value(&changed).unwrap()).unwrap();
        assert_eq!(read.diff(), changed.diff());
        // Seed rows and the like carry a body but show no diff.
        let seed = Resource {
            key: Key::new(Kind::SEED),
            attrs: Attrs::from_iter([("rows", json!(1))]),
            content: Some("{}".into()),
        };
        assert!(ResourceChange::create(seed, false).text_diff().is_none());
    }

    /// Every planned change of a fleet is held until its tenant's turn: a change stays
    /// small, whatever few of them carry (listed fields, a diff, a purge's record, a
    /// replace's leftover), and a create carries none of it.
    #[test]
    fn a_planned_change_stays_small() {
        let size = std::mem::size_of::<ResourceChange>();
        assert!(size <= 136, "a ResourceChange is {size} bytes");
        let file = Resource {
            key: Key::named(Kind::FILE, "app.env"),
            attrs: Attrs::from_iter([("sha256", json!("abc"))]),
            content: Some("A=1\n".into()),
        };
        assert!(ResourceChange::create(file, false).more.is_none());
    }
}

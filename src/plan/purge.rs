//! The purge of a tenant as a plan shows it: each resource of the tenant's a `-` destroy
//! with what it holds, in the reverse of the order it was built (what depends on others
//! goes first), then the registry row left as a tombstone. A tenant's resources are those
//! the state records, those refresh finds carrying this state's mark for this tenant (or
//! kept in its control plane) though the state never recorded them (adopted and left
//! unchanged, or made by a run cut short), and those its replaces retired and kept. What
//! the state never made is not its to destroy.

use serde_json::json;

use super::{Action, FieldChange, Purged, ResourceChange};
use crate::desired::{Attrs, Key, Kind, Resource};
use crate::model::kind as kinds;
use crate::slug::Slug;
use crate::state::TenantState;
use crate::targets::provider::{LiveFleet, Mark, Owner};

/// The changes that purge `recorded`; `live` (when refreshed) says what each holds, and
/// what of the tenant's the state did not record; `mark` is this state's, for the tenant.
pub fn changes(
    slug: &Slug,
    recorded: &TenantState,
    live: Option<&LiveFleet>,
    mark: &Mark,
) -> Vec<ResourceChange> {
    let mut out = Vec::new();
    let found = unrecorded(slug, recorded, live, mark);
    for &kind in kinds::purge_order() {
        for (key, attrs) in found.iter().filter(|(k, _)| k.kind == kind) {
            let (key, attrs) = (*key, *attrs);
            let counted_by_target = live.and_then(|l| l.holding(slug, key));
            out.push(ResourceChange::delete(
                key.clone(),
                Some(Purged {
                    resource: counted_by_target
                        .and_then(|h| h.resource.clone())
                        .unwrap_or_else(|| resource(kind, attrs)),
                    holds: counted_by_target
                        .map(|h| h.holds.clone())
                        .unwrap_or_else(|| counted(kind, attrs)),
                    found: Some(attrs.clone()),
                }),
            ));
        }
        for r in recorded.retired.iter().filter(|r| r.key.kind == kind) {
            let current = live_of(slug, &r.key, live, mark).or(recorded.resources.get(&r.key));
            if r.is(
                current,
                crate::model::retired::placed_on(&recorded.resources),
            ) {
                continue;
            }
            let key = r.address_key();
            let holds = match live.and_then(|l| l.holding(slug, &key)) {
                Some(h) => format!("{}, {}", h.holds, r.how_left()),
                None => r.how_left(),
            };
            out.push(ResourceChange::delete(
                key,
                Some(Purged {
                    resource: r.resource.clone(),
                    holds,
                    found: None,
                }),
            ));
        }
        for (key, recorded_attrs) in recorded.resources.iter().filter(|(k, _)| k.kind == kind) {
            // A run stopped after a replace and before recording it leaves the record a step
            // behind: the resource that stands is the one purged (the old one is retired).
            let stands = live_of(slug, key, live, mark)
                .filter(|l| purged_resource_differs(kind, l, recorded_attrs));
            let attrs = stands.unwrap_or(recorded_attrs);
            let counted_by_target = live.and_then(|l| l.holding(slug, key));
            let holds = match live {
                // A run stopped after destroying it, before recording that: its purge is
                // finished (and audited) again, changing nothing.
                Some(l) if !l.contains(slug, key) => "already gone".to_string(),
                _ => counted_by_target
                    .map(|h| h.holds.clone())
                    .unwrap_or_else(|| counted(kind, attrs)),
            };
            let resource = counted_by_target
                .and_then(|h| h.resource.clone())
                .unwrap_or_else(|| resource(kind, attrs));
            out.push(ResourceChange::delete(
                key.clone(),
                Some(Purged {
                    resource,
                    holds,
                    found: stands.cloned(),
                }),
            ));
        }
    }
    let registry = Key::new(Kind::REGISTRY);
    // The live row stands in for a record the state lacks (an adoption cut short).
    let row = recorded
        .resources
        .get(&registry)
        .or_else(|| live.and_then(|l| l.get(slug, &registry)).map(|l| &l.attrs));
    if let Some(row) = row {
        // The tombstone keeps the tenant's id, slug, plan and dates; its name goes, as the
        // owner's email goes with the membership.
        let mut tombstone = row.clone();
        tombstone.insert("name", json!(""));
        if !row.str("name").is_empty() {
            let desired = Resource {
                key: registry.clone(),
                attrs: tombstone,
                content: None,
            };
            out.push(
                ResourceChange::new(registry, Action::Update, Some(desired)).with_fields(vec![
                    FieldChange {
                        field: "name".into(),
                        old: row.get("name").cloned(),
                        new: Some(json!("")),
                        forces_replace: false,
                    },
                ]),
            );
        }
    }
    out
}

/// The live attributes of the tenant's `key`, when refresh found it and it is the tenant's.
fn live_of<'a>(
    slug: &Slug,
    key: &Key,
    live: Option<&'a LiveFleet>,
    mark: &Mark,
) -> Option<&'a Attrs> {
    let l = live?.get(slug, key)?;
    ours(&l.owner, mark).then_some(&l.attrs)
}

/// Whether a live resource is the tenant's by its mark, or kept where only the tenant's are.
fn ours(owner: &Owner, mark: &Mark) -> bool {
    match owner {
        Owner::Untracked => true,
        Owner::Marked(m) => !mark.lineage.is_empty() && mark.claims(m),
        Owner::Unmarked => false,
    }
}

/// Whether `live` is another resource than `recorded` names (another slice or bucket).
fn purged_resource_differs(kind: Kind, live: &Attrs, recorded: &Attrs) -> bool {
    kinds::of(kind).located && resource(kind, live) != resource(kind, recorded)
}

/// The tenant's resources that refresh found and the state does not record: kept in its
/// control plane (rows under its id), or marked by this state for this tenant. An unmarked
/// one, or one of another tenant's or state's, is not the purge's to destroy.
fn unrecorded<'a>(
    slug: &'a Slug,
    recorded: &'a TenantState,
    live: Option<&'a LiveFleet>,
    mark: &Mark,
) -> Vec<(&'a Key, &'a Attrs)> {
    let Some(live) = live else {
        return Vec::new();
    };
    let mut out: Vec<(&Key, &Attrs)> = live
        .resources_of(slug)
        .filter(|(key, _)| {
            kinds::of(key.kind).purge_turn.is_some() && !recorded.resources.contains_key(key)
        })
        .filter(|(_, r)| ours(&r.owner, mark))
        .map(|(key, r)| (key, &r.attrs))
        .collect();
    out.sort_by(|a, b| a.0.cmp(b.0));
    out
}

/// What a resource is, without anything of the tenant's own in it: no email, no value.
pub fn resource(kind: Kind, attrs: &Attrs) -> String {
    kinds::of(kind).resource(attrs)
}

/// What a resource holds when its target did not count it: what the state knows.
fn counted(kind: Kind, attrs: &Attrs) -> String {
    kinds::of(kind).holds(attrs)
}

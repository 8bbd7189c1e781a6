//! The recorded state: what tenant-reconcile has done, per tenant and resource.
//!
//! Versioned JSON with a serial (bumped by every change) and a lineage (fixed when the state
//! is first written), so a saved plan can tell whether the state moved since it was made.
//! It never holds a secret: credentials are derived, and only their fingerprint is kept.

pub mod backend;
pub mod claims;
pub mod header;
pub mod leases;
pub mod local;
pub mod postgres;
pub mod record_lock;
pub mod record_writer;
pub mod records;
pub mod retired;
pub mod s3;
pub mod shared;
pub mod whole_write;

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use backend::{LockInfo, StateBackend, StateError, StateLock, Wait};
pub use retired::Retired;

// Where a tenant is in its life, and the clock its records are stamped with, are the model's;
// the state's users name them from here as well.
pub use crate::model::lifecycle::{now, Lifecycle};

use crate::model::attrs::Attrs;
use crate::model::resource::Key;

/// The one-document format's version (what an older tenant-reconcile wrote: `state.json`,
/// the s3 backend's object).
pub const FORMAT_VERSION: u32 = 1;

/// The records format's version (a header and a record per tenant: `records.rs` in SQL,
/// `s3/` as objects). Where a
/// state in it is found by the one-document reader of an older tenant-reconcile, a document
/// of this version says so, which that reader refuses as a newer format.
pub const RECORDS_VERSION: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub format_version: u32,
    pub serial: u64,
    pub lineage: String,
    /// The git commit of the tenant repo the last apply ran from, when it is a git repo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    #[serde(default)]
    pub updated_at: String,
    /// The identifier of the master key the tenants' passwords are derived from
    /// ([`MasterKey::id`](crate::credentials::MasterKey::id)), never the key: a run with
    /// another key is refused unless it rotates the key on purpose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key_id: Option<String>,
    /// Every migration applied to some tenant, by id, with its checksum: an applied
    /// migration whose file changed is refused.
    #[serde(default)]
    pub migrations: BTreeMap<String, String>,
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantState>,
    /// Tenants this state let go of without touching them (`state rm`), and who did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released: Vec<Released>,
    /// The commit whose shared inputs (plans, templates, migrations) the fleet runs on,
    /// when the config has a rollout policy: a change to them from there is a rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_rev: Option<String>,
    /// The last rollout, in flight or ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::model::rollout::Rollout>,
    /// How many rollouts this state has started: the next one's number.
    #[serde(default, skip_serializing_if = "none_started")]
    pub rollouts: u32,
    /// Checkpoints recorded since the last full snapshot (each bumped `serial`).
    #[serde(skip)]
    pub checkpoints: u64,
    /// Observations (health) recorded since the last full snapshot: they moved no serial,
    /// but they are replayed by every load until a snapshot folds them in.
    #[serde(skip)]
    pub observations: u64,
    /// In records (`records.rs`): the header's generation as stored, 0 before it is.
    #[serde(skip)]
    pub generation: u64,
    /// In records: each tenant's record generation as stored (or as this run's pending
    /// write will store it).
    #[serde(skip)]
    pub generations: std::collections::HashMap<String, u64>,
    /// Tenants recorded in memory and not written yet: the next whole write writes them.
    #[serde(skip)]
    pub unwritten: BTreeSet<String>,
    /// In records: what the stored header says (but when it was written), so a whole
    /// write that would say the same leaves it.
    #[serde(skip)]
    pub header_said: Option<String>,
    /// In records: the stored header no longer says what the records do (it counts the live
    /// tenants, and a run killed after creating some never wrote it again). The next whole
    /// write, even of an apply with nothing to do, brings it up to date.
    #[serde(skip)]
    pub header_behind: bool,
    /// Read for some tenants only (a plan of some tenants): `tenants` holds theirs and no
    /// other's. Such a state is never written back.
    #[serde(skip)]
    pub scope: Option<Scope>,
    /// Tenants an apply is done with, whose records it wrote and no longer holds
    /// ([`State::let_go`]), each with its lifecycle, which is all the state's counts need
    /// of it. They are still this state's: its whole write neither writes nor removes them.
    #[serde(skip)]
    pub let_go: std::collections::HashMap<String, Lifecycle>,
}

/// The tenants a state was read for, and what the fleet it is part of counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    pub slugs: BTreeSet<String>,
    /// How many tenants the whole state records that are not tombstones.
    pub live: usize,
    /// How many of its own tenants were not tombstones when it was read: a write of its
    /// records moves the fleet's count by what they became since ([`State::live_tenants`]).
    pub own_live: usize,
    /// Read by a run that holds each of them (a lease on each, as a claiming runner's batch
    /// is held; or the whole state's lock, on S3): it may write their records, one by one
    /// (fenced by its leases, where it has them), never the whole state.
    pub held: bool,
}

impl State {
    /// The recorded state of `slug`, and its generation (0 for none): what a plan of some
    /// tenants was made against, and what applying it must still find.
    pub fn generation_of(&self, slug: &str) -> u64 {
        self.generations.get(slug).copied().unwrap_or(0)
    }

    /// A digest of what the state says beside its tenants that a plan is made from: the
    /// master key's id, the migrations recorded, the tenants released. (Not the commit or
    /// time of the last apply, which every apply moves.)
    pub fn header_digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let said = serde_json::to_vec(&(&self.master_key_id, &self.migrations, &self.released))
            .expect("the header serializes");
        hex::encode(&Sha256::digest(&said)[..12])
    }

    /// How many tenants the state records that are not tombstones: counted from the index
    /// when only some were read, and moved by what those became since.
    pub fn live_tenants(&self) -> usize {
        let own = self.own_live();
        match &self.scope {
            Some(scope) => (scope.live + own).saturating_sub(scope.own_live),
            None => own,
        }
    }

    /// How many of the tenants this state holds are not tombstones.
    pub fn own_live(&self) -> usize {
        let held = self
            .tenants
            .values()
            .filter(|t| t.lifecycle != Lifecycle::Deprovisioned)
            .count();
        let let_go = self
            .let_go
            .values()
            .filter(|l| **l != Lifecycle::Deprovisioned)
            .count();
        held + let_go
    }

    /// Keeps only the records of `slugs`, for a backend that can read only the whole state.
    pub fn narrow_to(&mut self, slugs: &BTreeSet<String>) {
        let live = self.live_tenants();
        self.tenants.retain(|slug, _| slugs.contains(slug));
        self.generations.retain(|slug, _| slugs.contains(slug));
        self.scope = Some(Scope {
            slugs: slugs.clone(),
            live,
            own_live: self.own_live(),
            held: false,
        });
    }

    /// Marks this state, read for some tenants, as read by a run that holds each of them:
    /// see [`Scope::held`].
    pub fn held_by_this_run(&mut self) {
        if let Some(scope) = &mut self.scope {
            scope.held = true;
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct TenantState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    pub lifecycle: Lifecycle,
    /// The step in progress while provisioning, so a stuck tenant shows where it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default = "one")]
    pub credentials_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_commit: Option<String>,
    /// The commit a run that has not finished the tenant applies, set with its first step
    /// and cleared when it finishes: a runner taking the tenant over from a run that died
    /// (`apply --claim`) tells from it whether that run applied the same files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applying_commit: Option<String>,
    #[serde(default)]
    pub updated_at: String,
    /// Each resource's attributes as last applied or refreshed.
    #[serde(default, deserialize_with = "recorded_resources")]
    pub resources: BTreeMap<Key, Attrs>,
    /// Resources being created whose mark of ownership comes in a later call (a database
    /// is commented on after CREATE DATABASE, a bucket tagged after CreateBucket): recorded
    /// before the create, so a run killed in between knows the unmarked one is its own.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub creating: BTreeSet<Key>,
    /// Why its last apply failed, while it has not succeeded since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Failure>,
    /// Its purge, from the moment the first resource is purged: from then on the tenant
    /// can only go on to its tombstone, whatever its file says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge: Option<Purge>,
    /// What its last smoke tests found (before it became active, or `check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::model::health::HealthRecord>,
    /// Hook runs owed to it, each with its idempotency key, until they succeed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<crate::model::hook_runs::HookRun>,
    /// The last run of each hook that succeeded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hooks_done: BTreeMap<String, crate::model::hook_runs::HookDone>,
    /// What its hooks gave back (`billing_customer_id`): templates see them as
    /// `tenant.outputs`. Never secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
    /// What replaces left behind and kept, with their data, until the tenant's purge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<Retired>,
    /// Drawn when this state adopted the tenant (`--import`) from a registry row it did not
    /// make (a slug it released, or one another state made): its passwords derive from it
    /// as well, so no password handed out before the adoption works after it. Tenants this
    /// state registered have a new id of their own and need none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<String>,
    /// Its part in the last rollout that reached it: each attempt at its change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::model::rollout::TenantRollout>,
}

/// A tenant's purge: when it began and ended, and whether it was an erasure request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Purge {
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub erasure: bool,
    /// An erasure's export is kept until then, and removed by the first apply after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_until: Option<String>,
    /// When that export was removed: nothing of the tenant's data is left anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_removed_at: Option<String>,
}

/// A tenant's failed apply: the step it stopped at, the error, when, and how many applies
/// in a row have failed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Failure {
    pub step: String,
    pub error: String,
    pub at: String,
    pub attempts: u32,
}

/// Resources read with each map's text taken as it is written when it is canonical
/// ([`Attrs::from_json`]): a state holds ten maps per tenant, and parsing and rewriting them
/// was most of reading a large one. States are always read from JSON text, which is what lets
/// the maps be taken raw.
fn recorded_resources<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<Key, Attrs>, D::Error> {
    let raw: BTreeMap<Key, Box<RawValue>> = BTreeMap::deserialize(deserializer)?;
    raw.into_iter()
        .map(|(key, text)| {
            Attrs::from_json(text.into())
                .map(|attrs| (key, attrs))
                .map_err(serde::de::Error::custom)
        })
        .collect()
}

/// A tenant the state forgot on purpose (`state rm`): its resources were left as they
/// were, with their data. Kept so that who let it go, and when, is on record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Released {
    pub slug: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// The addresses it had, as the state recorded them.
    pub resources: Vec<String>,
    /// `user@host`, as a lock names its holder.
    pub by: String,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
}

fn one() -> u32 {
    1
}

/// One tenant's state as recorded right after a step, on top of a given snapshot. Backends
/// keep these between full writes; loading replays those that belong to the snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    pub lineage: String,
    /// The serial of the snapshot this entry applies on top of.
    pub base_serial: u64,
    pub slug: String,
    pub tenant: TenantState,
    /// The state's serial once this entry is recorded. A backend that keeps only each
    /// tenant's latest entry (s3) replays fewer entries than were written; the serial
    /// still ends where the writer's did, so a plan saved in between is seen as stale.
    #[serde(default)]
    pub serial: u64,
    /// What was observed of the tenant (its health, by `check`), not a change: replaying
    /// it does not move the serial, so a plan saved before a check still applies.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub observation: bool,
    /// In records: the tenant's record generation before this entry is written (0: none
    /// yet), and the one it gets (the same for an observation).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub expected: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl State {
    /// The checkpoint that records `tenant` (recorded in memory already) on top of this
    /// state's last snapshot, or of its record's generation, which it moves on: the caller
    /// writes it.
    pub fn checkpoint(&mut self, slug: &str, tenant: &TenantState) -> Checkpoint {
        let expected = self.generations.get(slug).copied().unwrap_or(0);
        self.generations.insert(slug.to_string(), expected + 1);
        self.unwritten.remove(slug);
        Checkpoint {
            lineage: self.lineage.clone(),
            base_serial: self.serial_base(),
            slug: slug.to_string(),
            tenant: tenant.clone(),
            serial: self.serial,
            observation: false,
            expected,
            generation: expected + 1,
        }
    }

    /// Records what was observed of one tenant (its health) without moving the serial (or
    /// its record's generation), and the checkpoint that says so.
    pub fn observe(&mut self, slug: &str, tenant: TenantState) -> Checkpoint {
        let mut entry = self.checkpoint(slug, &tenant);
        entry.observation = true;
        entry.generation = entry.expected;
        self.generations.insert(slug.to_string(), entry.expected);
        self.tenants.insert(slug.to_string(), tenant);
        entry
    }

    /// Applies the checkpoints written on top of this snapshot, in order; others (left
    /// from an older snapshot or another lineage) are ignored.
    pub fn replay(&mut self, entries: impl IntoIterator<Item = Checkpoint>) {
        for entry in entries {
            if entry.lineage == self.lineage && entry.base_serial == self.serial_base() {
                if entry.observation {
                    self.tenants.insert(entry.slug, entry.tenant);
                    self.observations += 1;
                } else {
                    self.record(entry.slug, entry.tenant);
                }
                if entry.serial > self.serial {
                    self.checkpoints += entry.serial - self.serial;
                    self.serial = entry.serial;
                }
            }
        }
    }

    /// Reads a state document written by any backend; `describe` names where it came from
    /// in errors. The format version is checked first, so a newer tool's state is refused
    /// with that reason rather than as a puzzling parse error.
    pub fn decode(bytes: &[u8], describe: impl Fn() -> String) -> Result<State, StateError> {
        // Read in two steps: the document with each tenant left as raw text, then the
        // tenants side by side (a 10,000-tenant state is about 12 MB of JSON). Every field
        // is optional in the first step so that a state of another format version is
        // reported as that, not as a missing field.
        #[derive(Deserialize)]
        struct Raw<'a> {
            format_version: Option<u32>,
            serial: Option<u64>,
            lineage: Option<String>,
            #[serde(default)]
            git_commit: Option<String>,
            #[serde(default)]
            updated_at: String,
            #[serde(default)]
            master_key_id: Option<String>,
            #[serde(default)]
            migrations: BTreeMap<String, String>,
            #[serde(default, borrow)]
            tenants: BTreeMap<String, &'a RawValue>,
            #[serde(default)]
            released: Vec<Released>,
        }
        let corrupt = |message: String| StateError::Corrupt {
            path: describe(),
            message,
        };
        let raw: Raw<'_> = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        let found = raw.format_version.unwrap_or(0);
        if found != FORMAT_VERSION {
            return Err(StateError::Version {
                path: describe(),
                found,
                supported: FORMAT_VERSION,
            });
        }
        let missing = |field: &str| corrupt(format!("missing field `{field}`"));
        let tenants = raw
            .tenants
            .into_par_iter()
            .map(|(slug, text)| match serde_json::from_str(text.get()) {
                Ok(t) => Ok((slug, t)),
                Err(e) => Err(format!("tenant {slug}: {e}")),
            })
            .collect::<Result<BTreeMap<String, TenantState>, String>>()
            .map_err(corrupt)?;
        Ok(State {
            format_version: found,
            serial: raw.serial.ok_or_else(|| missing("serial"))?,
            lineage: raw.lineage.ok_or_else(|| missing("lineage"))?,
            git_commit: raw.git_commit,
            updated_at: raw.updated_at,
            master_key_id: raw.master_key_id,
            migrations: raw.migrations,
            tenants,
            released: raw.released,
            ..State::empty()
        })
    }

    /// The state before anything was ever applied. Its lineage is chosen when first written.
    pub fn empty() -> State {
        State {
            format_version: FORMAT_VERSION,
            serial: 0,
            lineage: String::new(),
            git_commit: None,
            updated_at: String::new(),
            master_key_id: None,
            migrations: BTreeMap::new(),
            tenants: BTreeMap::new(),
            released: Vec::new(),
            inputs_rev: None,
            rollout: None,
            rollouts: 0,
            checkpoints: 0,
            observations: 0,
            generation: 0,
            generations: Default::default(),
            unwritten: BTreeSet::new(),
            header_said: None,
            header_behind: false,
            scope: None,
            let_go: Default::default(),
        }
    }

    /// The serial of the last full snapshot; checkpoints count on top of it.
    pub fn serial_base(&self) -> u64 {
        self.serial - self.checkpoints
    }

    /// Forgets `slug`'s record in memory once it is written (a record still to be written
    /// is kept): an apply lets go of each tenant it is done with, so what it holds does not
    /// grow with the fleet. Its lifecycle is kept for the counts.
    pub fn let_go(&mut self, slug: &str) {
        if self.unwritten.contains(slug) {
            return;
        }
        if let Some(tenant) = self.tenants.remove(slug) {
            self.let_go.insert(slug.to_string(), tenant.lifecycle);
        }
    }

    /// Records one tenant's new state as a checkpoint: the serial moves with every change,
    /// so a plan made before it is known to be stale.
    pub fn record(&mut self, slug: String, tenant: TenantState) {
        self.unwritten.insert(slug.clone());
        self.tenants.insert(slug, tenant);
        self.serial += 1;
        self.checkpoints += 1;
    }

    /// Readies the state to be written whole: a new serial, and a lineage if it has none.
    pub fn prepare_snapshot(&mut self) {
        // Its other tenants were never read: written whole, they would be lost.
        assert!(
            self.scope.as_ref().is_none_or(|s| s.held),
            "a state read for some tenants is written"
        );
        if self.lineage.is_empty() {
            self.lineage = uuid::Uuid::new_v4().to_string();
        }
        self.serial += 1;
        self.checkpoints = 0;
        self.observations = 0;
        self.updated_at = now();
    }

    pub fn is_new(&self) -> bool {
        self.lineage.is_empty()
    }
}

/// No rollout started yet: the count is left out of the state.
pub(super) fn none_started(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(text: &str) -> Result<State, StateError> {
        State::decode(text.as_bytes(), || "state.json".to_string())
    }

    #[test]
    fn decodes_what_it_encodes() {
        let mut state = State::empty();
        state.lineage = "l".into();
        state.serial = 7;
        state.migrations.insert("0001".into(), "abc".into());
        let mut acme = TenantState {
            tenant_id: Some("id-1".into()),
            lifecycle: Lifecycle::Active,
            credentials_version: 2,
            ..TenantState::default()
        };
        acme.resources.insert(
            Key::new(crate::model::resource::Kind::REGISTRY),
            [("name", serde_json::json!("Acme"))].into_iter().collect(),
        );
        state.tenants.insert("acme".into(), acme);
        state
            .tenants
            .insert("globex".into(), TenantState::default());
        let text = serde_json::to_string_pretty(&state).unwrap();
        assert_eq!(decode(&text).unwrap(), state);
    }

    #[test]
    fn a_newer_format_is_refused_as_that_whatever_its_shape() {
        let err = decode(r#"{"format_version": 2, "tenants": {"acme": [1, 2]}}"#).unwrap_err();
        assert!(matches!(err, StateError::Version { found: 2, .. }), "{err}");
    }

    #[test]
    fn a_damaged_tenant_is_named() {
        let err = decode(
            r#"{"format_version": 1, "serial": 1, "lineage": "l",
                "tenants": {"acme": {"lifecycle": "sleeping"}}}"#,
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, StateError::Corrupt { .. }), "{message}");
        assert!(message.contains("tenant acme"), "{message}");
        let err = decode(r#"{"format_version": 1, "lineage": "l"}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `serial`"), "{err}");
    }
}

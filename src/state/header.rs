//! The header of a state kept as records, whichever store keeps them (SQL rows,
//! `records.rs`; S3 objects, `s3/`): what the state holds that is not a tenant's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Released, State, StateError, RECORDS_VERSION};

/// What the header records: the state's fields that are not a tenant's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub format_version: u32,
    lineage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    git_commit: Option<String>,
    #[serde(default)]
    updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    master_key_id: Option<String>,
    #[serde(default)]
    migrations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    released: Vec<Released>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inputs_rev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rollout: Option<Box<crate::model::rollout::Rollout>>,
    #[serde(default, skip_serializing_if = "super::none_started")]
    rollouts: u32,
    /// How many tenants the records hold that are not tombstones, where the store cannot
    /// count them without reading every record (S3); the SQL stores count their rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<usize>,
}

impl Header {
    pub fn of(state: &State) -> Header {
        Header {
            format_version: RECORDS_VERSION,
            lineage: state.lineage.clone(),
            git_commit: state.git_commit.clone(),
            updated_at: state.updated_at.clone(),
            master_key_id: state.master_key_id.clone(),
            migrations: state.migrations.clone(),
            released: state.released.clone(),
            inputs_rev: state.inputs_rev.clone(),
            rollout: state.rollout.clone().map(Box::new),
            rollouts: state.rollouts,
            live: None,
        }
    }

    /// What the header says, but when it was written: a write that would change only that
    /// is left out.
    pub fn said(mut self) -> String {
        self.updated_at.clear();
        serde_json::to_string(&self).expect("state serializes")
    }

    /// A state holding what this header says, at header generation `generation`, and no
    /// tenant yet.
    pub fn into_state(self, generation: u64) -> State {
        let mut state = State::empty();
        state.header_said = Some(self.clone().said());
        state.lineage = self.lineage;
        state.git_commit = self.git_commit;
        state.updated_at = self.updated_at;
        state.master_key_id = self.master_key_id;
        state.migrations = self.migrations;
        state.released = self.released;
        state.inputs_rev = self.inputs_rev;
        state.rollout = self.rollout.map(|r| *r);
        state.rollouts = self.rollouts;
        state.generation = generation;
        state.serial = generation;
        state
    }

    /// A header of another format version is refused as that.
    pub fn check_version(&self, describe: &str) -> Result<(), StateError> {
        match self.format_version == RECORDS_VERSION {
            true => Ok(()),
            false => Err(StateError::Version {
                path: describe.to_string(),
                found: self.format_version,
                supported: RECORDS_VERSION,
            }),
        }
    }
}

/// Takes into `state` what another run wrote into the header since `state` was read, for a
/// run that holds some tenants only and writes the header beside others: the migrations
/// either recorded, the key either learnt, the tenants released; this run's commit.
pub fn merge_header(
    state: &mut State,
    generation: u64,
    header: Header,
    describe: &str,
) -> Result<(), StateError> {
    if header.lineage != state.lineage {
        return Err(StateError::Corrupt {
            path: describe.to_string(),
            message: format!(
                "its lineage became {} while this run held some of its tenants",
                header.lineage
            ),
        });
    }
    state.header_said = Some(header.clone().said());
    for (id, checksum) in header.migrations {
        state.migrations.entry(id).or_insert(checksum);
    }
    if state.master_key_id.is_none() {
        state.master_key_id = header.master_key_id;
    }
    state.released = header.released;
    state.generation = generation;
    Ok(())
}

/// Marks a state in the one-document format as made into records (each of its tenants at
/// generation 1), and gives the header's generation: where the serial comes out past the
/// document's, so a plan saved before the conversion is stale after it.
pub fn converted(state: &mut State) -> u64 {
    let count = state.tenants.len() as u64;
    let generation = (state.serial + 1).saturating_sub(count).max(1);
    state.generation = generation;
    state.generations = state.tenants.keys().map(|s| (s.clone(), 1)).collect();
    state.unwritten.clear();
    state.serial = generation + count;
    state.checkpoints = 0;
    state.observations = 0;
    generation
}

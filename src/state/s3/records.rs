//! The state as objects: the header at the state's key, and a record per tenant beside it,
//! each with its own generation. A record is made only where there is none
//! (`If-None-Match: *`) and replaced only in the version this run last saw (`If-Match`), so
//! a run that is not the last writer of a record is refused rather than writing over what
//! another run recorded.
//!
//! An older tenant-reconcile kept the whole state in the one object at the key, with a
//! checkpoint object per tenant changed since. It is read as it is until the first run that
//! takes the lock converts it: the document, with its checkpoints, is copied to
//! `<key>.v1-backup`, each tenant's record written, and then the header written over the
//! document, only where the document is still the one read. The header says format
//! version 2 first, which an older tenant-reconcile refuses as a newer format. A
//! conversion cut short leaves the document in place and is done again from it.

use std::collections::BTreeSet;

use aws_sdk_s3::Client;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::objects::{store_error, Body, Condition, Objects, Put, Seen};
use crate::state::header::{converted, Header};
use crate::state::records::moved_on;
use crate::state::{
    Checkpoint, Scope, State, StateError, TenantState, FORMAT_VERSION, RECORDS_VERSION,
};

/// Objects read or written at once: a full read of the state is a read per tenant, and S3
/// answers thousands a second on one prefix, each after a round trip.
pub const CONCURRENCY: usize = 64;

/// The header object: the header (its format version first), its generation, and where the
/// records are, for a person who reads it.
#[derive(Serialize, Deserialize)]
struct HeaderObject {
    #[serde(flatten)]
    header: Header,
    generation: u64,
    #[serde(default)]
    records: String,
}

#[derive(Serialize)]
struct RecordOut<'a> {
    generation: u64,
    tenant: &'a TenantState,
}

#[derive(Deserialize)]
struct RecordIn {
    generation: u64,
    tenant: TenantState,
}

/// What the state's key holds.
pub enum Stored {
    Nothing,
    /// A state in the one-document format, not converted yet.
    Document(Body),
    /// The header of a state kept as records: what it says, its generation and its ETag.
    Records {
        header: Header,
        generation: u64,
        etag: String,
    },
}

fn corrupt(objects: &Objects, message: String) -> StateError {
    StateError::Corrupt {
        path: objects.describe(),
        message,
    }
}

/// What the state's key holds now. Records with no header beside them (it was deleted) are
/// refused: read as a state never written, their tenants would be planned anew.
pub async fn stored(objects: &Objects, client: &Client) -> Result<Stored, StateError> {
    let Some(body) = objects
        .get(client, &objects.key)
        .await
        .map_err(store_error("read the state"))?
    else {
        let records = objects
            .any(client, &objects.records_prefix())
            .await
            .map_err(store_error("read the state"))?;
        return match records {
            false => Ok(Stored::Nothing),
            true => Err(corrupt(
                objects,
                format!(
                    "its header is missing, and tenants' records are there ({}); nothing was done\n  hint: restore the header from the bucket's earlier versions of {}",
                    objects.records_prefix(),
                    objects.key
                ),
            )),
        };
    };
    #[derive(Deserialize)]
    struct Version {
        format_version: Option<u32>,
    }
    let version = serde_json::from_slice::<Version>(&body.bytes)
        .map_err(|e| corrupt(objects, e.to_string()))?
        .format_version
        .unwrap_or(0);
    match version {
        FORMAT_VERSION => Ok(Stored::Document(body)),
        RECORDS_VERSION => {
            let object: HeaderObject = serde_json::from_slice(&body.bytes)
                .map_err(|e| corrupt(objects, format!("header: {e}")))?;
            Ok(Stored::Records {
                header: object.header,
                generation: object.generation,
                etag: body.etag,
            })
        }
        found => Err(StateError::Version {
            path: objects.describe(),
            found,
            supported: RECORDS_VERSION,
        }),
    }
}

/// A state in the one-document format, with the checkpoints written after it on top.
pub async fn document(
    objects: &Objects,
    client: &Client,
    bytes: &[u8],
) -> Result<State, StateError> {
    let mut state = State::decode(bytes, || objects.describe())?;
    let keys = objects
        .keys(client, &objects.checkpoint_prefix())
        .await
        .map_err(store_error("list the state's checkpoints"))?;
    let reads: Vec<_> = keys.iter().map(|key| objects.get(client, key)).collect();
    let entries: Vec<Option<Body>> = stream::iter(reads)
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await
        .map_err(store_error("read the state's checkpoints"))?;
    // One object per tenant holds its latest state, so their order does not matter.
    state.replay(
        entries
            .iter()
            .flatten()
            .filter_map(|e| serde_json::from_slice::<Checkpoint>(&e.bytes).ok()),
    );
    Ok(state)
}

/// The state of `header` with the records of `slugs` (every record when `None`: listed,
/// then read side by side). Read for some tenants, the state says so ([`State::scope`]),
/// and counts the fleet's live tenants from the header.
pub async fn read(
    objects: &Objects,
    client: &Client,
    header: Header,
    generation: u64,
    slugs: Option<&BTreeSet<String>>,
) -> Result<State, StateError> {
    let prefix = objects.records_prefix();
    let wanted: Vec<String> = match slugs {
        Some(slugs) => slugs.iter().cloned().collect(),
        None => objects
            .keys(client, &prefix)
            .await
            .map_err(store_error("list the state's records"))?
            .into_iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
            .collect(),
    };
    let reads: Vec<_> = wanted
        .into_iter()
        .map(|slug| read_record(objects, client, slug))
        .collect();
    let read: Vec<(String, Option<Body>)> = stream::iter(reads)
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await
        .map_err(store_error("read the state's records"))?;
    let live = header.live.unwrap_or(0);
    let mut state = header.into_state(generation);
    for (slug, body) in read {
        let Some(body) = body else {
            objects.saw(&slug, None);
            continue;
        };
        let record: RecordIn = serde_json::from_slice(&body.bytes)
            .map_err(|e| corrupt(objects, format!("tenant {slug}: {e}")))?;
        objects.saw(
            &slug,
            Some(Seen {
                generation: record.generation,
                etag: body.etag,
            }),
        );
        state.generations.insert(slug.clone(), record.generation);
        state.tenants.insert(slug, record.tenant);
    }
    state.serial = state.generation + state.generations.values().sum::<u64>();
    if let Some(slugs) = slugs {
        state.scope = Some(Scope {
            slugs: slugs.clone(),
            live,
            own_live: state.own_live(),
            held: false,
        });
    }
    state.header_behind = header_of(&state).live != Some(live);
    Ok(state)
}

async fn read_record(
    objects: &Objects,
    client: &Client,
    slug: String,
) -> Result<(String, Option<Body>), crate::clients::error::ProviderError> {
    let body = objects.get(client, &objects.record_key(&slug)).await?;
    Ok((slug, body))
}

/// Writes `body` at `key` where `condition` holds. A write refused because its own first
/// attempt got through (the answer was lost, and the store's retry found the object
/// changed) finds what it wrote, and is done.
async fn put_checked(
    objects: &Objects,
    client: &Client,
    key: &str,
    body: Vec<u8>,
    condition: Condition<'_>,
) -> Result<Put, crate::clients::error::ProviderError> {
    match objects.put(client, key, body.clone(), condition).await? {
        Put::Refused => match objects.get(client, key).await? {
            Some(now) if now.bytes == body => Ok(Put::Done(now.etag)),
            _ => Ok(Put::Refused),
        },
        done => Ok(done),
    }
}

/// Writes `tenant` as `slug`'s record at `generation`, only where the record is at
/// `expected` now (0: there is none).
pub async fn write_record(
    objects: &Objects,
    client: &Client,
    slug: &str,
    expected: u64,
    generation: u64,
    tenant: &TenantState,
) -> Result<(), StateError> {
    let key = objects.record_key(slug);
    let etag = match (expected, objects.seen(slug)) {
        (0, _) => None,
        (_, Some(seen)) if seen.generation == expected => Some(seen.etag),
        // Not read by this process: the record as it stands now, if it is at `expected`.
        _ => {
            let now = objects
                .get(client, &key)
                .await
                .map_err(store_error("read a tenant's record"))?;
            let at = now.and_then(|b| {
                let record: RecordIn = serde_json::from_slice(&b.bytes).ok()?;
                (record.generation == expected).then_some(b.etag)
            });
            match at {
                Some(etag) => Some(etag),
                None => return Err(moved_on(&[slug.to_string()])),
            }
        }
    };
    let body = serde_json::to_vec(&RecordOut { generation, tenant }).expect("state serializes");
    let condition = match &etag {
        Some(etag) => Condition::Matches(etag),
        None => Condition::Absent,
    };
    match put_checked(objects, client, &key, body, condition)
        .await
        .map_err(store_error("write a tenant's record"))?
    {
        Put::Done(etag) => {
            objects.saw(slug, Some(Seen { generation, etag }));
            Ok(())
        }
        Put::Refused => Err(moved_on(&[slug.to_string()])),
    }
}

/// Writes the header at `generation` where `condition` holds; its new ETag, or `None` when
/// another run wrote the state's key since this one read it.
pub async fn write_header(
    objects: &Objects,
    client: &Client,
    header: Header,
    generation: u64,
    condition: Condition<'_>,
) -> Result<Option<String>, StateError> {
    let object = HeaderObject {
        header,
        generation,
        records: objects.records_prefix(),
    };
    let mut body = serde_json::to_vec_pretty(&object).expect("state serializes");
    body.push(b'\n');
    match put_checked(objects, client, &objects.key, body, condition)
        .await
        .map_err(store_error("write the state's header"))?
    {
        Put::Done(etag) => Ok(Some(etag)),
        Put::Refused => Ok(None),
    }
}

/// The header of `state`, with the fleet's count of live tenants: those it holds, or for a
/// state read for some tenants the count it read moved by what they became since.
pub fn header_of(state: &State) -> Header {
    let mut header = Header::of(state);
    header.live = Some(state.live_tenants());
    header
}

/// Writes a converted tenant's record, at generation 1 whatever stands there (a conversion
/// cut short left it).
async fn write_converted(
    objects: &Objects,
    client: &Client,
    slug: &str,
    tenant: &TenantState,
) -> Result<(), crate::clients::error::ProviderError> {
    let body = serde_json::to_vec(&RecordOut {
        generation: 1,
        tenant,
    })
    .expect("state serializes");
    match objects
        .put(client, &objects.record_key(slug), body, Condition::Any)
        .await?
    {
        Put::Done(etag) => objects.saw(
            slug,
            Some(Seen {
                generation: 1,
                etag,
            }),
        ),
        Put::Refused => unreachable!("an unconditional write is never refused"),
    }
    Ok(())
}

/// Makes the one-document state in `document` records: backed up, each record written, then
/// the header written over the document where it is still the one read. Each part may be
/// done again, so a conversion cut short anywhere is finished by the next run. Gives the
/// header's ETag.
pub async fn convert(
    objects: &Objects,
    client: &Client,
    document: Body,
) -> Result<String, StateError> {
    let mut state = self::document(objects, client, &document.bytes).await?;
    let whole = serde_json::to_vec(&state).expect("state serializes");
    objects
        .put(client, &objects.backup_key(), whole, Condition::Any)
        .await
        .map_err(store_error("back up the state"))?;
    let generation = converted(&mut state);
    // Records a conversion cut short wrote for tenants the document no longer holds.
    let prefix = objects.records_prefix();
    let left: Vec<String> = objects
        .keys(client, &prefix)
        .await
        .map_err(store_error("list the state's records"))?
        .into_iter()
        .filter(|k| {
            k.strip_prefix(&prefix)
                .is_none_or(|slug| !state.tenants.contains_key(slug))
        })
        .collect();
    objects
        .delete_all(client, &left)
        .await
        .map_err(store_error("remove records left by a conversion cut short"))?;
    let writes: Vec<_> = state
        .tenants
        .iter()
        .map(|(slug, tenant)| write_converted(objects, client, slug, tenant))
        .collect();
    stream::iter(writes)
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .map_err(store_error("write the state's records"))?;
    let etag = write_header(
        objects,
        client,
        header_of(&state),
        generation,
        Condition::Matches(&document.etag),
    )
    .await?
    .ok_or_else(|| {
        corrupt(
            objects,
            "it was written by another run while this one converted it to a record per tenant; nothing of it was lost\n  hint: run again".into(),
        )
    })?;
    let checkpoints = objects
        .keys(client, &objects.checkpoint_prefix())
        .await
        .map_err(store_error("list the state's checkpoints"))?;
    objects
        .delete_all(client, &checkpoints)
        .await
        .map_err(store_error("remove the state's checkpoints"))?;
    Ok(etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_refused_by_the_one_document_reader_as_a_newer_format() {
        let mut state = State::empty();
        state.lineage = "l".into();
        let object = HeaderObject {
            header: header_of(&state),
            generation: 3,
            records: "env/prod.json.tenants/".into(),
        };
        let bytes = serde_json::to_vec(&object).unwrap();
        let err = State::decode(&bytes, || "s3://b/env/prod.json".into()).unwrap_err();
        assert!(
            matches!(
                err,
                StateError::Version {
                    found: RECORDS_VERSION,
                    supported: FORMAT_VERSION,
                    ..
                }
            ),
            "{err}"
        );
        // And read back as what it says.
        let read: HeaderObject = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(read.generation, 3);
        assert_eq!(read.header.live, Some(0));
        assert_eq!(read.header.format_version, RECORDS_VERSION);
    }
}

//! The lock object: created with `If-None-Match: *`, so of two runs racing for it exactly
//! one gets it. It holds its holder's details for whoever is kept waiting, and its lease.
//!
//! An object outlives a holder that was killed, so the holder renews it (writes it again,
//! over its own version) three times a lease, and a lock its holder left unrenewed for two
//! leases, by the store's own clock, is taken over by the next run that waits for it: written
//! over the version that run found, so of two runs taking it over one does. A holder that
//! could not renew in time stops starting steps (`held.rs`), and every write of the state it
//! still sends is conditional on what it last saw, so it never writes over its successor.
//! `force-unlock ID` removes a lock at once.
//!
//! Everything the state's safety rests on is a conditional write, so the store is asked
//! first whether it honours them: right after taking the lock, the run writes the lock
//! again with each condition set so that it must fail. A store that ignores the headers
//! (some S3-compatible stores do) accepts them, and would let two runs both take the lock
//! and write over each other's records; the run then lets go and refuses, before anything
//! of the state is written.

use std::time::{Duration, Instant, SystemTime};

use aws_sdk_s3::Client;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::objects::{store_error, Condition, Objects, Put};
use crate::state::backend::{LockInfo, StateError, Wait};

/// The lock object's body.
#[derive(Serialize, Deserialize)]
struct LockBody {
    #[serde(flatten)]
    info: LockInfo,
    /// How long the lock stands unrenewed; none in a lock an older tenant-reconcile wrote,
    /// which only `force-unlock` removes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_seconds: Option<u64>,
}

/// What the lock object says.
pub enum Holder {
    Run {
        info: LockInfo,
        /// When another run may take it over, if ever: two leases after its last renewal.
        ends: Option<SystemTime>,
        etag: String,
    },
    /// Not a lock this tool wrote (or a torn one): only a person can decide to remove it.
    Unreadable,
}

impl Holder {
    fn is(&self, id: &str) -> bool {
        matches!(self, Holder::Run { info, .. } if info.id == id)
    }
}

/// Who holds the lock now, if anyone.
pub async fn holder(objects: &Objects, client: &Client) -> Result<Option<Holder>, StateError> {
    let body = objects
        .get(client, &objects.lock_key())
        .await
        .map_err(store_error("read the lock"))?;
    Ok(
        body.map(|b| match serde_json::from_slice::<LockBody>(&b.bytes) {
            Ok(lock) => Holder::Run {
                ends: lock
                    .lease_seconds
                    .zip(b.modified)
                    .map(|(lease, at)| at + 2 * Duration::from_secs(lease)),
                info: lock.info,
                etag: b.etag,
            },
            Err(_) => Holder::Unreadable,
        }),
    )
}

/// The lock's body for `info`, with its lease.
pub fn body(info: &LockInfo, lease: Duration) -> Vec<u8> {
    serde_json::to_vec_pretty(&LockBody {
        info: info.clone(),
        lease_seconds: Some(lease.as_secs().max(1)),
    })
    .expect("lock info serializes")
}

/// When a time of the store's clock is, as this machine says it: "2026-12-06T10:00:00Z".
fn when(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Takes the lock for `info` (its body `body`), waiting as `wait` says, taking over a lock
/// whose lease ran out, and makes sure the store honours conditional writes. Gives the lock
/// object's ETag.
pub async fn take(
    objects: &Objects,
    client: &Client,
    info: &LockInfo,
    body: &[u8],
    wait: &Wait,
) -> Result<String, StateError> {
    let key = objects.lock_key();
    let started = Instant::now();
    let etag = loop {
        let put = objects
            .put(client, &key, body.to_vec(), Condition::Absent)
            .await
            .map_err(store_error("lock the state"))?;
        if let Put::Done(etag) = put {
            break etag;
        }
        let holder = holder(objects, client).await?;
        match &holder {
            // A retried request whose first attempt got through finds our own lock.
            Some(h @ Holder::Run { etag, .. }) if h.is(&info.id) => break etag.clone(),
            Some(Holder::Run {
                info: gone,
                ends: Some(ends),
                etag,
            }) if SystemTime::now() > *ends => {
                // Written over the version found: of two runs taking it over, one does.
                let put = objects
                    .put(client, &key, body.to_vec(), Condition::Matches(etag))
                    .await
                    .map_err(store_error("lock the state"))?;
                if let Put::Done(etag) = put {
                    warn!(
                        "took over the state's lock from {}, whose lease ran out at {}",
                        gone.describe(),
                        when(*ends)
                    );
                    break etag;
                }
                continue;
            }
            _ => {}
        }
        if started.elapsed() >= wait.timeout {
            let holder = match holder {
                Some(Holder::Run { info, ends, .. }) => {
                    let lease = match ends {
                        Some(ends) => format!(
                            "if that run is gone, its lock is taken over from {} by a run that waits for it (--lock-timeout), or release it now",
                            when(ends)
                        ),
                        None => "if that run is gone, release its lock".into(),
                    };
                    format!(
                        "{}\n  hint: {lease} with `tenant-reconcile force-unlock {}`",
                        info.describe(),
                        info.id
                    )
                }
                _ => format!(
                    "something that left an unreadable lock object (s3://{}/{key}): if no run is going, delete it by hand",
                    objects.bucket
                ),
            };
            return Err(StateError::Locked { holder });
        }
        wait.poll().await?;
    };
    match honours_conditions(objects, client, &key, body, &etag).await {
        Ok(()) => Ok(etag),
        Err(e) => {
            let _ = objects.delete(client, &key).await;
            Err(e)
        }
    }
}

/// Renews the lock: written again over this run's own version. `Ok(false)` when it is no
/// longer this run's (taken over, or removed).
pub async fn renew(
    objects: &Objects,
    client: &Client,
    body: &[u8],
    etag: &str,
) -> Result<bool, StateError> {
    let put = objects
        .put(
            client,
            &objects.lock_key(),
            body.to_vec(),
            Condition::Matches(etag),
        )
        .await
        .map_err(store_error("renew the lock"))?;
    Ok(matches!(put, Put::Done(_)))
}

/// Whether the store refuses writes whose conditions fail, asked of the lock object this
/// run just made: a write that must find no object, and one that must find a version that
/// never was.
async fn honours_conditions(
    objects: &Objects,
    client: &Client,
    key: &str,
    body: &[u8],
    etag: &str,
) -> Result<(), StateError> {
    // A version that never was: this one's ETag, changed.
    let never = format!("\"0{}\"", etag.trim_matches('"'));
    for (condition, header) in [
        (Condition::Absent, "If-None-Match: *"),
        (Condition::Matches(&never), "If-Match"),
    ] {
        let put = objects
            .put(client, key, body.to_vec(), condition)
            .await
            .map_err(store_error(
                "ask the store whether it honours conditional writes",
            ))?;
        if let Put::Done(_) = put {
            return Err(StateError::Unsafe(format!(
                "the store behind s3://{}/ ignores conditional writes: it accepted a write of {key} with `{header}` that must fail, so two runs could both take the lock and one's writes of the state would be lost; nothing was written\n  hint: keep the state on AWS S3 or another store that honours If-None-Match and If-Match (or on Postgres: state {{ backend = \"postgres\" }})",
                objects.bucket
            )));
        }
    }
    Ok(())
}

/// Refuses to go on once the lock was taken away (`force-unlock` by someone who thought
/// this run was gone), so two runs never both write the state.
pub async fn still_held(objects: &Objects, client: &Client, id: &str) -> Result<(), StateError> {
    match holder(objects, client).await? {
        Some(h) if h.is(id) => Ok(()),
        Some(Holder::Run { info, .. }) => Err(StateError::LockLost {
            holder: info.describe(),
        }),
        Some(Holder::Unreadable) => Err(StateError::LockLost {
            holder: "an unreadable lock object".into(),
        }),
        None => Err(StateError::LockLost {
            holder: "nobody".into(),
        }),
    }
}

/// Lets go of the lock, if it is still this run's.
pub async fn release(objects: &Objects, client: &Client, id: &str) -> Result<(), StateError> {
    match still_held(objects, client, id).await {
        Ok(()) => {}
        Err(StateError::LockLost { .. }) => return Ok(()),
        Err(e) => return Err(e),
    }
    objects
        .delete(client, &objects.lock_key())
        .await
        .map_err(store_error("unlock the state"))
}

/// Removes a lock its holder left behind, given its id; says whose it was.
pub async fn force_unlock(objects: &Objects, id: &str) -> Result<String, StateError> {
    let client = objects.client("unlock the state").await?;
    let holder = match holder(objects, &client).await? {
        None => {
            return Err(StateError::NotLocked {
                what: objects.describe(),
            })
        }
        Some(Holder::Unreadable) => {
            return Err(StateError::CannotForceUnlock(format!(
                "the lock object s3://{}/{} is not one tenant-reconcile wrote: if no run is going, delete it by hand",
                objects.bucket,
                objects.lock_key()
            )))
        }
        Some(Holder::Run { info, .. }) => info,
    };
    if holder.id != id {
        return Err(StateError::WrongLockId {
            given: id.to_string(),
            holder: holder.describe(),
        });
    }
    objects
        .delete(&client, &objects.lock_key())
        .await
        .map_err(store_error("unlock the state"))?;
    Ok(holder.describe())
}

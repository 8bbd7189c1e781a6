//! The lock object: created with `If-None-Match: *`, so of two runs racing for it exactly
//! one gets it. It holds its holder's details for whoever is kept waiting.
//!
//! Everything the state's safety rests on is a conditional write, so the store is asked
//! first whether it honours them: right after taking the lock, the run writes the lock
//! again with each condition set so that it must fail. A store that ignores the headers
//! (some S3-compatible stores do) accepts them, and would let two runs both take the lock
//! and write over each other's records; the run then lets go and refuses, before anything
//! of the state is written.

use std::time::Instant;

use aws_sdk_s3::Client;

use super::objects::{store_error, Condition, Objects, Put};
use crate::state::backend::{LockInfo, StateError, Wait};

/// What the lock object says.
pub enum Holder {
    Run(LockInfo),
    /// Not a lock this tool wrote (or a torn one): only a person can decide to remove it.
    Unreadable,
}

/// Who holds the lock now, if anyone.
pub async fn holder(objects: &Objects, client: &Client) -> Result<Option<Holder>, StateError> {
    let body = objects
        .get(client, &objects.lock_key())
        .await
        .map_err(store_error("read the lock"))?;
    Ok(body.map(|b| match serde_json::from_slice(&b.bytes) {
        Ok(info) => Holder::Run(info),
        Err(_) => Holder::Unreadable,
    }))
}

/// Takes the lock for `info`, waiting as `wait` says, and makes sure the store honours
/// conditional writes.
pub async fn take(
    objects: &Objects,
    client: &Client,
    info: &LockInfo,
    wait: &Wait,
) -> Result<(), StateError> {
    let body = serde_json::to_vec_pretty(info).expect("lock info serializes");
    let key = objects.lock_key();
    let started = Instant::now();
    loop {
        let put = objects
            .put(client, &key, body.clone(), Condition::Absent)
            .await
            .map_err(store_error("lock the state"))?;
        if let Put::Done(_) = put {
            break;
        }
        let holder = holder(objects, client).await?;
        // A retried request whose first attempt got through finds our own lock.
        if matches!(&holder, Some(Holder::Run(h)) if h.id == info.id) {
            break;
        }
        if started.elapsed() >= wait.timeout {
            let holder = match holder {
                Some(Holder::Run(h)) => format!(
                    "{}\n  hint: if that run is gone, release its lock with `tenant-reconcile force-unlock {}`",
                    h.describe(),
                    h.id
                ),
                _ => format!(
                    "something that left an unreadable lock object (s3://{}/{key}): if no run is going, delete it by hand",
                    objects.bucket
                ),
            };
            return Err(StateError::Locked { holder });
        }
        wait.poll().await?;
    }
    match honours_conditions(objects, client, &key, &body).await {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = objects.delete(client, &key).await;
            Err(e)
        }
    }
}

/// Whether the store refuses writes whose conditions fail, asked of the lock object this
/// run just made: a write that must find no object, and one that must find a version that
/// never was.
async fn honours_conditions(
    objects: &Objects,
    client: &Client,
    key: &str,
    body: &[u8],
) -> Result<(), StateError> {
    for (condition, header) in [
        (Condition::Absent, "If-None-Match: *"),
        (Condition::Matches("\"0-never-an-etag\""), "If-Match"),
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
        Some(Holder::Run(h)) if h.id == id => Ok(()),
        Some(Holder::Run(h)) => Err(StateError::LockLost {
            holder: h.describe(),
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
        Some(Holder::Run(h)) => h,
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

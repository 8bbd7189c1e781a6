//! `rollout pause | resume | abort`: a rollout in flight stopped, taken on again, or called
//! off, under the state's lock. What happens to the tenants is the next plan's doing.

use std::time::Duration;

use crate::model::rollout::{Rollout, Status};
use crate::state::{LockInfo, State, Wait};
use crate::workspace::Workspace;
use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Pause,
    Resume,
    Abort,
}

impl Act {
    fn as_str(self) -> &'static str {
        match self {
            Act::Pause => "rollout pause",
            Act::Resume => "rollout resume",
            Act::Abort => "rollout abort",
        }
    }
}

/// Acts on the rollout in flight (`id`, when given, must name it) and returns it as it now
/// stands.
pub async fn act(
    ws: &Workspace,
    id: Option<&str>,
    act: Act,
    lock_timeout: Duration,
) -> Result<Rollout, Error> {
    let backend = ws.backend();
    let mut lock = backend
        .lock(LockInfo::new(act.as_str()), &Wait::up_to(lock_timeout))
        .await?;
    let acted = async {
        let mut state = backend.load().await?;
        let kept = match act {
            Act::Abort => kept_migrations(ws, &state)?,
            _ => Vec::new(),
        };
        let r = in_flight(&mut state, id)?;
        match (act, r.status) {
            (Act::Pause, Status::Running) => r.status = Status::Paused,
            (Act::Pause, other) => {
                return Err(Error::Usage(format!(
                    "rollout {} is {}, not running: there is nothing to pause",
                    r.id,
                    other.as_str()
                )))
            }
            (Act::Resume, Status::Paused | Status::Halted) => {
                r.status = Status::Running;
                r.halted = None;
                // Its failures so far are mended or accepted: the halt rule counts anew.
                let at = r.wave;
                r.waves[at].failed.clear();
            }
            (Act::Resume, other) => {
                return Err(Error::Usage(format!(
                    "rollout {} is {}: only a paused or halted rollout resumes",
                    r.id,
                    other.as_str()
                )))
            }
            (Act::Abort, _) => {
                r.status = Status::Aborted;
                r.halted = None;
                r.kept_migrations = kept;
            }
        }
        r.updated_at = crate::model::lifecycle::now();
        let out = r.clone();
        state.prepare_snapshot();
        lock.persist(&mut state).await?;
        Ok(out)
    }
    .await;
    let unlocked = lock.unlock().await;
    let out = acted?;
    unlocked?;
    Ok(out)
}

/// The rollout in flight, the one `id` names when given.
fn in_flight<'s>(state: &'s mut State, id: Option<&str>) -> Result<&'s mut Rollout, Error> {
    let last = state.rollout.as_ref().map(|r| (r.id.clone(), r.status));
    match (state.rollout.as_mut(), id) {
        (Some(r), Some(id)) if r.id != id => Err(Error::Usage(format!(
            "there is no rollout {id} in flight: the last one is {} ({})\n  hint: `tenant-reconcile rollout status` shows it",
            r.id,
            r.status.as_str()
        ))),
        (Some(r), _) if r.status.in_flight() => Ok(r),
        _ => Err(Error::Usage(match last {
            Some((id, status)) => format!(
                "no rollout is in flight: the last one, {id}, is {}",
                status.as_str()
            ),
            None => "no rollout was ever started in this state".to_string(),
        })),
    }
}

/// The reached tenants whose slice has a migration the rollout's `from` does not: an abort
/// leaves them on it (a migration is never undone), and says so.
fn kept_migrations(ws: &Workspace, state: &State) -> Result<Vec<String>, Error> {
    let Some(r) = state.rollout.as_ref().filter(|r| r.status.in_flight()) else {
        return Ok(Vec::new());
    };
    let from = ws.shared_inputs_at(&r.from)?;
    let known: std::collections::HashSet<String> = from.migrations.iter().map(|m| m.id()).collect();
    let key = crate::desired::Key::new(crate::desired::Kind::DATABASE);
    let mut kept: Vec<String> = r.waves[..=r.wave]
        .iter()
        .flat_map(|w| &w.tenants)
        .filter(|slug| {
            state
                .tenants
                .get(slug.as_str())
                .and_then(|t| t.resources.get(&key))
                .map(|a| a.str("schema_version"))
                .is_some_and(|v| !v.is_empty() && !known.contains(v))
        })
        .cloned()
        .collect();
    kept.sort();
    Ok(kept)
}

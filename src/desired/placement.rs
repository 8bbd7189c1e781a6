//! Each tenant's Postgres server, when the config names several: the one its state records,
//! or, for a tenant not placed yet, the one the placement policy chooses now.
//!
//! The choices of one plan are made in slug order, each counted into the loads the next one
//! sees, from the loads of the placement catalog (or, for a plan without refresh, of the
//! state): a plan that places 3,000 tenants spreads them as the apply will.

use std::collections::BTreeMap;

use crate::model::attrs::Attrs;
use crate::model::resource::{Key, Kind};
use crate::placement::{Ask, Placed, Placer};
use crate::repo::{Status, TenantRepo};
use crate::slug::Slug;
use crate::state::{State, TenantState};

/// What was decided for the tenants not placed yet: where each goes, or why none takes it.
pub type Decisions = BTreeMap<Slug, Result<Placed, String>>;

/// The server `recorded` says the tenant is on, if it was placed.
pub fn recorded_server(recorded: Option<&TenantState>) -> Option<&str> {
    recorded?
        .resources
        .get(&Key::new(Kind::PLACEMENT))
        .map(|a: &Attrs| a.str("server"))
        .filter(|s| !s.is_empty())
}

/// A tenant's placement as a plan compiles it: the server it gets, and what the plan says of
/// it.
#[derive(Debug, Default)]
pub struct Resolved {
    pub server: Option<String>,
    /// Where this plan places (or moves) it, and that server's load then.
    pub placed: Option<String>,
    /// Why no server takes it (or the one its file now names cannot).
    pub unplaced: Option<String>,
}

/// The placement of a tenant the state records on `recorded` (if any), given what this plan
/// decided for it (if anything): a placed tenant stays where it is unless a move to the
/// server its file names was decided; one not placed goes where it was decided.
pub fn resolve(recorded: Option<&str>, decided: Option<&Result<Placed, String>>) -> Resolved {
    match decided {
        Some(Ok(chosen)) => Resolved {
            server: Some(chosen.server.clone()),
            placed: Some(match recorded {
                Some(at) => format!("moves {at} → {}: {chosen}", chosen.server),
                None => chosen.to_string(),
            }),
            unplaced: None,
        },
        Some(Err(refused)) => Resolved {
            unplaced: Some(refused.clone()),
            ..Resolved::default()
        },
        None => Resolved {
            server: recorded.map(str::to_string),
            ..Resolved::default()
        },
    }
}

/// The tenants each server holds as the state records them, for a plan without refresh.
pub fn recorded_loads(state: &State) -> Vec<(String, u32)> {
    let mut loads: BTreeMap<String, u32> = BTreeMap::new();
    for t in state.tenants.values() {
        if let Some(server) = recorded_server(Some(t)) {
            *loads.entry(server.to_string()).or_default() += 1;
        }
    }
    loads.into_iter().collect()
}

/// Chooses a server for each selected tenant of `repo` that has none recorded and is to
/// hold data (not leaving), from `loads`. Empty when the config names no servers.
pub fn decide(
    repo: &TenantRepo,
    state: &State,
    only: Option<&[Slug]>,
    loads: Vec<(String, u32)>,
) -> Decisions {
    let servers: Vec<crate::placement::Server> = repo
        .config
        .servers
        .iter()
        .map(|s| s.placement.clone())
        .collect();
    let mut decided = Decisions::new();
    if servers.is_empty() {
        return decided;
    }
    let mut placer = Placer::new(&servers, loads);
    // Tenants beyond a server's cap (lowered below what it holds) are moved off it, the
    // first of them by slug; only a plan of the whole fleet can tell which those are.
    let mut over: BTreeMap<&str, u32> = match only {
        Some(_) => BTreeMap::new(),
        None => servers
            .iter()
            .filter(|s| placer.load(&s.name) > s.cap)
            .map(|s| (s.name.as_str(), placer.load(&s.name) - s.cap))
            .collect(),
    };
    for spec in repo
        .tenants
        .iter()
        .filter(|t| only.is_none_or(|o| o.contains(&t.slug)))
    {
        let recorded = state.tenants.get(spec.slug.as_str());
        // The loader checked that the plan exists.
        let plan = &repo.plans[&spec.plan];
        let ask = Ask {
            region: &spec.region,
            isolation: spec.isolation.unwrap_or(plan.isolation),
            server: spec.server.as_deref(),
            labels: &plan.server_labels,
        };
        if let Some(at) = recorded_server(recorded) {
            // Placed already: it stays, unless its file now names another server or another
            // region, or its server is being drained or holds more than its cap, and the
            // server chosen takes it as it would a new tenant (a move).
            let draining = servers.iter().any(|s| s.name == at && s.draining);
            let over_cap = over.get(at).is_some_and(|n| *n > 0);
            let abroad = servers
                .iter()
                .find(|s| s.name == at)
                .filter(|s| s.region != spec.region)
                .map(|s| s.region.as_str());
            let elsewhere = match spec.server.as_deref() {
                Some(pin) => pin != at,
                None => draining || over_cap || abroad.is_some(),
            };
            if elsewhere && spec.status != Status::Deprovisioned {
                match placer.place(&ask) {
                    Ok(to) => {
                        if let Some(n) = over.get_mut(at) {
                            *n = n.saturating_sub(1);
                        }
                        decided.insert(spec.slug.clone(), Ok(to));
                    }
                    // Its data is in another region than its file says, with nowhere in
                    // its own to go: nothing is done to it until that is settled.
                    Err(refused) if spec.server.is_none() && abroad.is_some() => {
                        decided.insert(
                            spec.slug.clone(),
                            Err(format!(
                                "its data is on {at}, in {}, and its file says {}: {refused}",
                                abroad.unwrap_or_default(),
                                spec.region
                            )),
                        );
                    }
                    // Moved off for its server's sake, with nowhere to go: it stays, and
                    // is still changed as its file asks.
                    Err(refused) if spec.server.is_none() => tracing::warn!(
                        tenant = %spec.slug,
                        "{at} {}, and the tenant stays on it: {refused}",
                        if draining { "is draining" } else { "holds more than its cap" }
                    ),
                    Err(refused) => {
                        decided.insert(
                            spec.slug.clone(),
                            Err(format!("it cannot move from {at}: {refused}")),
                        );
                    }
                }
            }
            continue;
        }
        // Provisioned before the config named servers: its data is on the postgres block's
        // server. Where a server block is that server, it is recorded there (and a later
        // plan moves it as its file asks); placing it elsewhere would build it anew, empty.
        let made = |kind| recorded.is_some_and(|r| r.resources.contains_key(&Key::new(kind)));
        if made(Kind::ROLE) || made(Kind::DATABASE) {
            let own = repo.config.servers.iter().find(|s| s.own_server);
            decided.insert(
                spec.slug.clone(),
                own.and_then(|own| placer.found_on(&own.placement.name)).ok_or_else(|| {
                    "its data is on the postgres block's server, from before the config named servers, and no postgres_server block is that server (one without url or url_env is: tenants like this one are then recorded on it)".to_string()
                }),
            );
            continue;
        }
        // Leaving before it was ever provisioned: it has nothing to place.
        if spec.status == Status::Deprovisioned {
            continue;
        }
        decided.insert(
            spec.slug.clone(),
            placer.place(&ask).map_err(|refused| refused.to_string()),
        );
    }
    decided
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chosen(server: &str) -> Placed {
        Placed {
            server: server.into(),
            region: "eu-west-1".into(),
            tenants: 3,
            cap: 10,
            found: false,
        }
    }

    #[test]
    fn a_placed_tenant_stays_unless_a_move_was_decided() {
        let stays = resolve(Some("eu-1"), None);
        assert_eq!(
            (stays.server.as_deref(), stays.placed, stays.unplaced),
            (Some("eu-1"), None, None)
        );
        let moves = resolve(Some("eu-1"), Some(&Ok(chosen("eu-2"))));
        assert_eq!(moves.server.as_deref(), Some("eu-2"));
        assert_eq!(
            moves.placed.as_deref(),
            Some("moves eu-1 → eu-2: eu-west-1, 3 of 10 tenants")
        );
        let refused = resolve(
            Some("eu-1"),
            Some(&Err("it cannot move from eu-1: full".into())),
        );
        assert_eq!(
            (refused.server, refused.unplaced.as_deref()),
            (None, Some("it cannot move from eu-1: full"))
        );
        let new = resolve(None, Some(&Ok(chosen("eu-2"))));
        assert_eq!(new.placed.as_deref(), Some("eu-west-1, 3 of 10 tenants"));
        assert_eq!(resolve(None, None).server, None);
    }
}

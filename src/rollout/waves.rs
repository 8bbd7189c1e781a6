//! The waves of a new rollout: the tenants its change reaches, shared among the policy's
//! waves in order, each wave taking from those no earlier wave took.

use std::collections::BTreeSet;

use crate::model::digest::sha256_hex;
use crate::model::rollout::Wave;
use crate::repo::rollout_policy::{matches_any, Policy, Select};
use crate::repo::TenantRepo;
use crate::slug::Slug;
use crate::state::State;

/// The waves of rollout `id` over `reached`. A percent wave takes its share of all the
/// rollout's tenants (rounded up) from those left, in an order drawn from the rollout's id,
/// so each rollout's early waves are a different spread of plans and servers.
pub fn assign(
    policy: &Policy,
    reached: &BTreeSet<Slug>,
    repo: &TenantRepo,
    state: &State,
    id: &str,
) -> Vec<Wave> {
    let total = reached.len();
    let specs: std::collections::HashMap<&Slug, &crate::repo::TenantSpec> =
        repo.tenants.iter().map(|t| (&t.slug, t)).collect();
    let mut left: Vec<&Slug> = reached.iter().collect();
    left.sort_by_cached_key(|s| sha256_hex(&format!("{id}/{s}")));
    let mut waves = Vec::with_capacity(policy.waves.len());
    for w in &policy.waves {
        let taken: Vec<&Slug> = match &w.select {
            Select::Rest => std::mem::take(&mut left),
            Select::Percent(p) => {
                let n = ((total as f64 * p / 100.0).ceil() as usize).min(left.len());
                left.drain(..n).collect()
            }
            Select::Matching {
                tenants,
                labels,
                servers,
            } => {
                let wanted = |slug: &Slug| {
                    let spec = specs.get(slug);
                    let by_slug = tenants
                        .as_ref()
                        .is_none_or(|p| matches_any(p, slug.as_str()));
                    let by_labels = labels.as_ref().is_none_or(|want| {
                        spec.is_some_and(|t| want.iter().all(|(k, v)| t.labels.get(k) == Some(v)))
                    });
                    let by_server = servers.as_ref().is_none_or(|names| {
                        crate::desired::placement::recorded_server(state.tenants.get(slug.as_str()))
                            .is_some_and(|s| names.iter().any(|n| n == s))
                    });
                    by_slug && by_labels && by_server
                };
                let (taken, rest) = left.into_iter().partition(|s| wanted(s));
                left = rest;
                taken
            }
        };
        let mut tenants: Vec<String> = taken.iter().map(|s| s.to_string()).collect();
        tenants.sort();
        waves.push(Wave {
            name: w.name.clone(),
            tenants,
            max_parallel: w.max_parallel,
            bake_seconds: w.bake.as_secs(),
            max_failures: w.max_failures,
            reached_at: None,
            done_at: None,
            failed: Vec::new(),
        });
    }
    waves
}

//! The targets a repo is configured with, as the engine holds them: the control plane, the
//! providers of every other slot, and where offboarding's exports go. Above the targets,
//! since the export asks them all.

use std::sync::Arc;

use crate::desired::{Key, Kind};
use crate::export::exporter;
use crate::model::change::ResourceChange;
use crate::targets::provider::{ControlPlane, LiveFleet, Provider, ProviderError, RefreshTarget};

/// The targets a repo is configured with.
#[derive(Clone)]
pub struct Targets {
    pub control: Arc<dyn ControlPlane>,
    pub providers: Vec<Arc<dyn Provider>>,
    /// Where exports go. No target's: the engine writes, checks and erases the export
    /// (the tenant's `export`) through it, asking every target for its part.
    pub exporter: Arc<exporter::Exporter>,
}

impl Targets {
    /// Why `changes` cannot all be carried out: a resource they purge is owned by a target
    /// that cannot purge (its slot named `none` since it was made). Asked when a plan is
    /// made, and again before a saved plan's tenant starts, so a purge never stops half-way
    /// with some of the tenant destroyed.
    pub fn cannot_purge(&self, changes: &[ResourceChange]) -> Option<String> {
        changes
            .iter()
            .filter(|c| c.purged().is_some())
            .find_map(|c| {
                // The export is the engine's, which can always erase it.
                let target = self.target(c.key.kind)?;
                target
                    .as_purge()
                    .is_none()
                    .then(|| format!("its {} cannot be purged through {}", c.key, target.name()))
            })
    }

    /// Why a tenant holding `recorded` cannot be exported whole: a resource of it is owned by
    /// a slot the config names `none` since it was made, and its export would leave that out
    /// (and the purge after it, put off until the slot is named again, would then destroy what
    /// no export holds). Asked when an offboarding is planned and again before a saved plan's
    /// tenant starts.
    pub fn cannot_export<'k>(&self, mut recorded: impl Iterator<Item = &'k Key>) -> Option<String> {
        recorded.find_map(|key| {
            let target = self.target(key.kind)?;
            (!target.reachable()).then(|| {
                format!(
                    "its {key} cannot be exported through {}, which names no target, and its export would leave it out",
                    target.name()
                )
            })
        })
    }

    /// The provider that owns `kind`; `None` for the export, which is the engine's.
    pub fn target(&self, kind: Kind) -> Option<&dyn Provider> {
        if self.control.kinds().contains(&kind) {
            return Some(self.control.as_ref());
        }
        self.providers
            .iter()
            .find(|p| p.kinds().contains(&kind))
            .map(|p| p.as_ref())
    }

    /// The provider that owns `kind`, which a target's step names.
    pub fn for_kind(&self, kind: Kind) -> &dyn Provider {
        self.target(kind)
            .unwrap_or_else(|| panic!("{} is no target's kind", kind.as_str()))
    }

    /// Whether a change of `field` makes `kind`'s resource anew.
    pub fn forces_replace(&self, kind: Kind, field: &str) -> bool {
        self.target(kind)
            .is_some_and(|t| t.forces_replace(kind, field))
    }

    /// Whether a replace of `kind`'s resource keeps the old one beside the new.
    pub fn replace_keeps_old(&self, kind: Kind) -> bool {
        self.target(kind).is_some_and(|t| t.replace_keeps_old(kind))
    }

    /// Whether `a` and `b` are owned by one target (the export by none).
    pub fn same_target(&self, a: Kind, b: Kind) -> bool {
        match (self.target(a), self.target(b)) {
            (Some(a), Some(b)) => std::ptr::addr_eq(a, b),
            _ => false,
        }
    }

    /// The tenants on each Postgres server, as the placement catalog counts them; `None`
    /// when the config names no servers to place tenants on.
    pub async fn placement_loads(&self) -> Result<Option<Vec<(String, u32)>>, ProviderError> {
        match self.target(Kind::PLACEMENT).and_then(|t| t.as_placements()) {
            Some(placements) => placements.loads().await.map(Some),
            None => Ok(None),
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &dyn Provider> {
        std::iter::once(self.control.as_ref() as &dyn Provider)
            .chain(self.providers.iter().map(|p| p.as_ref()))
    }

    /// Refreshes every provider at once (they read unrelated systems), and the exports
    /// beside them, each into its own [`LiveFleet`], and merges what they found.
    pub async fn refresh(
        &self,
        targets: Vec<RefreshTarget>,
        whole_fleet: bool,
    ) -> Result<LiveFleet, ProviderError> {
        let targets: Arc<[RefreshTarget]> = targets.into();
        let providers: Vec<Arc<dyn Provider>> =
            std::iter::once(self.control.clone() as Arc<dyn Provider>)
                .chain(self.providers.iter().cloned())
                .collect();
        let mut tasks = tokio::task::JoinSet::new();
        for p in providers {
            let targets = targets.clone();
            tasks.spawn(async move {
                let started = std::time::Instant::now();
                let mut live = LiveFleet::default();
                live.whole_fleet = whole_fleet;
                p.refresh(&targets, &mut live).await?;
                log_refreshed(p.name(), started, &live);
                Ok::<_, ProviderError>(live)
            });
        }
        let exporter = self.exporter.clone();
        let wanted = targets.clone();
        tasks.spawn(async move {
            let started = std::time::Instant::now();
            let mut live = LiveFleet::default();
            exporter.refresh(&wanted, &mut live).await?;
            log_refreshed(exporter::Exporter::NAME, started, &live);
            Ok::<_, ProviderError>(live)
        });
        // On an error the rest are stopped (dropping the set aborts them).
        let mut live = LiveFleet::default();
        while let Some(part) = tasks.join_next().await {
            let part = part.map_err(ProviderError::failed("a refresh task failed"))??;
            live.absorb(part);
        }
        Ok(live)
    }
}

/// What one refresh read, and how long it took, in the debug log.
fn log_refreshed(source: &str, started: std::time::Instant, live: &LiveFleet) {
    let queries: usize = live.calls.iter().map(|(_, n)| n).sum();
    let elapsed = started.elapsed();
    tracing::debug!(provider = source, ?elapsed, queries, "refreshed");
}

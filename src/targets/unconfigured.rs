//! The owner of a kind whose target the config does not name (`targets { broker = "none" }`):
//! such resources are not compiled, so this one only meets what an earlier config made and
//! the state still records. It reads nothing and changes nothing: those resources are left
//! as they are, and a purge of one is refused with what to do.

use async_trait::async_trait;

use crate::model::attrs::Attrs;
use crate::model::change::ResourceChange;
use crate::model::resource::{Key, Kind};
use crate::targets::provider::{LiveFleet, Provider, ProviderError, RefreshTarget, StepContext};

pub struct Unconfigured {
    kinds: &'static [Kind],
    /// The setting that would name a target: `targets.broker`.
    setting: &'static str,
}

impl Unconfigured {
    pub fn new(kinds: &'static [Kind], setting: &'static str) -> Unconfigured {
        Unconfigured { kinds, setting }
    }

    fn refuse(&self, key: &Key) -> ProviderError {
        ProviderError::Setting(format!(
            "{key} is recorded, but {} names no target, so it cannot be reached\n  hint: set {} in tenant-reconcile.hcl to the target it was made on",
            self.setting, self.setting
        ))
    }
}

#[async_trait]
impl Provider for Unconfigured {
    /// The setting that names no target (`targets.broker`): what a person would change.
    fn name(&self) -> &'static str {
        self.setting
    }

    fn kinds(&self) -> &'static [Kind] {
        self.kinds
    }

    fn reachable(&self) -> bool {
        false
    }

    async fn refresh(&self, _: &[RefreshTarget], _: &mut LiveFleet) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn apply(
        &self,
        _: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        Err(self.refuse(&change.key))
    }
}

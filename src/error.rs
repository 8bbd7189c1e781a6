//! The library's error type; the binary maps it to exit codes.

use crate::credentials::KeyError;
use crate::diagnostic::Diagnostics;
use crate::plan::PlanError;
use crate::repo::LoadError;
use crate::state::StateError;
use crate::targets::provider::ProviderError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("reading live resources: {0}")]
    Refresh(#[source] ProviderError),
    #[error("the saved plan is stale: it was made against state serial {planned} ({planned_lineage}), and the state is now at serial {current} ({current_lineage})\n  hint: run `tenant-reconcile plan --out FILE` again")]
    StalePlan {
        planned: u64,
        planned_lineage: String,
        current: u64,
        current_lineage: String,
    },
    #[error("{path} is not a saved plan: {message}")]
    BadPlanFile { path: String, message: String },
    #[error("the master key from {from} ({found}) is not the key this state was applied with ({recorded}); nothing was done\n  hint: a wrong key would replace every tenant's password; check the secret, or pass --rotate-master-key to change the key on purpose (the plan then re-keys every tenant)")]
    KeyMismatch {
        recorded: String,
        found: String,
        /// Where the key came from (named `from`: thiserror takes `source` for a cause).
        from: String,
    },
    #[error("{0}")]
    Usage(String),
    /// The control plane refused a call outside a plan or an apply (`events`).
    #[error(transparent)]
    Control(ProviderError),
}

impl From<Diagnostics> for Error {
    fn from(d: Diagnostics) -> Self {
        Error::Invalid(d)
    }
}

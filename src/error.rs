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
    #[error("reading live resources")]
    Refresh(#[source] ProviderError),
    #[error("the saved plan is stale: it was made against state serial {planned} ({planned_lineage}), and the state is now at serial {current} ({current_lineage})\n  hint: run `tenant-reconcile plan --out FILE` again")]
    StalePlan {
        planned: u64,
        planned_lineage: String,
        current: u64,
        current_lineage: String,
    },
    #[error("the saved plan is stale: {} changed since it was made (another run applied it); nothing was done\n  hint: make the plan again, with the same --tenant or --changed-since", moved.join(", "))]
    StaleRecords { moved: Vec<String> },
    #[error("{path} is not a saved plan: {message}")]
    BadPlanFile { path: String, message: String },
    #[error("the master key from {from} ({found}) is not the key this state was applied with ({recorded}); nothing was done\n  hint: a wrong key would replace every tenant's password; check the secret, or pass --rotate-master-key to change the key on purpose (the plan then re-keys every tenant)")]
    KeyMismatch {
        recorded: String,
        found: String,
        /// Where the key came from (named `from`: thiserror takes `source` for a cause).
        from: String,
    },
    /// The command line (or the repo it names) asks for what is not there or cannot be: a
    /// tenant that does not exist, a slug taken, a folder that is not empty.
    #[error("{0}")]
    Usage(String),
    /// A rule stopped the command before it changed anything: a replace or a mass purge
    /// not allowed, a master key missing or not the state's, a secret not set.
    #[error("{0}")]
    Refused(String),
    /// An operation failed on its way: what it was doing, and why (its cause, said by the
    /// CLI with the cause's own; without one, `doing` says both).
    #[error("{doing}")]
    Failed {
        doing: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A target's call outside a plan or an apply failed (`events`, `export --links`).
    #[error(transparent)]
    Control(ProviderError),
}

impl Error {
    /// `doing` failed with `source`.
    pub fn failed(
        doing: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error::Failed {
            doing: doing.into(),
            source: Some(source.into()),
        }
    }
}

impl From<Diagnostics> for Error {
    fn from(d: Diagnostics) -> Self {
        Error::Invalid(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_says_what_it_was_doing_then_its_cause_once() {
        let cause = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied");
        let e = Error::failed("cannot write tenants/acme.yaml", cause);
        assert_eq!(
            crate::causes::chain(&e),
            "cannot write tenants/acme.yaml: permission denied"
        );
        let alone = Error::Failed {
            doing: "cannot reach the bus events at 127.0.0.1:5672".into(),
            source: None,
        };
        assert_eq!(
            crate::causes::chain(&alone),
            "cannot reach the bus events at 127.0.0.1:5672"
        );
    }
}

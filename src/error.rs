//! The library's error type; the binary maps it to exit codes.

use crate::credentials::KeyError;
use crate::diagnostic::Diagnostics;
use crate::plan::PlanError;
use crate::provider::ProviderError;
use crate::repo::LoadError;
use crate::state::StateError;

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
}

impl From<Diagnostics> for Error {
    fn from(d: Diagnostics) -> Self {
        Error::Invalid(d)
    }
}

/// An error and its causes on one line, each said once. Many errors put their cause's text
/// in their own message and also return it as their source (sqlx's database errors, ours
/// with a context); a cause whose text is already there is skipped, so a failed migration
/// reads `relation "projectz" does not exist` once, not three times.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(cause) = cur {
        let text = cause.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{context}: {source}")]
    struct Wrapped {
        context: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Wrapped);

    #[test]
    fn each_cause_is_said_once() {
        let leaf: Box<dyn std::error::Error + Send + Sync> =
            "relation \"projectz\" does not exist".into();
        let e = Wrapped {
            context: "migration 0003 on tenant_acme",
            source: Box::new(Wrapped {
                context: "error returned from database",
                source: leaf,
            }),
        };
        let text = chain(&e);
        assert_eq!(
            text,
            "migration 0003 on tenant_acme: error returned from database: relation \"projectz\" does not exist"
        );
        // A cause not in the message yet is added.
        assert_eq!(chain(&Outer(e)), format!("outer: {text}"));
    }
}

//! The one error every target returns, beneath the targets so the things they write into
//! (an export's sink, a state backend) can return it without reaching the targets.

/// A cause from a library or a service, kept whole for the report.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// A call failed for a cause beneath it (a library's, a service's): what was being done.
    #[error("{doing}")]
    Failed {
        doing: String,
        #[source]
        source: Cause,
    },
    /// What stands is not as the step needs it, and nothing was done to it: what, and what
    /// to do.
    #[error("{0}")]
    Refused(String),
    /// A setting or a secret the target needs is missing or malformed.
    #[error("{0}")]
    Setting(String),
    /// Something the step waits for did not happen in time; the next run waits again.
    #[error("{0}")]
    TimedOut(String),
    /// A server did not answer: which, why, and what to do (the cause is said before the
    /// hint, so it is part of the text).
    #[error("{0}")]
    Unreachable(String),
    /// A step asks for what its target cannot do: a plan or a state not made by this
    /// version, or one edited by hand.
    #[error("{0}")]
    Unplanned(String),
    /// What was being done; the cause is its source, said after it by whoever reports it
    /// ([`crate::causes::chain`]).
    #[error("{context}")]
    Sql {
        context: String,
        #[source]
        source: sqlx::Error,
    },
    /// A remote service (S3) refused a call; `code` is its error code (`NoSuchBucket`), for
    /// callers that handle one case and pass the others on.
    #[error("{message}")]
    Service {
        code: Option<String>,
        message: String,
    },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The control plane has no registry row for the tenant, which the step needs.
    #[error("the tenant has no registry row")]
    NoRegistryRow,
    /// The resource exists and is not this state's; nothing was done to it.
    #[error("{0}")]
    NotOurs(String),
}

impl ProviderError {
    /// Whether trying again may succeed: the connection was lost or refused, the server is
    /// restarting or out of connections, or a transaction lost a serialization conflict.
    pub fn is_transient(&self) -> bool {
        let ProviderError::Sql { source, .. } = self else {
            return false;
        };
        match source {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) => true,
            sqlx::Error::Database(e) => e.code().is_some_and(|c| {
                c.starts_with("08") // connection exception
                    || c.starts_with("57P") // admin shutdown, crash shutdown, cannot connect now
                    || c == "53300" // too many connections
                    || c == "40001" // serialization failure
                    || c == "40P01" // deadlock detected
            }),
            _ => false,
        }
    }

    /// The service's error code, when a remote service refused the call.
    pub fn service_code(&self) -> Option<&str> {
        match self {
            ProviderError::Service { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// `doing` failed with the cause it is given.
    pub fn failed<E: Into<Cause>>(doing: impl Into<String>) -> impl FnOnce(E) -> ProviderError {
        let doing = doing.into();
        move |e| ProviderError::Failed {
            doing,
            source: e.into(),
        }
    }
    pub fn sql(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> ProviderError {
        let context = context.into();
        move |source| ProviderError::Sql { context, source }
    }
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProviderError {
        let context = context.into();
        move |source| ProviderError::Io { context, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a cause says what it was doing; the cause is its source, said once
    /// after it by whoever reports the chain.
    #[test]
    fn a_cause_is_a_source_not_part_of_the_message() {
        let io = ProviderError::io("write exports/acme/manifest.json")(std::io::Error::other(
            "disk full",
        ));
        assert_eq!(io.to_string(), "write exports/acme/manifest.json");
        assert_eq!(
            crate::causes::chain(&io),
            "write exports/acme/manifest.json: disk full"
        );
        let sql = ProviderError::sql("read the registry")(sqlx::Error::PoolTimedOut);
        assert_eq!(sql.to_string(), "read the registry");
        assert!(crate::causes::chain(&sql).starts_with("read the registry: pool timed out"));
    }
}

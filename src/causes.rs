//! An error's text with its causes, for the places that report one. It imports nothing of the
//! crate: every layer may report an error.

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

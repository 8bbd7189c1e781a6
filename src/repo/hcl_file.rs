//! Reading HCL files (plans and the repo config) into serde types, with errors that point
//! at a line.

use serde::de::DeserializeOwned;

use crate::diagnostic::Diagnostic;

/// Deserializes `source`, turning any error into a diagnostic at the best position known:
/// the parser's own for syntax errors, the line of the named attribute for the rest.
pub fn parse<T: DeserializeOwned>(file: &str, source: &str) -> Result<T, Diagnostic> {
    hcl::from_str(source).map_err(|e| match &e {
        hcl::Error::Parse(p) => {
            let loc = p.location();
            Diagnostic::new(file, format!("syntax error: {}", p.message()))
                .at(loc.line(), loc.column())
        }
        other => {
            let mut d = crate::diagnostic::from_serde(file, &other.to_string());
            if let Some((line, col)) = d.field.as_deref().and_then(|f| locate_key(source, f)) {
                d = d.at(line, col);
            }
            d
        }
    })
}

/// The 1-based line and column where `key = ` or `key {` is written.
pub fn locate_key(source: &str, key: &str) -> Option<(usize, usize)> {
    source.lines().enumerate().find_map(|(i, line)| {
        let trimmed = line.trim_start();
        let rest = trimmed.strip_prefix(key)?;
        let rest = rest.trim_start();
        (rest.starts_with('=') || rest.starts_with('{') || rest.starts_with('"'))
            .then(|| (i + 1, line.len() - trimmed.len() + 1))
    })
}

/// The 1-based line and column where `text` first appears, for values inside an inline
/// object, which [`locate_key`] does not look into.
pub fn locate_text(source: &str, text: &str) -> Option<(usize, usize)> {
    source
        .lines()
        .enumerate()
        .find_map(|(i, line)| line.find(text).map(|col| (i + 1, col + 1)))
}

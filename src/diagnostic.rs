//! Problems found in the tenant repo, each pointing at a file, a line and a field.
//!
//! Loading never stops at the first problem: every file is read and every problem is
//! collected, so one `validate` run reports all of them (like ripgrep's partial errors).

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in one input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Path relative to the tenant repo root, with `/` separators.
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The field the problem is about (`slug`, `quotas.seats`), when there is one.
    pub field: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(file: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.into(),
            line: 1,
            column: 1,
            field: None,
            message: message.into(),
            hint: None,
        }
    }

    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.line = line.max(1);
        self.column = column.max(1);
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Places the diagnostic on the line where `field` (a dotted path) is written in `source`.
    pub fn locate(self, source: &str, field: &str) -> Self {
        let (line, column) = locate_yaml_key(source, field).unwrap_or((1, 1));
        self.field(field).at(line, column)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in one load of the tenant repo.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn extend(&mut self, other: impl IntoIterator<Item = Diagnostic>) {
        self.0.extend(other);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Stable order: by file, then position, so output is reproducible across runs.
    pub fn sort(&mut self) {
        self.0.sort_by(|a, b| {
            (&a.file, a.line, a.column, &a.message).cmp(&(&b.file, b.line, b.column, &b.message))
        });
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "error: {d}")?;
        }
        write!(
            f,
            "{} problem{} found",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}

/// The path of `path` relative to `root`, written with `/`, for messages.
pub fn display_path(root: &Path, path: &Path) -> String {
    let rel: PathBuf = path.strip_prefix(root).unwrap_or(path).to_path_buf();
    rel.to_string_lossy().replace('\\', "/")
}

/// The candidate `word` was most likely meant as, when one is close enough (a typo of a
/// letter or two): `plann` → `plan`.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let most = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, _)| *d <= most)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Says serde's messages in the words of a person, not of Rust: `expected i64` is
/// `expected a whole number`.
pub fn plain_words(message: &str) -> String {
    let mut out = message.to_string();
    for (rust, plain) in [
        ("expected i64", "expected a whole number"),
        ("expected u64", "expected a whole number, 0 or more"),
        ("expected u32", "expected a whole number, 0 or more"),
        ("expected i32", "expected a whole number"),
        ("expected usize", "expected a whole number, 0 or more"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected a mapping of keys to values"),
    ] {
        out = out.replace(rust, plain);
    }
    out
}

/// A diagnostic of `file` from a serde message, in a person's words: the field it names
/// said once, as the field; for an unknown field, the fields there are and the one likely
/// meant (``unknown field `plann`, expected one of `slug`, …`` becomes field `plann`: is not
/// a field here …, hint: did you mean `plan`?).
pub fn from_serde(file: &str, message: &str) -> Diagnostic {
    let text = plain_words(message);
    if let Some(rest) = text.strip_prefix("unknown field ") {
        if let Some(field) = backticked(rest) {
            let accepted: Vec<&str> = rest.split('`').skip(3).step_by(2).collect();
            let mut d = Diagnostic::new(
                file,
                if accepted.is_empty() {
                    "is not a field here".to_string()
                } else {
                    format!(
                        "is not a field here; the fields are {}",
                        accepted.join(", ")
                    )
                },
            );
            if let Some(close) = did_you_mean(&field, accepted) {
                d = d.hint(format!("did you mean `{close}`?"));
            }
            return d.field(field);
        }
    }
    let mut d = Diagnostic::new(file, text.clone());
    if let Some(field) = backticked(&text) {
        // serde names the missing field, or the value it did not expect.
        d = d.field(field);
    }
    d
}

/// The first `backticked` word of an error message: serde names fields that way.
pub fn backticked(s: &str) -> Option<String> {
    let start = s.find('`')? + 1;
    let end = s[start..].find('`')? + start;
    Some(s[start..end].to_string())
}

/// Finds the 1-based line and column of a dotted key path in block-style YAML.
///
/// serde_yaml reports positions for syntax errors but not for values that parse and are
/// then rejected (a bad slug, an unknown flag). Tenant files are small block mappings, so
/// following indentation is enough to point at the right line; anything fancier falls
/// back to the start of the file.
pub fn locate_yaml_key(source: &str, path: &str) -> Option<(usize, usize)> {
    let mut parts = path.split('.').peekable();
    let mut want = parts.next()?;
    let mut min_indent: usize = 0;
    let mut parent_indent: Option<usize> = None;
    for (idx, raw) in source.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
            continue;
        }
        let indent = raw.len() - trimmed.len();
        if let Some(p) = parent_indent {
            if indent <= p {
                // Left the parent mapping without finding the child key.
                return None;
            }
        }
        if indent < min_indent {
            continue;
        }
        let key = trimmed
            .split_once(':')
            .map(|(k, _)| k.trim().trim_matches(|c| c == '"' || c == '\''));
        if key == Some(want) {
            match parts.next() {
                None => return Some((idx + 1, indent + 1)),
                Some(next) => {
                    want = next;
                    parent_indent = Some(indent);
                    min_indent = indent + 1;
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_nested_keys() {
        let src = "slug: acme\nquotas:\n  seats: 5\nfeatures:\n  sso: true\n";
        assert_eq!(locate_yaml_key(src, "slug"), Some((1, 1)));
        assert_eq!(locate_yaml_key(src, "quotas.seats"), Some((3, 3)));
        assert_eq!(locate_yaml_key(src, "features.sso"), Some((5, 3)));
        assert_eq!(locate_yaml_key(src, "features.seats"), None);
    }
}

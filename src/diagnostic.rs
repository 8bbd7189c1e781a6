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

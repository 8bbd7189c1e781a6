//! The rules for a tenant slug.
//!
//! A slug becomes a schema, a role, a bucket and a folder name, so it is checked once,
//! here, before it reaches any of them: 3–40 characters of `[a-z0-9-]`, starting with a
//! letter, with no `--` and no trailing `-`. Nothing else ever turns tenant text into a name.

use std::fmt;

pub const MIN_LEN: usize = 3;
pub const MAX_LEN: usize = 40;

/// A tenant slug that has passed [`check`].
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Slug(String);

impl Slug {
    pub fn parse(s: &str) -> Result<Slug, SlugError> {
        check(s)?;
        Ok(Slug(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The slug with `-` as `_`, for database identifiers (`tenant_acme_corp`).
    pub fn ident(&self) -> String {
        self.0.replace('-', "_")
    }
}

impl TryFrom<String> for Slug {
    type Error = SlugError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        check(&s)?;
        Ok(Slug(s))
    }
}

impl From<Slug> for String {
    fn from(s: Slug) -> String {
        s.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Slug {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    #[error("slug must be {MIN_LEN} to {MAX_LEN} characters long, found {0}")]
    Length(usize),
    #[error("slug must start with a lowercase letter")]
    Start,
    #[error("slug may only contain lowercase letters, digits and `-`, found {0:?}")]
    Char(char),
    #[error("slug may not contain `--`")]
    DoubleDash,
    #[error("slug may not end with `-`")]
    TrailingDash,
}

pub fn check(s: &str) -> Result<(), SlugError> {
    let len = s.chars().count();
    if !(MIN_LEN..=MAX_LEN).contains(&len) {
        return Err(SlugError::Length(len));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
    {
        return Err(SlugError::Char(c));
    }
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(SlugError::Start);
    }
    if s.contains("--") {
        return Err(SlugError::DoubleDash);
    }
    if s.ends_with('-') {
        return Err(SlugError::TrailingDash);
    }
    Ok(())
}

/// A name for a plan, flag or quota: lowercase letters, digits and `_` or `-`.
pub fn check_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_slugs() {
        for s in ["acme", "acme-corp", "a1b", "globex-eu-2"] {
            assert!(check(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn refuses_hostile_slugs() {
        let cases = [
            ("ab", SlugError::Length(2)),
            ("Acme", SlugError::Char('A')),
            ("acme'; drop", SlugError::Char('\'')),
            ("../etc", SlugError::Char('.')),
            ("a/b/c", SlugError::Char('/')),
            ("1acme", SlugError::Start),
            ("acme--corp", SlugError::DoubleDash),
            ("acme-", SlugError::TrailingDash),
        ];
        for (s, e) in cases {
            assert_eq!(check(s), Err(e), "{s}");
        }
        assert!(check(&"a".repeat(41)).is_err());
    }
}

//! `check "name" { … }` blocks, in a plan file (that tier's tenants) or in the config (every
//! tenant): the smoke tests a tier asks for besides the built-in ones, run before a tenant
//! becomes active and by `tenant-reconcile check`.
//!
//! ```hcl
//! check "app" {
//!   http          = "https://{{ tenant.slug }}.app.example.com/healthz"
//!   expect_status = 200
//!   timeout       = "5s"
//! }
//! check "projects" {
//!   sql      = "select count(*) > 0 from projects"   # as the tenant's own role
//!   advisory = true                                   # reported, never blocks ACTIVE
//! }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::hcl_file;
use crate::diagnostic::Diagnostic;
use crate::slug;

/// A check block as written.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    #[serde(default)]
    http: Option<String>,
    #[serde(default)]
    expect_status: Option<u16>,
    #[serde(default)]
    sql: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    advisory: bool,
}

pub use crate::model::checks::{CheckSpec, Probe};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The checks of one file, or every problem with them (file, line, field).
pub fn parse(
    spans: &hcl_file::Spans,
    raw: BTreeMap<String, RawCheck>,
) -> Result<Vec<CheckSpec>, Vec<Diagnostic>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (name, raw) in raw {
        let problem = |message: String, field: &str, hint: &str| {
            // A field not written (the block's name) is placed at its block.
            let path = format!("check.{name}.{field}");
            spans.problem(&path, message).hint(hint.to_string())
        };
        if !slug::check_name(&name) || builtin_name(&name) {
            problems.push(problem(
                format!("{name:?} cannot name a check"),
                "name",
                "name a check with lowercase letters, digits, `-` and `_`, other than a built-in check's name (registry, owner, login, data, write, isolation, bucket, files)",
            ));
            continue;
        }
        let timeout = match raw.timeout.as_deref().map(humantime::parse_duration) {
            None => DEFAULT_TIMEOUT,
            Some(Ok(d)) if d >= Duration::from_millis(1) && d <= Duration::from_secs(600) => d,
            Some(_) => {
                problems.push(problem(
                    format!("{:?} is not a timeout", raw.timeout.unwrap_or_default()),
                    "timeout",
                    "a duration from 1ms to 10m, like \"5s\"",
                ));
                continue;
            }
        };
        let probe = match (raw.http, raw.sql) {
            (Some(_), None) if raw.expect_status.is_some_and(|s| !(100..=599).contains(&s)) => {
                problems.push(problem(
                    format!(
                        "{} is not an HTTP status",
                        raw.expect_status.unwrap_or_default()
                    ),
                    "expect_status",
                    "an HTTP status from 100 to 599, like 200",
                ));
                continue;
            }
            (Some(url), None) => {
                if let Err(e) = check_url_template(&url) {
                    problems.push(problem(e, "http", "an http:// or https:// URL; it may use {{ tenant.slug }}, {{ tenant.plan }} and {{ tenant.region }}"));
                    continue;
                }
                Probe::Http {
                    url,
                    expect_status: raw.expect_status.unwrap_or(200),
                }
            }
            (None, Some(sql)) if raw.expect_status.is_none() => {
                if sql.trim().is_empty() {
                    problems.push(problem(
                        "the query is empty".into(),
                        "sql",
                        "a query whose first column is true when the tenant is healthy",
                    ));
                    continue;
                }
                Probe::Sql { sql }
            }
            (None, Some(_)) => {
                problems.push(problem(
                    "expect_status is for http checks".into(),
                    "expect_status",
                    "an sql check passes when its first column is true",
                ));
                continue;
            }
            _ => {
                problems.push(problem(
                    "a check is either `http` or `sql`, exactly one".into(),
                    "http",
                    "check \"app\" { http = \"https://{{ tenant.slug }}.example.com/healthz\" }",
                ));
                continue;
            }
        };
        out.push(CheckSpec {
            name,
            probe,
            timeout_ms: timeout.as_millis() as u64,
            advisory: raw.advisory,
        });
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The built-in checks' names, which a declared one may not take.
pub const BUILTIN: &[&str] = &[
    "registry",
    "owner",
    "login",
    "data",
    "write",
    "isolation",
    "bucket",
    "files",
];

fn builtin_name(name: &str) -> bool {
    BUILTIN.contains(&name)
}

/// A URL template is checked once with made-up values: it must render, and give an http
/// URL. Each tenant's URL is checked again once rendered ([`render_url`]).
fn check_url_template(template: &str) -> Result<(), String> {
    render_url(template, "example", "starter", "eu-west-1").map(drop)
}

/// The URL of an http check for one tenant. Only checked values reach it (a slug, a plan
/// name, a region: letters, digits, `-` and `_`), and the result must parse as an http URL.
pub fn render_url(template: &str, slug: &str, plan: &str, region: &str) -> Result<String, String> {
    for value in [slug, plan, region] {
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            return Err(format!("{value:?} cannot go into a URL"));
        }
    }
    let mut ctx = tera::Context::new();
    ctx.insert(
        "tenant",
        &serde_json::json!({ "slug": slug, "plan": plan, "region": region }),
    );
    let url = super::templates::engine()
        .render_str(template, &ctx)
        .map_err(|e| {
            format!(
                "the URL template does not render: {}",
                crate::causes::chain(&e)
            )
        })?;
    let parsed = url::Url::parse(&url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    // Check messages show the URL: it may not carry a secret, and one that does is not
    // repeated here either.
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("a check's URL cannot carry a user or password".into());
    }
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_src(src: &str) -> Result<Vec<CheckSpec>, Vec<Diagnostic>> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            check: BTreeMap<String, RawCheck>,
        }
        let (f, spans): (File, _) = hcl_file::parse("plans/x.hcl", src)?;
        parse(&spans, f.check)
    }

    #[test]
    fn reads_labelled_blocks() {
        let src = r#"
check "app" {
  http = "https://{{ tenant.slug }}.app.example.com/healthz"
  timeout = "2s"
}
check "projects" {
  sql = "select true"
  advisory = true
}
"#;
        let c = parse_src(src).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].name, "app");
        assert_eq!(c[0].timeout_ms, 2000);
        assert!(
            matches!(
                &c[0].probe,
                Probe::Http {
                    expect_status: 200,
                    ..
                }
            ),
            "{c:?}"
        );
        assert!(c[1].advisory);
    }

    #[test]
    fn refuses_a_check_without_a_probe_with_its_line() {
        let src = "\n\ncheck \"app\" {\n  timeout = \"2s\"\n}\n";
        let e = parse_src(src).unwrap_err();
        assert_eq!(e[0].line, 3);
        assert_eq!(e[0].field.as_deref(), Some("check.app.http"));
    }

    #[test]
    fn urls_take_only_checked_values() {
        assert!(render_url("https://{{ tenant.slug }}.x.io/", "acme", "p", "r").is_ok());
        assert!(render_url("https://x.io/{{ tenant.slug }}", "a/../b", "p", "r").is_err());
        assert!(render_url("file:///etc/{{ tenant.slug }}", "acme", "p", "r").is_err());
        let e = render_url("ftp://u:hunter2@x.io/", "acme", "p", "r").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(parse_src("check \"a\" {\n http = \"ftp://x\"\n}\n").is_err());
        assert!(parse_src("check \"login\" {\n sql = \"select true\"\n}\n").is_err());
    }
}

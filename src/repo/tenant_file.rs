//! `tenants/<slug>.yaml`: the raw serde shape, then the checked [`TenantSpec`].

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::diagnostic::Diagnostic;
use crate::model::tenant::{Isolation, Offboarding, Status, TenantSpec};
use crate::slug::{self, Slug};

/// Tenant files larger than this are refused before they are parsed: a real one is a
/// few hundred bytes, and a parser should never be handed megabytes of hostile YAML.
pub const MAX_TENANT_FILE_BYTES: u64 = 64 * 1024;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawOwner {
    email: String,
}

/// A tenant file as written: the type the loader reads, and the one its JSON Schema is made
/// from (`schema tenant`).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    slug: String,
    name: String,
    plan: String,
    #[serde(default)]
    status: Status,
    owner: RawOwner,
    region: String,
    #[serde(default)]
    locale: Option<String>,
    #[serde(default)]
    isolation: Option<Isolation>,
    #[serde(default)]
    features: BTreeMap<String, bool>,
    #[serde(default)]
    quotas: BTreeMap<String, i64>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    offboarding: Option<Offboarding>,
    /// The Postgres server its data must live on, when the config names several.
    #[serde(default)]
    server: Option<String>,
}

/// Parses one tenant file. `stem` is the file name without `.yaml`.
pub fn parse(file: &str, stem: &str, source: &str) -> Result<TenantSpec, Vec<Diagnostic>> {
    match serde_yaml::from_str::<RawTenant>(source) {
        Ok(raw) => check(file, stem, source, raw),
        Err(e) => {
            let (rest, mut problems) = every_problem(file, source, &e);
            if let Some(Err(more)) = rest.map(|raw| check(file, stem, source, raw)) {
                problems.extend(more);
            }
            Err(problems)
        }
    }
}

/// serde_yaml stops at the first field it refuses. The file's values are read again along
/// their paths (as plans and the config are), so one run reports every refused field at
/// its line; what is left once they are taken out is returned for the other checks. A file
/// that is not YAML, or not a mapping of plain keys, has its first problem only.
fn every_problem(
    file: &str,
    source: &str,
    first: &serde_yaml::Error,
) -> (Option<RawTenant>, Vec<Diagnostic>) {
    let value = serde_yaml::from_str::<serde_yaml::Value>(source)
        .ok()
        .and_then(|v| hcl::to_value(v).ok());
    let Some(value) = value else {
        return (None, vec![yaml_error(file, source, first)]);
    };
    let spans = super::hcl_file::Spans::of_yaml(file, source, &value);
    let (rest, mut problems) = super::hcl_file::read_all::<RawTenant>(value, &spans);
    if problems.is_empty() {
        // Read along paths it passes: serde_yaml's own reason stands.
        return (None, vec![yaml_error(file, source, first)]);
    }
    // A misspelt field is also a field missing: it is said once, as the misspelling (whose
    // hint names the field meant).
    let misspelt: Vec<String> = problems
        .iter()
        .filter(|d| d.message.contains("is not a field here"))
        .filter_map(|d| d.field.clone())
        .collect();
    problems.retain(|d| {
        let missing = d.message.starts_with("missing field");
        !(missing
            && d.field.as_deref().is_some_and(|f| {
                misspelt
                    .iter()
                    .any(|m| strsim::damerau_levenshtein(m, f) <= 2)
            }))
    });
    (rest, problems)
}

/// The checks of each field's value, once the file has the shape of a tenant file.
fn check(
    file: &str,
    stem: &str,
    source: &str,
    raw: RawTenant,
) -> Result<TenantSpec, Vec<Diagnostic>> {
    let mut problems = Vec::new();
    let bad = |field: &str, message: String, hint: &str| {
        let d = Diagnostic::new(file, message).locate(source, field);
        if hint.is_empty() {
            d.field(field)
        } else {
            d.field(field).hint(hint)
        }
    };

    let slug = match Slug::parse(&raw.slug) {
        Ok(s) => Some(s),
        Err(e) => {
            problems.push(bad(
                "slug",
                format!("{e} (got {:?})", raw.slug),
                "a slug becomes a schema, role and bucket name: use 3-40 of a-z, 0-9 and `-`, starting with a letter",
            ));
            None
        }
    };
    if raw.slug != stem {
        problems.push(bad(
            "slug",
            format!("slug {:?} differs from the file name {stem:?}", raw.slug),
            "name the file after the slug: tenants/<slug>.yaml",
        ));
    }
    let name = raw.name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        problems.push(bad(
            "name",
            "name must be 1-200 characters with no control characters".into(),
            "",
        ));
    }
    if !slug::check_name(&raw.plan) {
        problems.push(bad(
            "plan",
            format!("{:?} is not a plan name", raw.plan),
            "plans are named after files in plans/, e.g. `plan: growth` for plans/growth.hcl",
        ));
    }
    if !valid_email(&raw.owner.email) {
        problems.push(bad(
            "owner.email",
            format!("{:?} is not an email address", raw.owner.email),
            "",
        ));
    }
    if !crate::model::tenant::valid_region(&raw.region) {
        problems.push(bad(
            "region",
            format!("{:?} is not a region name", raw.region),
            "use lowercase letters, digits and `-`, e.g. eu-west-1",
        ));
    }
    let locale = raw.locale.unwrap_or_else(|| "en".to_string());
    if !valid_locale(&locale) {
        problems.push(bad(
            "locale",
            format!("{locale:?} is not a locale"),
            "use a language tag such as en, de or pt-BR",
        ));
    }
    let mut quotas = BTreeMap::new();
    for (k, v) in raw.quotas {
        if v < 0 {
            problems.push(bad(
                &format!("quotas.{k}"),
                format!("quota {k} must not be negative (got {v})"),
                "",
            ));
        } else {
            quotas.insert(k, v as u64);
        }
    }
    for (k, v) in &raw.labels {
        if !valid_label_key(k) || !valid_label_value(v) {
            problems.push(bad(
                &format!("labels.{k}"),
                format!("label {k}={v:?} is not a valid label"),
                "keys and values follow Kubernetes label rules: up to 63 of a-z, A-Z, 0-9, `-`, `_`, `.`",
            ));
        }
    }
    let offboarding = raw.offboarding.unwrap_or_default();
    if raw.offboarding.is_some() && raw.status != Status::Deprovisioned {
        problems.push(bad(
            "offboarding",
            "offboarding applies only to a tenant whose status is deprovisioned".into(),
            "add `status: deprovisioned`, or remove the offboarding block",
        ));
    }
    if !offboarding.export && !offboarding.erase {
        problems.push(bad(
            "offboarding.export",
            "the export may be waived only by an erasure request".into(),
            "a tenant that leaves gets its data exported; `offboarding: { erase: true, export: false }` waives it",
        ));
    }

    match (problems.is_empty(), slug) {
        (true, Some(slug)) => Ok(TenantSpec {
            slug,
            name: name.to_string(),
            plan: raw.plan,
            status: raw.status,
            // One owner however the address is capitalised: `Ops@Acme.example` and
            // `ops@acme.example` are the same person to every mail system in use.
            owner_email: raw.owner.email.to_lowercase(),
            region: raw.region,
            locale,
            isolation: raw.isolation,
            features: raw.features,
            quotas,
            labels: raw.labels,
            offboarding,
            server: raw.server,
            file: file.to_string(),
            source: source.to_string(),
        }),
        _ => Err(problems),
    }
}

/// Turns a serde_yaml error into a diagnostic at its position, naming the field when the
/// message does (serde says ``unknown field `x` `` and ``missing field `x` ``).
pub fn yaml_error(file: &str, source: &str, e: &serde_yaml::Error) -> Diagnostic {
    let message = e.to_string();
    // serde_yaml appends " at line L column C"; the position goes in the prefix instead.
    let text = match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.clone(),
    };
    // serde_yaml prefixes a nested value's problem with its path: `quotas.seats: invalid type`.
    let (path, text) = match text.split_once(": ") {
        Some((p, rest)) if !p.contains(' ') && locate(source, p).is_some() => {
            (Some(p.to_string()), rest.to_string())
        }
        _ => (None, text),
    };
    let mut d = crate::diagnostic::from_serde(file, &text);
    if let Some(loc) = e.location() {
        d = d.at(loc.line(), loc.column());
    }
    if let Some(path) = path {
        d = d.field(path);
    }
    if text.contains("recursion limit") || text.contains("repetition limit") {
        d = d.hint(
            "the file nests or repeats aliases too deeply; tenant files need no anchors or aliases",
        );
    }
    d
}

fn locate(source: &str, field: &str) -> Option<(usize, usize)> {
    crate::diagnostic::locate_yaml_key(source, field)
}

fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    s.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.contains('@')
}

fn valid_locale(s: &str) -> bool {
    let mut parts = s.split('-');
    let lang = parts.next().unwrap_or("");
    (2..=3).contains(&lang.len())
        && lang.chars().all(|c| c.is_ascii_lowercase())
        && parts.all(|p| (2..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

fn valid_label_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
}

fn valid_label_value(s: &str) -> bool {
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "slug: acme\nname: Acme\nplan: growth\nowner:\n  email: a@acme.example\nregion: eu-west-1\n";

    #[test]
    fn parses_a_minimal_file_with_defaults() {
        let t = parse("tenants/acme.yaml", "acme", GOOD).unwrap();
        assert_eq!(t.slug.as_str(), "acme");
        assert_eq!(t.locale, "en");
        assert_eq!(t.status, Status::Active);
        assert_eq!(t.isolation, None);
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let src = format!("{GOOD}colour: red\n");
        let e = parse("tenants/acme.yaml", "acme", &src).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].field.as_deref(), Some("colour"));
        assert_eq!(e[0].line, 7);
    }

    #[test]
    fn every_problem_of_a_file_is_reported_in_one_run() {
        let src = "slug: acme\nname: Acme\nplan: growth\nowner:\n  email: not-an-address\n  phone: 1\nregion: eu-west-1\ncolour: red\nquotas:\n  seats: many\nstatus: sleeping\n";
        let e = parse("tenants/acme.yaml", "acme", src).unwrap_err();
        let found: Vec<_> = e
            .iter()
            .map(|d| (d.field.as_deref().unwrap_or(""), d.line))
            .collect();
        assert_eq!(
            found,
            [
                ("owner.phone", 6),
                ("colour", 8),
                ("quotas.seats", 10),
                ("status", 11),
                ("owner.email", 5),
            ],
            "{e:#?}"
        );
    }

    #[test]
    fn slug_must_match_the_file_name() {
        let e = parse("tenants/other.yaml", "other", GOOD).unwrap_err();
        assert!(e[0].message.contains("differs from the file name"));
        assert_eq!(e[0].line, 1);
    }

    #[test]
    fn checks_emails_and_locales() {
        assert!(valid_email("ops@acme.example"));
        assert!(!valid_email("ops@acme"));
        assert!(!valid_email("a b@acme.example"));
        assert!(valid_locale("pt-BR"));
        assert!(!valid_locale("english"));
    }
}

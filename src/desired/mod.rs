//! Compiling the desired state: plan defaults + tenant overrides → effective settings →
//! each tenant's resources, with templates rendered.

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::Serialize;
use serde_json::{json, Value};

// Resources, their keys and attributes are the model's, beneath every layer; the compiler's
// users name them from here as well.
pub use crate::model::attrs::{attrs, Attrs};
use crate::model::digest::sha256_hex;
pub use crate::model::resource::{Address, Key, Kind, Resource};

pub mod placement;

use crate::credentials::MasterKey;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::repo::{templates, Status, TenantRepo, TenantSpec};
use crate::slug::Slug;
use crate::state::{Lifecycle, State};
use crate::targets::data::{database_attrs, seed_attrs, Naming};
use crate::targets::slot::TenantInputs;

pub use crate::model::tenant::Effective;

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct DesiredTenant {
    pub effective: Effective,
    /// The tenant file it came from.
    pub file: String,
    /// Sorted by key, which is dependency order.
    pub resources: Vec<Resource>,
    /// What the tenant's password is derived from, with the master key and its id.
    pub credentials_version: u32,
    /// Why no Postgres server takes it, when the config names several and it is not placed
    /// yet: its plan fails it, and the rest of the fleet goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unplaced: Option<String>,
    /// Where this plan places it, and that server's load then, when it places it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed: Option<String>,
}

impl DesiredTenant {
    pub fn slug(&self) -> &Slug {
        &self.effective.slug
    }
    /// The lifecycle the file asks for once everything is in place.
    pub fn target_lifecycle(&self) -> Lifecycle {
        match self.effective.status {
            Status::Active => Lifecycle::Active,
            Status::Suspended => Lifecycle::Suspended,
            // Revoked, exported and held; the plan moves it on to its tombstone once the
            // hold is over (`offboarding`), which depends on the time, not the file alone.
            Status::Deprovisioned => Lifecycle::Deprovisioning,
        }
    }
}

/// The keys of every tenant's resources, in the order `compile_each` gives them. They depend on
/// the repo only, so refresh can start before compiling.
pub fn resource_keys(repo: &TenantRepo) -> Vec<Key> {
    let mut keys: Vec<Key> = [
        Kind::REGISTRY,
        Kind::OWNER,
        Kind::FEATURES,
        Kind::QUOTAS,
        Kind::PLACEMENT,
        Kind::ROLE,
        Kind::DATABASE,
    ]
    .into_iter()
    // A placement only where the config names several servers.
    .filter(|k| *k != Kind::PLACEMENT || !repo.config.servers.is_empty())
    .map(Key::new)
    .collect();
    if repo.templates.has_seed {
        keys.push(Key::new(Kind::SEED));
    }
    keys.push(Key::new(Kind::BUCKET));
    for plugged in &repo.config.plugged {
        keys.extend(plugged.keys());
    }
    keys.extend(
        repo.templates
            .files
            .iter()
            .map(|name| Key::named(Kind::FILE, name.clone())),
    );
    keys
}

/// Which tenants to compile, and whose credentials to rotate.
#[derive(Debug, Clone, Default)]
pub struct Selection<'a> {
    /// Only these tenants (all when `None`).
    pub only: Option<&'a [Slug]>,
    /// These tenants get the next credentials version, hence a new password.
    pub rotate: &'a [Slug],
    /// Leave the seed rows out (the seed resource then has no content): a plan renders
    /// them only for a tenant that gets seeded ([`seed_content`]), since most tenants were
    /// seeded long ago and rendering and checking rows is a good part of compiling.
    pub defer_seed: bool,
    /// The servers chosen for the tenants not placed yet ([`placement::decide`]), when the
    /// config names several; a tenant without a choice keeps the one its state records.
    pub placements: Option<&'a placement::Decisions>,
}

/// Compiles every selected tenant of `repo`, in parallel, and hands each to `keep` the
/// moment it is compiled; only what `keep` returns is kept, in slug order. A plan keeps the
/// changes of a tenant and drops the rest, so its memory grows with what changes, not with
/// the fleet. Every tenant is compiled even after a failure, so all problems are reported
/// at once.
///
/// `state` supplies what earlier applies decided (a tenant's id and credentials version),
/// which the derived credentials depend on. Without a master key the password fingerprint
/// is simply left out and shows as known after apply.
pub fn compile_each<T: Send>(
    repo: &TenantRepo,
    state: &State,
    key: Option<&MasterKey>,
    select: &Selection<'_>,
    keep: impl Fn(DesiredTenant) -> Result<Option<T>, Diagnostic> + Sync,
) -> Result<Vec<T>, Diagnostics> {
    // A set: a rollout compiles a few thousand tenants from one repo and the rest from
    // another, each by a list.
    let only: Option<std::collections::HashSet<&Slug>> = select.only.map(|o| o.iter().collect());
    let naming = Naming::from(&repo.config.postgres);
    let selected: Vec<&TenantSpec> = repo
        .tenants
        .iter()
        .filter(|t| only.as_ref().is_none_or(|o| o.contains(&t.slug)))
        .collect();
    let results: Vec<Result<Option<T>, Diagnostic>> = selected
        .par_iter()
        .map(|spec| compile_tenant(repo, &naming, spec, state, key, select).and_then(&keep))
        .collect();
    let mut problems = Diagnostics::default();
    // Counted first: a fresh plan keeps every tenant, and a list grown by doubling would
    // hold up to twice the room.
    let mut kept = Vec::with_capacity(results.iter().filter(|r| matches!(r, Ok(Some(_)))).count());
    for r in results {
        match r {
            Ok(t) => kept.extend(t),
            Err(d) => problems.push(d),
        }
    }
    if problems.is_empty() {
        Ok(kept)
    } else {
        problems.sort();
        Err(problems)
    }
}

fn compile_tenant(
    repo: &TenantRepo,
    naming: &Naming,
    spec: &TenantSpec,
    state: &State,
    key: Option<&MasterKey>,
    select: &Selection<'_>,
) -> Result<DesiredTenant, Diagnostic> {
    let rotate = select.rotate.contains(&spec.slug);
    let defer_seed = select.defer_seed;
    // The loader has already checked that the plan exists and declares every override.
    let plan = &repo.plans[&spec.plan];
    let mut features = plan.features.clone();
    features.extend(spec.features.iter().map(|(k, v)| (k.clone(), *v)));
    let mut quotas = plan.quotas.clone();
    quotas.extend(spec.quotas.iter().map(|(k, v)| (k.clone(), *v)));
    let effective = Effective {
        slug: spec.slug.clone(),
        name: spec.name.clone(),
        plan: spec.plan.clone(),
        status: spec.status,
        region: spec.region.clone(),
        locale: spec.locale.clone(),
        isolation: spec.isolation.unwrap_or(plan.isolation),
        owner_email: spec.owner_email.clone(),
        retention_days: plan.retention_days,
        erasure_export_days: plan.erasure_export_days,
        features,
        quotas,
        labels: spec.labels.clone(),
        offboarding: spec.offboarding,
        outputs: state
            .tenants
            .get(spec.slug.as_str())
            .map(|t| t.outputs.clone())
            .unwrap_or_default(),
    };
    let recorded = state.tenants.get(spec.slug.as_str());
    let lifecycle = match spec.status {
        Status::Suspended => "suspended",
        Status::Deprovisioned => "deprovisioning",
        Status::Active => "active",
    };

    let mut resources = vec![
        Resource {
            key: Key::new(Kind::REGISTRY),
            attrs: attrs([
                ("name", json!(effective.name)),
                ("plan", json!(effective.plan)),
                ("region", json!(effective.region)),
                ("locale", json!(effective.locale)),
                ("isolation", json!(effective.isolation.as_str())),
                ("labels", json!(effective.labels)),
                ("lifecycle", json!(lifecycle)),
            ]),
            content: None,
        },
        Resource {
            key: Key::new(Kind::OWNER),
            attrs: attrs([
                ("email", json!(effective.owner_email)),
                ("role", json!("owner")),
            ]),
            content: None,
        },
        Resource {
            key: Key::new(Kind::FEATURES),
            attrs: effective
                .features
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect(),
            content: None,
        },
        Resource {
            key: Key::new(Kind::QUOTAS),
            attrs: effective
                .quotas
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect(),
            content: None,
        },
    ];

    let mut resolved = placement::Resolved::default();
    if !repo.config.servers.is_empty() {
        resolved = placement::resolve(
            placement::recorded_server(recorded),
            select.placements.and_then(|p| p.get(&spec.slug)),
        );
        if let Some(server) = resolved.server.take() {
            resources.push(Resource {
                key: Key::new(Kind::PLACEMENT),
                attrs: attrs([("server", json!(server))]),
                content: None,
            });
        }
    }

    let credentials_version = recorded.map_or(1, |r| r.credentials_version) + u32::from(rotate);
    let role = naming.role(&spec.slug);
    let mut role_attrs = attrs([
        ("name", json!(role)),
        ("login", json!(spec.status == Status::Active)),
        ("credentials_version", json!(credentials_version)),
    ]);
    let incarnation = recorded.and_then(|r| r.incarnation.as_deref());
    if let (Some(key), Some(tenant_id)) = (key, recorded.and_then(|r| r.tenant_id.as_deref())) {
        let password = key.password(tenant_id, incarnation, &role, credentials_version);
        role_attrs.insert(
            "password_fingerprint",
            json!(crate::credentials::fingerprint(&password)),
        );
    }
    resources.push(Resource {
        key: Key::new(Kind::ROLE),
        attrs: role_attrs,
        content: None,
    });

    resources.push(Resource {
        key: Key::new(Kind::DATABASE),
        // The tenant's role can reach its slice: a revoked grant shows as drift.
        attrs: database_attrs(
            &naming.slice(&spec.slug, effective.isolation),
            effective.isolation.as_str(),
            json!(repo.migrations.last().map(|m| m.id()).unwrap_or_default()),
            true,
        ),
        content: None,
    });

    let placed_on = resources
        .iter()
        .find(|r| r.key.kind == Kind::PLACEMENT)
        .map(|r| r.attrs.str("server"));
    let context = template_context(repo, &effective, placed_on);

    if repo.templates.has_seed {
        resources.push(Resource {
            key: Key::new(Kind::SEED),
            attrs: seed_attrs(),
            content: if defer_seed {
                None
            } else {
                Some(render_seed_rows(repo, &context, &spec.slug, &spec.file)?)
            },
        });
    }

    resources.push(Resource {
        key: Key::new(Kind::BUCKET),
        attrs: crate::targets::buckets::desired(
            &repo.config.targets.buckets,
            &repo.config.s3,
            spec,
            &plan.bucket,
        ),
        content: None,
    });

    if !repo.config.plugged.is_empty() {
        let password = match (key, recorded.and_then(|r| r.tenant_id.as_deref())) {
            (Some(key), Some(tenant_id)) => Some(move |login: &str| {
                key.password(tenant_id, incarnation, login, credentials_version)
            }),
            _ => None,
        };
        let inputs = TenantInputs {
            tenant: &effective,
            password: password.as_ref().map(|f| f as &dyn Fn(&str) -> String),
        };
        for plugged in &repo.config.plugged {
            resources.extend(plugged.desired(&inputs));
        }
    }

    for name in &repo.templates.files {
        let template = format!("{}{name}.tera", templates::FILES_PREFIX);
        let content = render(repo, &template, &context, &spec.slug, &spec.file)?;
        resources.push(Resource {
            key: Key::named(Kind::FILE, name.clone()),
            attrs: attrs([
                ("path", json!(format!("{}/{name}", spec.slug))),
                ("sha256", json!(sha256_hex(&content))),
            ]),
            content: Some(content),
        });
    }

    if spec.status == Status::Deprovisioned && spec.offboarding.export {
        resources.push(Resource {
            key: Key::new(Kind::EXPORT),
            attrs: export_attrs(repo, &spec.slug),
            content: None,
        });
    }

    debug_assert!(
        resources
            .iter()
            .map(|r| &r.key)
            .filter(|k| k.kind != Kind::EXPORT)
            .eq(resource_keys(repo)
                .iter()
                .filter(|k| k.kind != Kind::PLACEMENT || resources.iter().any(|r| r.key == **k))),
        "resource_keys() lists what compile_tenant() makes (an export only when offboarding, a placement once there is one)"
    );
    Ok(DesiredTenant {
        effective,
        file: spec.file.clone(),
        resources,
        credentials_version,
        unplaced: resolved.unplaced,
        placed: resolved.placed,
    })
}

/// What templates see: the tenant's effective settings as `tenant`, and the Postgres server
/// its data is on as `server` (its `name`, `region` and `labels`; all empty when the config
/// names no servers), so a file that names the server is rendered anew when the tenant moves.
/// Never the server's URL, which may hold a password.
fn template_context(
    repo: &TenantRepo,
    effective: &Effective,
    server: Option<&str>,
) -> tera::Context {
    let mut context = tera::Context::new();
    context.insert("tenant", effective);
    let on = server.and_then(|name| {
        repo.config
            .servers
            .iter()
            .map(|s| &s.placement)
            .find(|s| s.name == name)
    });
    context.insert(
        "server",
        &json!({
            "name": on.map_or("", |s| s.name.as_str()),
            "region": on.map_or("", |s| s.region.as_str()),
            "labels": on.map(|s| s.labels.clone()).unwrap_or_default(),
        }),
    );
    context
}

/// The seed rows of a tenant compiled without them (see [`Selection::defer_seed`]).
pub fn seed_content(repo: &TenantRepo, tenant: &DesiredTenant) -> Result<String, Diagnostic> {
    render_seed_rows(
        repo,
        &template_context(
            repo,
            &tenant.effective,
            tenant
                .resources
                .iter()
                .find(|r| r.key.kind == Kind::PLACEMENT)
                .map(|r| r.attrs.str("server")),
        ),
        tenant.slug(),
        &tenant.file,
    )
}

fn render_seed_rows(
    repo: &TenantRepo,
    context: &tera::Context,
    slug: &Slug,
    file: &str,
) -> Result<String, Diagnostic> {
    let rendered = render(repo, templates::SEED_TEMPLATE, context, slug, file)?;
    seed_rows(&rendered).map_err(|m| {
        Diagnostic::new(format!("templates/{}", templates::SEED_TEMPLATE), m)
            .hint(format!("rendered for tenant {slug} ({file})"))
    })
}

fn render(
    repo: &TenantRepo,
    template: &str,
    context: &tera::Context,
    slug: &Slug,
    file: &str,
) -> Result<String, Diagnostic> {
    repo.templates.tera.render(template, context).map_err(|e| {
        Diagnostic::new(format!("templates/{template}"), crate::causes::chain(&e))
            .hint(format!("while rendering for tenant {slug} ({file})"))
    })
}

/// Where a leaving tenant's data goes, as compiled and as the exporter reads it back.
pub fn export_attrs(repo: &TenantRepo, slug: &Slug) -> Attrs {
    attrs([(
        "location",
        json!(format!(
            "{}/{slug}",
            repo.config.offboarding.export_to.trim_end_matches('/')
        )),
    )])
}

/// Checks rendered seed YAML (`table: [ {column: value} ]`) and returns it as canonical
/// JSON. Table and column names must be plain identifiers; values must be scalars. They
/// are inserted with bound parameters, so values may hold any text.
pub fn seed_rows(rendered: &str) -> Result<String, String> {
    type Rows = BTreeMap<String, Vec<BTreeMap<String, serde_yaml::Value>>>;
    let rows: Rows = serde_yaml::from_str(rendered)
        .map_err(|e| format!("seed template did not render to `table: [rows]` YAML: {e}"))?;
    let mut out: BTreeMap<String, Vec<BTreeMap<String, Value>>> = BTreeMap::new();
    for (table, list) in rows {
        if !is_identifier(&table) {
            return Err(format!("{table:?} is not a plain table name"));
        }
        let mut converted = Vec::with_capacity(list.len());
        for row in list {
            let mut r = BTreeMap::new();
            for (col, v) in row {
                if !is_identifier(&col) {
                    return Err(format!(
                        "{col:?} in table {table} is not a plain column name"
                    ));
                }
                let v = match v {
                    serde_yaml::Value::Null => Value::Null,
                    serde_yaml::Value::Bool(b) => json!(b),
                    serde_yaml::Value::Number(n) => {
                        serde_json::to_value(&n).map_err(|e| e.to_string())?
                    }
                    serde_yaml::Value::String(s) => json!(s),
                    _ => {
                        return Err(format!(
                            "column {col} in table {table} must hold a single value"
                        ))
                    }
                };
                r.insert(col, v);
            }
            converted.push(r);
        }
        out.insert(table, converted);
    }
    serde_json::to_string(&out).map_err(|e| e.to_string())
}

/// A lowercase SQL identifier that never needs escaping: `[a-z_][a-z0-9_]{0,62}`.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_rows_refuse_sql_in_names() {
        assert!(seed_rows("projects:\n  - name: \"x'); drop table y; --\"\n").is_ok());
        assert!(seed_rows("\"projects; drop\":\n  - name: x\n").is_err());
        assert!(seed_rows("projects:\n  - \"na me\": x\n").is_err());
        assert!(seed_rows("projects:\n  - name: [1, 2]\n").is_err());
    }
}

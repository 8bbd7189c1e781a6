//! JSON Schemas of the files people write, made from the very types the loader reads
//! (`RawTenant`, `Config`), never written twice. The tenant schema is the repo's own: its
//! plans are the allowed `plan` values, and each plan's declared flags and quotas are the
//! keys a tenant on it may override, so an editor (yaml-language-server) completes them and
//! marks a typo as the loader would.

use serde_json::{json, Map, Value};

use crate::repo::{Isolation, TenantRepo};

/// The tenant file's schema for `repo`, as pretty JSON.
pub fn tenant(repo: &TenantRepo) -> String {
    let mut schema =
        serde_json::to_value(schemars::schema_for!(crate::repo::tenant_file::RawTenant))
            .expect("a schema serializes");
    schema["$id"] = json!("tenant-reconcile/tenant");
    schema["title"] = json!("A tenant file (tenants/<slug>.yaml)");
    let props = &mut schema["properties"];
    props["slug"] = json!({
        "description": "The tenant's name in every resource: 3 to 40 of a-z, 0-9 and -, starting with a letter, not ending with - and without --; the file is named after it.",
        "type": "string",
        "minLength": crate::slug::MIN_LEN,
        "maxLength": crate::slug::MAX_LEN,
        "pattern": "^[a-z](?!.*--)[a-z0-9-]*[a-z0-9]$"
    });
    let plans: Vec<&String> = repo.plans.keys().collect();
    props["plan"] = json!({
        "description": "A plan of plans/, whose defaults the tenant gets.",
        "enum": plans
    });
    props["owner"]["properties"]["email"]["format"] = json!("email");
    // Each plan's own keys: a flag or quota another plan declares is still refused.
    let mut by_plan = Vec::new();
    for (name, plan) in &repo.plans {
        // A plan's limits cap what its tenants may set, as the loader does.
        let limits = &plan.limits;
        let flags: Map<String, Value> = plan
            .features
            .iter()
            .map(|(k, v)| {
                let mut flag =
                    json!({"type": "boolean", "description": format!("default in {name}: {v}")});
                if limits.features.get(k) == Some(&false) {
                    flag["const"] = json!(false);
                    flag["description"] =
                        json!(format!("default in {name}: {v}; its limits keep it off"));
                }
                (k.clone(), flag)
            })
            .collect();
        let quotas: Map<String, Value> = plan
            .quotas
            .iter()
            .map(|(k, v)| {
                let mut quota = json!({"type": "integer", "minimum": 0, "description": format!("default in {name}: {v}")});
                if let Some(max) = limits.quotas.get(k) {
                    quota["maximum"] = json!(max);
                    quota["description"] = json!(format!("default in {name}: {v}; at most {max}"));
                }
                (k.clone(), quota)
            })
            .collect();
        let mut then = json!({ "properties": {
            "features": { "properties": flags, "additionalProperties": false },
            "quotas": { "properties": quotas, "additionalProperties": false }
        } });
        if let Some(max) = limits.isolation {
            let allowed: Vec<&str> = [Isolation::Shared, Isolation::Schema, Isolation::Database]
                .into_iter()
                .filter(|i| *i <= max)
                .map(Isolation::as_str)
                .collect();
            then["properties"]["isolation"] = json!({ "enum": allowed });
        }
        by_plan.push(json!({
            "if": { "properties": { "plan": { "const": name } }, "required": ["plan"] },
            "then": then
        }));
    }
    if !by_plan.is_empty() {
        schema["allOf"] = Value::Array(by_plan);
    }
    serde_json::to_string_pretty(&schema).expect("a schema serializes") + "\n"
}

/// The schema of `tenant-reconcile.hcl`, read as the data HCL gives (blocks as objects),
/// for tools that check HCL through JSON.
pub fn config() -> String {
    let mut schema = serde_json::to_value(schemars::schema_for!(crate::repo::config::Config))
        .expect("a schema serializes");
    crate::targets::slot::add_to_schema(&mut schema);
    schema["$id"] = json!("tenant-reconcile/config");
    schema["title"] = json!("tenant-reconcile.hcl, as HCL's data model reads it");
    serde_json::to_string_pretty(&schema).expect("a schema serializes") + "\n"
}

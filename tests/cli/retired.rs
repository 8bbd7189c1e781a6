//! What a replace leaves behind is still the tenant's: moved to another isolation mode, its
//! old slice is kept with its data, and the state records it as retired. `show` lists it,
//! the offboarding export includes it, and the purge destroys it, audited.

use serde_json::{json, Value};

use crate::pg::Pg;
use crate::support::text;

#[test]
fn an_erasure_after_an_isolation_change_exports_and_purges_the_old_slice_too() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.apply();
    let acme = pg.name("acme");
    // Written as the tenant's own role, in its schema.
    pg.query_as(
        &acme,
        &pg.db,
        &format!("INSERT INTO \"{acme}\".projects (name) VALUES ('written in the schema') RETURNING name"),
    )
    .unwrap();

    let file = repo.path().join("tenants/acme.yaml");
    let before = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{before}isolation: database\n")).unwrap();
    let out = repo.run(&["plan"]);
    let plan = text(&out.stdout);
    for expected in [
        format!("-/+ acme/database  # leaves schema {acme} behind, with its data, until acme is purged"),
        format!("schema {acme} is left behind with its data until acme is purged: the state keeps it as retired (`state show acme`)"),
    ] {
        assert!(
            plan.contains(&expected) || text(&out.stderr).contains(&expected),
            "missing {expected:?} in:\n{plan}{}",
            text(&out.stderr)
        );
    }
    let out = repo.run(&["apply", "--auto-approve", "--allow-replace"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    repo.assert_plan_empty();
    pg.query_as(
        &acme,
        &acme,
        "INSERT INTO projects (name) VALUES ('written in the database') RETURNING name",
    )
    .unwrap();

    let retired = format!("acme/database/retired/schema-{acme}");
    let shown = text(&repo.run(&["state", "show", "acme"]).stdout);
    assert!(
        shown.contains(&format!(
            "{retired}  # schema {acme}, left behind by a replace on "
        )),
        "{shown}"
    );
    let shown = text(&repo.run(&["show"]).stdout);
    assert!(
        shown.contains("Left behind by replaces") && shown.contains(&retired),
        "{shown}"
    );

    std::fs::write(
        &file,
        format!(
            "{before}isolation: database\nstatus: deprovisioned\noffboarding:\n  erase: true\n"
        ),
    )
    .unwrap();
    let plan = text(&repo.run(&["plan"]).stdout);
    // What it holds is counted, as the current slice's is.
    assert!(
        plan.contains(&format!(
            "- {retired}  # schema {acme}: 2 tables, 4 rows, left behind by a replace on "
        )),
        "{plan}"
    );
    let out = repo.run(&["apply", "--auto-approve"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    repo.assert_plan_empty();

    // Nothing of it is left: no schema, no database, no login.
    for sql in [
        format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{acme}'"),
        format!("SELECT count(*) FROM pg_database WHERE datname = '{acme}'"),
        format!("SELECT count(*) FROM pg_roles WHERE rolname = '{acme}'"),
    ] {
        assert_eq!(pg.count(&sql), 0, "{sql}");
    }
    assert!(pg.query_as(&acme, &pg.db, "SELECT 1").is_err());

    // The export holds both slices' rows, each file saying where it came from.
    let dir = repo.path().join(".tenant-reconcile/exports/acme");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let file_of = |retired: Option<&str>| {
        manifest["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == json!("projects") && t["retired"].as_str() == retired)
            .unwrap_or_else(|| panic!("no projects table from {retired:?}: {manifest:#}"))["file"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let old = file_of(Some(&format!("schema {acme}")));
    assert_eq!(old, format!("retired/schema-{acme}/tables/projects.csv"));
    let old = std::fs::read_to_string(dir.join(old)).unwrap();
    assert!(old.contains("written in the schema"), "{old}");
    let new = std::fs::read_to_string(dir.join(file_of(None))).unwrap();
    assert!(new.contains("written in the database"), "{new}");
    assert!(!new.contains("written in the schema"), "{new}");

    // The audit lists the retired slice beside the current one.
    let entries: Vec<Value> =
        serde_json::from_slice(&repo.run(&["audit", "acme", "--json"]).stdout).unwrap();
    let purged: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["address"].as_str().unwrap(),
                e["resource"].as_str().unwrap(),
            )
        })
        .collect();
    for expected in [
        (retired.as_str(), format!("schema {acme}")),
        ("acme/database", format!("database {acme}")),
    ] {
        assert!(
            purged.contains(&(expected.0, expected.1.as_str())),
            "missing {expected:?} in {purged:?}"
        );
    }
    assert!(
        entries.iter().all(|e| !e["purged_at"].is_null()),
        "{entries:#?}"
    );
}

/// A run stopped once the new slice stands and before the state recorded it leaves the
/// record a step behind (here made so by hand): the old slice was recorded as retired
/// before the replace began, and the erasure still removes both.
#[test]
fn an_erasure_after_a_replace_recorded_a_step_behind_removes_both_slices() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.apply();
    let acme = pg.name("acme");
    let file = repo.path().join("tenants/acme.yaml");
    let before = std::fs::read_to_string(&file).unwrap();
    let moved = format!("{before}isolation: database\n");
    std::fs::write(&file, &moved).unwrap();
    let out = repo.run(&["apply", "--auto-approve", "--allow-replace"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The record of the slice as it was before the replace, as a kill would leave it.
    pg.exec(
        "UPDATE tenant_reconcile.state_tenants SET body = jsonb_set(body::jsonb,
           '{resources,database}', body::jsonb #> '{retired,0,attrs}')::text
         WHERE slug = 'acme'",
    );

    std::fs::write(
        &file,
        format!("{moved}status: deprovisioned\noffboarding:\n  erase: true\n  export: false\n"),
    )
    .unwrap();
    let out = repo.run(&["apply", "--auto-approve"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    repo.assert_plan_empty();
    for sql in [
        format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{acme}'"),
        format!("SELECT count(*) FROM pg_database WHERE datname = '{acme}'"),
        format!("SELECT count(*) FROM pg_roles WHERE rolname = '{acme}'"),
    ] {
        assert_eq!(pg.count(&sql), 0, "{sql}");
    }
}

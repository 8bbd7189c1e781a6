//! Offboarding, its first phase and the hold: a tenant whose file says `status: deprovisioned` loses its
//! access at once, then its data is exported with a manifest; it stays in `deprovisioning`
//! with nothing deleted, and setting it back to active gives back exactly what was revoked.

use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::pg::Pg;
use crate::support::{text, Repo};

pub fn offboard(repo: &Repo, slug: &str) {
    let file = repo.path().join(format!("tenants/{slug}.yaml"));
    let before = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{before}status: deprovisioned\n")).unwrap();
}

/// Asks for the tenant's erasure (GDPR Article 17): deprovisioned without a hold, its export
/// made (`export`) or waived.
pub fn erase(repo: &Repo, slug: &str, export: bool) {
    let file = repo.path().join(format!("tenants/{slug}.yaml"));
    let before = std::fs::read_to_string(&file).unwrap();
    let waived = if export { "" } else { "  export: false\n" };
    std::fs::write(
        &file,
        format!("{before}status: deprovisioned\noffboarding:\n  erase: true\n{waived}"),
    )
    .unwrap();
}

pub fn call_back(repo: &Repo, slug: &str) {
    let file = repo.path().join(format!("tenants/{slug}.yaml"));
    let before = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, before.replace("status: deprovisioned\n", "")).unwrap();
}

/// The manifest of an export, every file it names checked against its sha256.
pub fn verified(dir: &Path) -> Value {
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    for t in manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .chain(manifest["objects"].as_array().unwrap())
    {
        let bytes = std::fs::read(dir.join(t["file"].as_str().unwrap())).unwrap();
        assert_eq!(json!(hex::encode(Sha256::digest(&bytes))), t["sha256"]);
    }
    manifest
}

#[test]
fn a_deprovisioned_tenant_is_revoked_then_exported_and_called_back_gets_its_access_again() {
    let repo = Repo::example();
    repo.apply();
    repo.write(".tenant-reconcile/buckets/acme/reports/q1.txt", "numbers\n");
    offboard(&repo, "acme");
    let out = repo.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2));
    let plan = text(&out.stdout);
    for expected in [
        "# acme will be offboarded: access revoked, data exported (active → deprovisioning)",
        "~ acme/role\n      ~ login = true → false",
        "~ acme/bucket\n      ~ access = \"open\" → \"denied\"",
        "+ acme/export\n      + location        = \".tenant-reconcile/exports/acme\"",
        "it is then held 30 days (its plan's retention_days)",
    ] {
        assert!(plan.contains(expected), "missing {expected:?} in:\n{plan}");
    }
    repo.apply();
    repo.assert_plan_empty();

    let dir = repo.path().join(".tenant-reconcile/exports/acme");
    let manifest = verified(&dir);
    let tables: Vec<&str> = manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    assert_eq!(tables, ["projects", "settings"]);
    assert_eq!(manifest["objects"][0]["key"], json!("reports/q1.txt"));
    let projects = std::fs::read_to_string(dir.join("tables/projects.csv")).unwrap();
    assert!(projects.starts_with("name,description\n"), "{projects}");
    assert_eq!(
        repo.query(
            "catalog.sqlite",
            "SELECT login FROM roles WHERE slug = 'acme'"
        ),
        [["0"]]
    );
    assert_eq!(
        repo.query(
            "control.sqlite",
            "SELECT lifecycle FROM tenants WHERE slug = 'acme'"
        ),
        [["deprovisioning"]]
    );
    // Nothing is deleted while it is held.
    assert_eq!(
        repo.count("data/acme.sqlite", "SELECT count(*) FROM projects"),
        1
    );

    call_back(&repo, "acme");
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("# acme will be resumed (deprovisioning → active)")
            && !plan.contains("+ acme"),
        "nothing is provisioned again:\n{plan}"
    );
    repo.apply();
    repo.assert_plan_empty();
    assert_eq!(
        repo.query(
            "catalog.sqlite",
            "SELECT login FROM roles WHERE slug = 'acme'"
        ),
        [["1"]]
    );
    let tenant_id = &repo.query(
        "control.sqlite",
        "SELECT tenant_id FROM tenants WHERE slug = 'acme'",
    )[0][0];
    assert_eq!(
        repo.query(
            "control.sqlite",
            &format!("SELECT type FROM outbox WHERE tenant_id = '{tenant_id}' ORDER BY id")
        ),
        [
            ["TenantProvisioned"],
            ["TenantOffboardingStarted"],
            ["TenantResumed"]
        ]
    );

    // Offboarded again: the export is made anew, the last one set aside and kept.
    repo.write(".tenant-reconcile/buckets/acme/reports/q2.txt", "more\n");
    offboard(&repo, "acme");
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("~ acme/export\n      + manifest_sha256 = (known after apply)"),
        "{plan}"
    );
    repo.apply();
    repo.assert_plan_empty();
    let manifest = verified(&dir);
    assert_eq!(
        manifest["objects"].as_array().unwrap().len(),
        2,
        "{manifest:#}"
    );
    let kept: Vec<_> = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("acme."))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
}

#[test]
fn an_export_folder_holding_other_files_is_refused_and_left_as_it_is() {
    let repo = Repo::example();
    repo.apply();
    repo.write(
        ".tenant-reconcile/exports/globex/tables/notes.csv",
        "mine\n",
    );
    offboard(&repo, "globex");
    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("holds files that are not this tenant's export"),
        "{err}"
    );
    let notes = repo
        .path()
        .join(".tenant-reconcile/exports/globex/tables/notes.csv");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "mine\n");
    // Its access went first; the export waits for the folder to be cleared.
    assert_eq!(
        repo.query(
            "catalog.sqlite",
            "SELECT login FROM roles WHERE slug = 'globex'"
        ),
        [["0"]]
    );
    std::fs::remove_dir_all(repo.path().join(".tenant-reconcile/exports/globex")).unwrap();
    repo.apply();
    repo.assert_plan_empty();
}

#[test]
fn offboarding_on_postgres_takes_the_login_away_and_exports_each_tenants_own_rows() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.apply();
    let (acme, initech) = (pg.name("acme"), pg.name("initech"));
    offboard(&repo, "acme");
    offboard(&repo, "initech");
    repo.apply();
    repo.assert_plan_empty();
    for role in [&acme, &initech] {
        let e = pg.query_as(role, &pg.db, "SELECT 1").unwrap_err();
        assert!(e.contains("not permitted to log in"), "{role}: {e}");
    }
    for slug in ["acme", "initech"] {
        let manifest = verified(
            &repo
                .path()
                .join(format!(".tenant-reconcile/exports/{slug}")),
        );
        assert_eq!(manifest["schema_version"], json!("0002_create_settings"));
        assert_eq!(
            manifest["tables"][0]["rows"],
            json!(1),
            "{slug}: {manifest:#}"
        );
    }
    // Held, not deleted: the data is all still there.
    assert_eq!(
        pg.count(&format!("SELECT count(*) FROM \"{acme}\".projects")),
        1
    );
    assert_eq!(
        pg.query(
            "SELECT payload->'detail'->>'export' AS export FROM tenant_reconcile.outbox
             WHERE type = 'TenantOffboardingStarted' ORDER BY payload->>'slug'"
        ),
        vec![
            json!({"export": ".tenant-reconcile/exports/acme"}),
            json!({"export": ".tenant-reconcile/exports/initech"}),
        ],
        "the event says where the data went"
    );
    call_back(&repo, "acme");
    repo.apply();
    repo.assert_plan_empty();
    assert_eq!(
        pg.query_as(
            &acme,
            &pg.db,
            &format!("SELECT count(*) AS n FROM \"{acme}\".projects")
        )
        .unwrap(),
        vec![json!({"n": 1})],
        "acme logs in again and finds its data"
    );
}

#[test]
fn an_offboarding_is_flagged_in_the_plan_as_a_downgrade_is() {
    let repo = Repo::example();
    repo.apply();
    offboard(&repo, "globex");
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("this plan downgrades tenants:\n  OFFBOARD: lifecycle \"active\" → \"deprovisioning\" (1 tenant)"),
        "{plan}"
    );
    let markdown = text(&repo.run(&["plan", "--format", "markdown"]).stdout);
    assert!(
        markdown.contains("> - OFFBOARD: lifecycle \"active\" → \"deprovisioning\" (1 tenant)"),
        "{markdown}"
    );
    // A tenant that was never provisioned has nothing to offboard.
    repo.write(
        "tenants/hooli.yaml",
        "slug: hooli\nname: Hooli\nplan: growth\nowner:\n  email: o@hooli.example\nregion: eu-west-1\nstatus: deprovisioned\n",
    );
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("hooli: status deprovisioned, and it was never fully provisioned: there is nothing to offboard"),
        "{plan}"
    );
    assert!(!plan.contains("+ hooli"), "{plan}");
}

#[test]
fn a_claim_cut_short_by_a_kill_is_made_again_not_refused() {
    let repo = Repo::example();
    repo.apply();
    // What a run killed while claiming leaves: the folder being made, its claim half written.
    repo.write(
        ".tenant-reconcile/exports/.acme.claiming/.tenant-reconcile-export",
        "",
    );
    offboard(&repo, "acme");
    repo.apply();
    repo.assert_plan_empty();
    let exports = repo.path().join(".tenant-reconcile/exports");
    assert!(!exports.join(".acme.claiming").exists());
    verified(&exports.join("acme"));
}

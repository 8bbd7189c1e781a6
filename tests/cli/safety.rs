use crate::support::{text, Repo};

#[test]
fn a_removed_tenant_file_leaves_the_tenant_alone() {
    let repo = Repo::example();
    repo.apply();
    repo.remove("tenants/initech.yaml");
    let out = repo.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "an orphan is not a change");
    let plan = text(&out.stdout);
    assert!(
        plan.contains("# initech is orphaned: its tenant file is gone; it is left as it is (active), never destroyed"),
        "{plan}"
    );
    repo.apply();
    assert!(repo.state_dir().join("data/initech.sqlite").exists());
    assert!(repo.state_dir().join("buckets/initech").is_dir());
    assert_eq!(
        repo.query(
            "control.sqlite",
            "SELECT lifecycle FROM tenants WHERE slug = 'initech'"
        ),
        vec![vec!["active"]]
    );
    assert!(text(&repo.run(&["state", "list"]).stdout).contains("initech/database"));
    repo.assert_plan_empty();
}

#[test]
fn an_empty_repo_is_refused_while_the_state_holds_tenants() {
    let repo = Repo::example();
    repo.apply();
    for t in ["acme", "globex", "initech", "umbrella-labs"] {
        repo.remove(&format!("tenants/{t}.yaml"));
    }
    let before = repo.fingerprint();
    for args in [&["plan"][..], &["apply", "--auto-approve"][..]] {
        let out = repo.run(args);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr)
            .contains("the repo has no tenant files but the state records 4 tenants"));
    }
    assert_eq!(before, repo.fingerprint());
    let out = repo.run(&["plan", "--allow-missing-tenants"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).matches("is orphaned").count(), 4);
}

#[test]
fn losing_a_large_share_of_tenants_is_refused() {
    let repo = Repo::example();
    repo.apply();
    repo.remove("tenants/acme.yaml");
    repo.remove("tenants/globex.yaml");
    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("2 of 4 recorded tenants (50%) have no file any more"));
}

#[test]
fn an_edited_migration_is_refused_naming_the_file() {
    let repo = Repo::example();
    repo.apply();
    repo.write(
        "migrations/0001_create_projects.sql",
        "CREATE TABLE projects (id INTEGER PRIMARY KEY);\n",
    );
    let out = repo.run(&["plan"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr)
        .contains("migration migrations/0001_create_projects.sql was applied with checksum"));
}

#[test]
fn a_new_migration_reaches_every_tenant() {
    let repo = Repo::example();
    repo.apply();
    repo.write(
        "migrations/0003_add_invoices.sql",
        "CREATE TABLE invoices (id INTEGER PRIMARY KEY, total INTEGER);\n",
    );
    let plan = text(&repo.run(&["plan"]).stdout);
    assert_eq!(
        plan.matches("~ schema_version = \"0002_create_settings\" → \"0003_add_invoices\"")
            .count(),
        4,
        "{plan}"
    );
    repo.apply();
    repo.assert_plan_empty();
    assert_eq!(
        repo.count("data/initech.sqlite", "SELECT COUNT(*) FROM invoices"),
        0
    );
}

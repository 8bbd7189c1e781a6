use std::time::Duration;

use crate::support::{text, Repo};

#[test]
fn apply_provisions_everything_once_and_then_the_plan_is_empty() {
    let repo = Repo::example();
    let out = repo.apply();
    assert!(text(&out.stdout).contains("Apply complete! 4 tenants reconciled: 36 added"));
    repo.assert_plan_empty();

    assert_eq!(
        repo.query(
            "control.sqlite",
            "SELECT slug, lifecycle, step FROM tenants ORDER BY slug"
        ),
        vec![
            vec!["acme", "active", "NULL"],
            vec!["globex", "active", "NULL"],
            vec!["initech", "active", "NULL"],
            vec!["umbrella-labs", "suspended", "NULL"],
        ]
    );
    // The owner membership binds the first user to the tenant's id.
    assert_eq!(
        repo.query(
            "control.sqlite",
            "SELECT m.email FROM memberships m JOIN tenants t USING (tenant_id) WHERE t.slug = 'acme' AND m.role = 'owner'"
        ),
        vec![vec!["ops@acme.example"]]
    );
    // Plan defaults merged with the tenant's overrides.
    assert_eq!(
        repo.query(
            "control.sqlite",
            "SELECT q.name, q.value FROM quotas q JOIN tenants t USING (tenant_id) WHERE t.slug = 'acme' ORDER BY q.name"
        ),
        vec![vec!["api_calls_per_month", "1000000"], vec!["seats", "80"], vec!["storage_gb", "200"]]
    );
    assert_eq!(
        repo.query(
            "control.sqlite",
            "SELECT type, COUNT(*) FROM outbox GROUP BY type ORDER BY type"
        ),
        vec![vec!["TenantProvisioned", "4"], vec!["TenantSuspended", "1"]]
    );
    // Seed data in the tenant's locale, and the migrations recorded.
    assert_eq!(
        repo.query("data/acme.sqlite", "SELECT name, description FROM projects"),
        vec![vec!["Beispielprojekt", "Willkommen, Acme Corporation"]]
    );
    assert_eq!(
        repo.count(
            "data/acme.sqlite",
            "SELECT COUNT(*) FROM _tenant_reconcile_migrations"
        ),
        2
    );
    assert!(repo.state_dir().join("buckets/globex").is_dir());
    let ns =
        std::fs::read_to_string(repo.state_dir().join("rendered/globex/namespace.yaml")).unwrap();
    assert!(ns.contains("name: tenant-globex") && ns.contains("persistentvolumeclaims: \"1000\""));
    // The suspended tenant's role cannot log in.
    assert_eq!(
        repo.query(
            "catalog.sqlite",
            "SELECT login FROM roles WHERE name = 'tenant_umbrella_labs'"
        ),
        vec![vec!["0"]]
    );
}

#[test]
fn no_secret_reaches_state_plan_or_output() {
    let repo = Repo::example();
    let out = repo.apply();
    let key = std::fs::read_to_string(repo.state_dir().join("master.key")).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(repo.state_dir().join("master.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let state = repo.state_text();
    let plan = text(&repo.run(&["plan", "--format", "json"]).stdout);
    for haystack in [&state, &plan, &text(&out.stdout), &text(&out.stderr)] {
        assert!(!haystack.contains(key.trim()), "the master key leaked");
    }
    assert!(state.contains("password_fingerprint"));
}

#[test]
fn suspend_and_resume_move_the_lifecycle_without_reprovisioning() {
    let repo = Repo::example();
    repo.apply();
    let acme = std::fs::read_to_string(repo.path().join("tenants/acme.yaml")).unwrap();
    repo.write("tenants/acme.yaml", &format!("{acme}status: suspended\n"));
    let out = repo.run(&["plan"]);
    let plan = text(&out.stdout);
    assert!(
        plan.contains("# acme will be suspended (active → suspended)"),
        "{plan}"
    );
    assert!(plan.contains("~ login"), "{plan}");
    assert!(plan.contains("~ access = \"open\" → \"denied\""), "{plan}");
    assert!(
        plan.contains("Plan: 0 to add, 3 to change, 0 to destroy."),
        "{plan}"
    );
    repo.apply();
    repo.assert_plan_empty();

    repo.write("tenants/acme.yaml", &acme);
    assert!(
        text(&repo.run(&["plan"]).stdout).contains("# acme will be resumed (suspended → active)")
    );
    repo.apply();
    repo.assert_plan_empty();
    assert_eq!(
        repo.query(
            "control.sqlite",
            "SELECT o.type FROM outbox o JOIN tenants t USING (tenant_id) WHERE t.slug = 'acme' ORDER BY o.id"
        ),
        vec![vec!["TenantProvisioned"], vec!["TenantSuspended"], vec!["TenantResumed"]]
    );
    // Seed data went in once; the tenant was not provisioned again.
    assert_eq!(
        repo.count("data/acme.sqlite", "SELECT COUNT(*) FROM projects"),
        1
    );
}

#[test]
fn drift_is_shown_and_repaired() {
    let repo = Repo::example();
    repo.apply();
    std::fs::remove_file(repo.state_dir().join("data/globex.sqlite")).unwrap();
    repo.query(
        "control.sqlite",
        "UPDATE feature_flags SET enabled = 0 WHERE flag = 'sso' AND tenant_id = (SELECT tenant_id FROM tenants WHERE slug = 'acme')",
    );
    std::fs::write(
        repo.state_dir().join("rendered/initech/namespace.yaml"),
        "edited by hand\n",
    )
    .unwrap();
    repo.query(
        "catalog.sqlite",
        "UPDATE roles SET login = 1 WHERE name = 'tenant_umbrella_labs'",
    );

    let out = repo.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2));
    let plan = text(&out.stdout);
    assert!(
        plan.contains("(4 tenants changed outside tenant-reconcile; apply puts them back.)"),
        "{plan}"
    );
    assert!(
        plan.contains("~ acme/features  # changed outside tenant-reconcile"),
        "{plan}"
    );
    assert!(plan.contains("~ sso = false → true"), "{plan}");
    assert!(
        plan.contains("+ globex/database  # changed outside tenant-reconcile"),
        "{plan}"
    );
    assert!(plan.contains("-edited by hand"), "{plan}");
    assert!(plan.contains("~ login = true → false"), "{plan}");

    // Without refresh, the recorded state is all there is: no drift to see.
    let out = repo.run(&["plan", "--no-refresh", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    repo.apply();
    repo.assert_plan_empty();
    assert_eq!(
        repo.count("data/globex.sqlite", "SELECT COUNT(*) FROM projects"),
        1
    );
}

#[test]
fn one_tenant_failing_does_not_stop_the_others() {
    let repo = Repo::example();
    // A directory where acme's database file should be: its database step must fail.
    std::fs::create_dir_all(repo.state_dir().join("data/acme.sqlite")).unwrap();
    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("1 of 4 tenants failed"), "{err}");
    assert!(err.contains("acme: acme/database:"), "{err}");
    assert_eq!(
        repo.query(
            "control.sqlite",
            "SELECT slug, lifecycle, step FROM tenants ORDER BY slug"
        ),
        vec![
            vec!["acme", "provisioning", "database"],
            vec!["globex", "active", "NULL"],
            vec!["initech", "active", "NULL"],
            vec!["umbrella-labs", "suspended", "NULL"],
        ]
    );
    let state = text(&repo.run(&["state", "show", "acme"]).stdout);
    assert!(
        state.contains("lifecycle:           provisioning")
            && state.contains("step:                database"),
        "{state}"
    );

    std::fs::remove_dir(repo.state_dir().join("data/acme.sqlite")).unwrap();
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("# acme will be provisioned (provisioning → active)"),
        "{plan}"
    );
    repo.apply();
    repo.assert_plan_empty();
    assert_eq!(
        repo.count(
            "control.sqlite",
            "SELECT COUNT(*) FROM outbox WHERE type = 'TenantProvisioned'"
        ),
        4
    );
}

#[test]
fn killed_mid_apply_a_rerun_converges_exactly_once() {
    let repo = Repo::example();
    let tenants = 40;
    for i in 0..tenants {
        repo.write(
            &format!("tenants/bulk-{i:03}.yaml"),
            &format!("slug: bulk-{i:03}\nname: Bulk {i}\nplan: growth\nowner:\n  email: o{i}@bulk.example\nregion: eu-west-1\n"),
        );
    }
    // Kill after a few tenants, then almost at once (mid-step), then let it finish.
    for (after_lines, delay_ms) in [(3, 0), (0, 30), (10, 5)] {
        repo.kill_apply(3, after_lines, Duration::from_millis(delay_ms));
    }
    repo.apply();
    repo.assert_plan_empty();
    let all = tenants + 4;
    assert_eq!(
        repo.count("control.sqlite", "SELECT COUNT(*) FROM tenants"),
        all
    );
    assert_eq!(
        repo.count("control.sqlite", "SELECT COUNT(*) FROM memberships"),
        all
    );
    assert_eq!(
        repo.count(
            "control.sqlite",
            "SELECT COUNT(*) FROM outbox WHERE type = 'TenantProvisioned'"
        ),
        all,
        "every tenant announced exactly once"
    );
    for i in [0, 17, 39] {
        let db = format!("data/bulk-{i:03}.sqlite");
        assert_eq!(
            repo.count(&db, "SELECT COUNT(*) FROM projects"),
            1,
            "{db} seeded exactly once"
        );
        assert_eq!(
            repo.count(&db, "SELECT COUNT(*) FROM _tenant_reconcile_migrations"),
            2
        );
    }
    let state = repo.state_json();
    assert_eq!(state["tenants"].as_object().unwrap().len(), all as usize);
}

#[test]
fn a_second_apply_is_blocked_by_the_lock_and_can_wait_for_it() {
    let repo = Repo::example();
    std::fs::create_dir_all(repo.state_dir()).unwrap();
    let lock_path = repo.state_dir().join("state.json.lock");
    let holder = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&lock_path)
        .unwrap();
    holder.lock().unwrap();
    std::fs::write(
        &lock_path,
        r#"{"id":"0f0e","operation":"apply","who":"ci@runner-7","host":"runner-7","pid":4242,"created":"2026-11-23T10:00:00Z","version":"0.1.0"}"#,
    )
    .unwrap();

    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("the state is locked by `apply` run by ci@runner-7 (pid 4242)"),
        "{err}"
    );
    assert!(
        !repo.state_dir().join("control.sqlite").exists(),
        "a blocked apply changed something"
    );

    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(800));
        holder.unlock().unwrap();
    });
    let out = repo.run(&["apply", "--auto-approve", "--lock-timeout", "20s"]);
    release.join().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    repo.assert_plan_empty();
}

#[test]
fn rotating_credentials_changes_only_that_tenants_password() {
    let repo = Repo::example();
    repo.apply();
    let fingerprints = |repo: &Repo| {
        repo.query(
            "catalog.sqlite",
            "SELECT slug, credentials_version, password_fingerprint FROM roles ORDER BY slug",
        )
    };
    let before = fingerprints(&repo);

    let out = repo.run(&[
        "plan",
        "--rotate-credentials",
        "acme",
        "--detailed-exitcode",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("~ credentials_version  = 1 → 2"), "{shown}");
    assert!(
        shown.contains("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{shown}"
    );

    let out = repo.run(&["apply", "--auto-approve", "--rotate-credentials", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    repo.assert_plan_empty();

    let after = fingerprints(&repo);
    assert_eq!(after[0][..2], ["acme", "2"]);
    assert_ne!(after[0][2], before[0][2], "acme has a new password");
    assert_eq!(
        after[1..],
        before[1..],
        "no other tenant's password changed"
    );
}

#[test]
fn rotating_credentials_of_an_unknown_tenant_is_refused() {
    let repo = Repo::example();
    let out = repo.run(&["plan", "--rotate-credentials", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--rotate-credentials nosuch: there is no tenants/nosuch.yaml")
    );
}

#[test]
fn a_bucket_whose_settings_are_missing_is_updated_in_place_not_replaced() {
    // As a kill between making the folder and writing its settings leaves it.
    let repo = Repo::example();
    repo.apply();
    let settings = repo.state_dir().join("buckets/acme/.bucket.json");
    std::fs::remove_file(&settings).unwrap();
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(plan.contains("~ acme/bucket"), "{plan}");
    assert!(plan.contains("+ encryption    = \"AES256\""), "{plan}");
    assert!(!plan.contains("-/+"), "{plan}");
    repo.apply();
    assert!(settings.exists());
    repo.assert_plan_empty();
}

#[test]
fn seed_rows_are_rendered_for_the_tenants_being_seeded() {
    let repo = Repo::example();
    repo.apply();
    let seed = std::fs::read_to_string(repo.path().join("templates/seed.yaml.tera")).unwrap();
    // A seed template that fails for every tenant.
    repo.write(
        "templates/seed.yaml.tera",
        &format!("{seed}\n  - key: region\n    value: {{{{ tenant.no_such_field }}}}\n"),
    );

    // Every tenant was seeded long ago: a plan has nothing to seed, so nothing fails.
    repo.assert_plan_empty();
    // validate renders it for every tenant, and says so.
    let out = repo.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let problems = text(&out.stderr);
    assert!(problems.contains("templates/seed.yaml.tera"), "{problems}");
    assert!(
        problems.contains("tenant acme (tenants/acme.yaml)"),
        "{problems}"
    );

    // A new tenant is seeded, so its plan renders the template and fails, naming it.
    repo.write(
        "tenants/hooli.yaml",
        "slug: hooli\nname: Hooli\nplan: starter\nowner:\n  email: gavin@hooli.example\nregion: us-east-1\n",
    );
    let before = repo.fingerprint();
    for command in [&["plan"][..], &["apply", "--auto-approve"]] {
        let out = repo.run(command);
        assert_eq!(out.status.code(), Some(1), "{command:?}");
        let problems = text(&out.stderr);
        assert!(problems.contains("templates/seed.yaml.tera"), "{problems}");
        assert!(
            problems.contains("tenant hooli (tenants/hooli.yaml)"),
            "{problems}"
        );
        assert!(
            !problems.contains("acme"),
            "only hooli is seeded: {problems}"
        );
    }
    assert_eq!(repo.fingerprint(), before, "nothing changed");

    repo.write("templates/seed.yaml.tera", &seed);
    let out = repo.run(&["plan"]);
    assert!(
        text(&out.stdout).contains("+ hooli/seed"),
        "{}",
        text(&out.stdout)
    );
    repo.apply();
    repo.assert_plan_empty();
    assert_eq!(
        repo.count("data/hooli.sqlite", "SELECT COUNT(*) FROM projects"),
        1,
        "hooli got its seed rows"
    );
}

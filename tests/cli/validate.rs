use crate::support::{redact, text, Repo};

#[test]
fn the_example_repo_is_valid() {
    let repo = Repo::example();
    let out = repo.run(&["validate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "Success! 4 tenants, 3 plans, 2 templates and 2 migrations are valid.\n"
    );
}

#[test]
fn validate_reports_every_problem_with_file_line_and_field() {
    let repo = Repo::example();
    // An unknown field, a slug that is not its file name, an unknown plan, an override of a
    // flag the plan does not declare, a YAML syntax error and a bad value type: all at once.
    repo.write(
        "tenants/acme.yaml",
        "slug: acme\nname: Acme\nplan: growth\nowner:\n  email: ops@acme.example\nregion: eu-west-1\ncolour: red\n",
    );
    repo.write(
        "tenants/globex.yaml",
        "slug: globex-eu\nname: Globex\nplan: platinum\nowner:\n  email: it@globex.example\nregion: us-east-1\n",
    );
    repo.write(
        "tenants/initech.yaml",
        "slug: initech\nname: Initech\nplan: starter\nowner:\n  email: bill@initech.example\nregion: us-west-2\nfeatures:\n  sso: true\n  dark_mode: true\n",
    );
    repo.write("tenants/hooli.yaml", "slug: hooli\nname: [unclosed\n");
    repo.write(
        "tenants/pied-piper.yaml",
        "slug: pied-piper\nname: Pied Piper\nplan: starter\nowner:\n  email: richard@pp.example\nregion: us-west-1\nquotas:\n  seats: lots\n",
    );
    let out = repo.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    insta::assert_snapshot!(redact(&repo, &text(&out.stderr)));
}

#[test]
fn a_broken_plan_file_points_at_its_line() {
    let repo = Repo::example();
    repo.write("plans/growth.hcl", "isolation = \"schema\"\nretention_days = 30\nquotas = {\n  seats = 5\n}\nflavour = \"mint\"\n");
    let out = repo.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("plans/growth.hcl:6:1: field `flavour`"),
        "{err}"
    );
    // acme overrides the quota `seats` only, which is still declared; but it is on growth,
    // and growth no longer declares sso, which no tenant overrides. Nothing else is wrong.
    assert!(err.contains("1 problem found"), "{err}");
}

#[test]
fn every_example_config_validates_with_the_example_repo() {
    let dirs = std::fs::read_dir(crate::support::project_root().join("examples")).unwrap();
    let mut checked = Vec::new();
    for dir in dirs {
        let dir = dir.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        if !dir.join("tenant-reconcile.hcl").is_file() {
            continue;
        }
        let repo = Repo::example();
        repo.add_committed(
            &format!("examples/{name}/tenant-reconcile.hcl"),
            "tenant-reconcile.hcl",
        );
        let out = repo.run(&["validate"]);
        assert!(
            out.status.success(),
            "examples/{name}/tenant-reconcile.hcl does not validate:\n{}",
            text(&out.stderr)
        );
        checked.push(name);
    }
    checked.sort();
    assert!(
        ["full", "postgres", "rabbitmq", "route53", "s3"]
            .iter()
            .all(|e| checked.contains(&e.to_string())),
        "{checked:?}"
    );
}

#[test]
fn validate_and_new_tenant_refuse_a_tombstones_slug_as_plan_does() {
    let repo = Repo::example();
    repo.apply();
    crate::offboarding::erase(&repo, "globex", false);
    repo.apply();
    repo.remove("tenants/globex.yaml");
    assert!(repo.run(&["validate"]).status.success());
    // Its tombstone keeps no health of its own.
    let show = text(&repo.run(&["show"]).stdout);
    let row = show.lines().find(|l| l.starts_with("globex ")).unwrap();
    assert!(
        row.contains("deprovisioned") && !row.contains("healthy"),
        "{show}"
    );
    let unchanged = repo.fingerprint();

    // new-tenant refuses the slug and writes nothing.
    let out = repo.run(&[
        "new-tenant",
        "globex",
        "--plan",
        "growth",
        "--owner",
        "new@globex.example",
        "--region",
        "eu-west-1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("the slug globex belonged to a tenant that was deprovisioned on 20")
            && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!repo.path().join("tenants/globex.yaml").exists());

    // A file written by hand: validate refuses it with plan's words, at its slug's line.
    repo.write(
        "tenants/globex.yaml",
        "name: Globex Again\nslug: globex\nplan: growth\nowner:\n  email: new@globex.example\nregion: eu-west-1\n",
    );
    for args in [&["validate"][..], &["plan"]] {
        let out = repo.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("tenants/globex.yaml:2:1: ")
                && err
                    .contains("the slug globex belonged to a tenant that was deprovisioned on 20")
                && err.contains("a slug is never reused"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(repo.fingerprint(), unchanged, "nothing changed");
}

#[test]
fn validate_reports_every_refused_field_of_every_file_in_one_run() {
    let repo = Repo::example();
    let growth = std::fs::read_to_string(repo.path().join("plans/growth.hcl")).unwrap();
    repo.write(
        "plans/growth.hcl",
        &growth
            .replace("isolation      = \"schema\"", "isolation      = \"own\"")
            .replace("retention_days = 30", "retention_days = -1")
            .replace("seats               = 50", "seats               = -3"),
    );
    repo.write(
        "tenant-reconcile.hcl",
        "events {\n  keep_days = -1\n}\nhook \"billing\" {\n  on      = [\"provisioned\"]\n  command = [\"./x\"]\n  timeout = 30\n}\n",
    );
    let line = |start: &str| growth.lines().position(|l| l.starts_with(start)).unwrap() + 1;
    let out = repo.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for expected in [
        &format!(
            "plans/growth.hcl:{}:1: field `isolation`",
            line("isolation")
        ),
        &format!(
            "plans/growth.hcl:{}:1: field `retention_days`",
            line("retention_days")
        ),
        &format!(
            "plans/growth.hcl:{}:3: field `quotas.seats`",
            line("  seats")
        ),
        "tenant-reconcile.hcl:2:3: field `events.keep_days`",
        "tenant-reconcile.hcl:7:3: field `hook.billing.timeout`",
        "5 problems found",
    ]
    .map(String::from)
    {
        assert!(err.contains(expected.as_str()), "{expected}:\n{err}");
    }
}

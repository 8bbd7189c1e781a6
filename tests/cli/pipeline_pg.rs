//! Smoke tests on Postgres: each tenant is tested as its own login role, the way the
//! product connects, and checked from outside with psql-like queries of the test's own.

use serde_json::Value;

use crate::pg::Pg;
use crate::support::text;

fn checks_of(report: &Value, slug: &str) -> Vec<(String, bool, String)> {
    report
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["slug"] == slug)
        .unwrap_or_else(|| panic!("{slug} not checked: {report}"))["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["ok"].as_bool().unwrap(),
                c["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn check(report: &Value, slug: &str, name: &str) -> (bool, String) {
    checks_of(report, slug)
        .into_iter()
        .find(|(n, ..)| n == name)
        .map(|(_, ok, m)| (ok, m))
        .unwrap_or_else(|| panic!("{slug} has no {name} check: {report}"))
}

#[test]
fn every_isolation_mode_is_smoke_tested_as_the_tenants_own_role() {
    let pg = Pg::new();
    let repo = pg.repo();
    // A second tenant in the shared tables, whose rows initech must not see.
    let initech = std::fs::read_to_string(repo.path().join("tenants/initech.yaml")).unwrap();
    repo.write("tenants/hooli.yaml", &initech.replace("initech", "hooli"));
    repo.apply();
    repo.assert_plan_empty();
    let out = repo.run(&["check", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for slug in ["acme", "globex", "initech"] {
        let role = pg.name(slug);
        let (ok, login) = check(&report, slug, "login");
        assert!(ok, "{slug}: {login}");
        assert_eq!(
            login,
            format!("{role} connected with its derived password (the server's verifier matches)")
        );
        let (ok, data) = check(&report, slug, "data");
        assert!(
            ok && data.starts_with(&format!("{role} reads ")),
            "{slug}: {data}"
        );
        let (ok, write) = check(&report, slug, "write");
        assert!(ok && write.contains("rolled it back"), "{slug}: {write}");
        let (ok, isolation) = check(&report, slug, "isolation");
        assert!(
            ok && isolation.contains("is refused the control plane"),
            "{slug}: {isolation}"
        );
        for name in ["registry", "owner"] {
            assert!(check(&report, slug, name).0, "{slug} {name}");
        }
    }
    // Without the master key, or with another, nothing is checked: the login checks would
    // test passwords the tenants do not have.
    let mut keyless = pg.repo();
    keyless
        .env
        .retain(|(k, _)| k != "TENANT_RECONCILE_MASTER_KEY");
    let out = keyless.run(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("no master key"),
        "{}",
        text(&out.stderr)
    );
    keyless.env.push((
        "TENANT_RECONCILE_MASTER_KEY".into(),
        "another-key-0123456789abcdef0123456789abcdef".into(),
    ));
    let out = keyless.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("master key"),
        "{}",
        text(&out.stderr)
    );
    // Schema tenants are refused each other's schema, and shared ones each other's rows,
    // checked in the role's own session.
    for slug in ["acme", "initech"] {
        let (_, isolation) = check(&report, slug, "isolation");
        assert!(
            isolation.ends_with("and another tenant's slice"),
            "{slug}: {isolation}"
        );
    }
    // The write was rolled back: the seeded rows are as they were.
    assert_eq!(
        pg.count(&format!(
            "SELECT count(*) FROM \"{}\".projects",
            pg.name("acme")
        )),
        1
    );
    // Row-level security switched off by hand: initech sees hooli's rows, and its check says
    // so; apply puts the policy back.
    pg.exec("ALTER TABLE tenants_shared.projects DISABLE ROW LEVEL SECURITY");
    let out = repo.run(&["check", "initech", "--format", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let report_after: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (ok, isolation) = check(&report_after, "initech", "isolation");
    assert!(!ok);
    assert!(
        isolation.contains("reaches other tenants' data: 1 row of others in projects"),
        "{isolation}"
    );
    repo.apply();
    repo.assert_plan_empty();
    assert_eq!(repo.run(&["check", "initech"]).status.code(), Some(0));
    // The checks left no session of a tenant's role behind.
    assert_eq!(
        pg.count(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename LIKE '{}%'",
            pg.prefix
        )),
        0
    );
}

#[test]
fn a_refused_login_keeps_a_new_tenant_at_its_smoke_test_until_it_is_let_in() {
    let pg = Pg::new();
    let repo = pg.repo();
    let growth = repo.path().join("plans/growth.hcl");
    let mut plan = std::fs::read_to_string(&growth).unwrap();
    plan.push_str(
        "\ncheck \"ready\" {\n  sql = \"select exists (select 1 from projects where name = 'ready')\"\n}\n",
    );
    std::fs::write(&growth, plan).unwrap();
    let registry = || {
        pg.query("SELECT lifecycle, step FROM tenant_reconcile.tenants WHERE slug = 'acme'")[0]
            .clone()
    };

    // The declared check, run as acme's role in its schema, finds no such row.
    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("acme/smoke_test: smoke tests failed: ready: returned false"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        registry(),
        serde_json::json!({"lifecycle": "provisioning", "step": "smoke_test"})
    );
    // The others went on: one tenant's gate holds only that tenant.
    assert_eq!(
        pg.count("SELECT count(*) FROM tenant_reconcile.tenants WHERE lifecycle = 'active'"),
        2
    );

    // The row appears, but the role may no longer connect.
    let role = pg.name("acme");
    pg.exec(&format!(
        "INSERT INTO \"{role}\".projects (name) VALUES ('ready'); ALTER ROLE \"{role}\" CONNECTION LIMIT 0"
    ));
    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("login: {role} cannot connect")),
        "{err}"
    );
    assert!(
        err.contains("data: not run: the role cannot log in"),
        "{err}"
    );
    assert_eq!(registry()["lifecycle"], "provisioning");
    assert_eq!(
        pg.count(
            "SELECT count(*) FROM tenant_reconcile.outbox WHERE type = 'TenantProvisioningFailed'"
        ),
        2
    );

    pg.exec(&format!("ALTER ROLE \"{role}\" CONNECTION LIMIT -1"));
    repo.apply();
    assert_eq!(
        registry(),
        serde_json::json!({"lifecycle": "active", "step": null})
    );
    repo.assert_plan_empty();
    pg.exec(&format!(
        "DELETE FROM \"{role}\".projects WHERE name = 'ready'"
    ));
}

#[test]
fn check_notices_a_grant_to_another_tenants_slice_and_a_revoked_one() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.apply();
    let (acme, umbrella) = (pg.name("acme"), pg.name("umbrella-labs"));
    pg.exec(&format!(
        "GRANT USAGE ON SCHEMA \"{umbrella}\" TO \"{acme}\""
    ));
    let out = repo.run(&["check", "acme", "--format", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (ok, isolation) = check(&report, "acme", "isolation");
    assert!(!ok);
    assert_eq!(
        isolation,
        format!("{acme} reaches other tenants' data: {umbrella}")
    );
    pg.exec(&format!(
        "REVOKE USAGE ON SCHEMA \"{umbrella}\" FROM \"{acme}\""
    ));
    assert_eq!(repo.run(&["check", "acme"]).status.code(), Some(0));

    // Its own grant taken away: it cannot read its data. The plan shows the drift, apply
    // repairs it, and the tenant is healthy again.
    pg.exec(&format!(
        "REVOKE USAGE ON SCHEMA \"{acme}\" FROM \"{acme}\""
    ));
    let out = repo.run(&["check", "acme"]);
    assert_eq!(out.status.code(), Some(2));
    let table = text(&out.stdout);
    assert!(table.contains("data       FAILED"), "{table}");
    assert!(table.contains("permission denied for schema"), "{table}");
    assert!(text(&repo.run(&["show"]).stdout).contains("UNHEALTHY: data, write"));
    repo.apply();
    repo.assert_plan_empty();
    assert_eq!(repo.run(&["check", "acme"]).status.code(), Some(0));

    // A database tenant's CONNECT taken away: its own login fails, which check reports and
    // apply repairs.
    let globex = pg.name("globex");
    pg.exec(&format!(
        "REVOKE CONNECT ON DATABASE \"{globex}\" FROM \"{globex}\""
    ));
    let out = repo.run(&["check", "globex", "--format", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (ok, login) = check(&report, "globex", "login");
    assert!(!ok);
    assert!(
        login.starts_with(&format!("{globex} cannot connect")),
        "{login}"
    );
    assert!(login.contains("permission denied for database"), "{login}");
    repo.apply();
    repo.assert_plan_empty();
    assert_eq!(repo.run(&["check", "globex"]).status.code(), Some(0));
}

#[test]
fn a_hooks_outputs_land_on_the_postgres_registry_row() {
    let pg = Pg::new();
    let repo = pg.repo();
    let billing = crate::support::Repo::example_with_hooks();
    let script = std::fs::read_to_string(billing.path().join("hooks/billing.sh")).unwrap();
    repo.write("hooks/billing.sh", &script);
    {
        use std::os::unix::fs::PermissionsExt;
        let path = repo.path().join("hooks/billing.sh");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let config = std::fs::read_to_string(repo.path().join("tenant-reconcile.hcl")).unwrap();
    repo.write(
        "tenant-reconcile.hcl",
        &format!("{config}\nhook \"billing\" {{\n  on = [\"provisioned\"]\n  command = [\"./hooks/billing.sh\"]\n}}\n"),
    );
    repo.apply();
    repo.assert_plan_empty();
    let rows = pg.query(
        "SELECT slug, tenant_id, outputs->>'billing_customer_id' AS customer FROM tenant_reconcile.tenants ORDER BY slug",
    );
    assert_eq!(rows.len(), 4);
    for row in rows {
        let id = row["tenant_id"].as_str().unwrap().replace('-', "");
        assert_eq!(row["customer"], format!("cus_{}", &id[..12]), "{row}");
    }
}

/// A tenant that is not active yet cannot log in: its role exists without LOGIN while it
/// provisions (its smoke tests open the login for their own connection only), and a gating
/// hook that fails leaves it so. The move to active opens the login.
#[test]
fn a_tenant_held_at_a_gating_hook_cannot_log_in_until_it_is_active() {
    use std::os::unix::fs::PermissionsExt;
    let pg = Pg::new();
    let repo = pg.repo();
    for slug in ["globex", "initech", "umbrella-labs"] {
        repo.remove(&format!("tenants/{slug}.yaml"));
    }
    repo.write(
        "hooks/crm.sh",
        "#!/bin/sh\ncat > /dev/null\nif [ -f ./crm-down ]; then echo 'crm refused' >&2; exit 3; fi\n",
    );
    std::fs::set_permissions(
        repo.path().join("hooks/crm.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    repo.write("crm-down", "");
    repo.write(
        "tenant-reconcile.hcl",
        &(pg.config("")
            + "hook \"crm\" {\n  on = [\"provisioned\"]\n  command = [\"./hooks/crm.sh\"]\n  gating = true\n}\n"),
    );
    let role = pg.name("acme");
    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("crm refused"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        pg.query("SELECT lifecycle FROM tenant_reconcile.tenants WHERE slug = 'acme'")[0]
            ["lifecycle"],
        "provisioning"
    );
    // From outside, as the tenant's own role: refused, though its smoke tests passed.
    let refused = pg
        .query_as(&role, &pg.db, "SELECT 1 AS one")
        .expect_err("a tenant held at its gating hook must not log in");
    assert!(refused.contains("not permitted to log in"), "{refused}");
    let creds = repo.run(&["credentials", "acme"]);
    let said = format!("{}{}", text(&creds.stdout), text(&creds.stderr));
    assert!(
        said.contains("acme is not active yet: its login is held until"),
        "{said}"
    );
    // The plan shows the login to open, and nothing else of the role.
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(plan.contains("~ login = false → true"), "{plan}");

    repo.remove("crm-down");
    repo.apply();
    assert_eq!(
        pg.query_as(&role, &pg.db, "SELECT count(*) AS n FROM projects")
            .unwrap()[0]["n"],
        1
    );
    repo.assert_plan_empty();
}

#[test]
fn sqlx_own_lines_stay_out_of_the_output() {
    let pg = Pg::new();
    let repo = pg.repo();
    for slug in ["globex", "initech", "umbrella-labs"] {
        repo.remove(&format!("tenants/{slug}.yaml"));
    }
    // Unlocking a lock not held makes the server send a WARNING notice, which sqlx logs as
    // a warning of its own, as it does a connection that fails its test on release.
    let path = repo.path().join("plans/growth.hcl");
    let mut plan = std::fs::read_to_string(&path).unwrap();
    plan.push_str("\ncheck \"locks\" {\n  sql = \"select not pg_advisory_unlock(4242)\"\n}\n");
    std::fs::write(&path, plan).unwrap();
    let out = repo.apply();
    let err = text(&out.stderr);
    assert!(!err.contains("own a lock"), "{err}");
    let out = repo.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.is_empty(), "{err}");
    repo.assert_plan_empty();
}

/// The relations a tenant can read are found from the schemas it may use: a table anywhere
/// it can read is named, a table in `public` granted to everyone as much as one in another
/// tenant's slice.
#[test]
fn check_names_a_table_outside_the_slice_that_the_tenant_can_read() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.apply();
    let leak = format!("{}_leak", pg.prefix);
    pg.exec(&format!(
        "CREATE TABLE public.\"{leak}\" (secret text); GRANT SELECT ON public.\"{leak}\" TO PUBLIC"
    ));
    let out = repo.run(&["check", "acme", "--format", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (ok, isolation) = check(&report, "acme", "isolation");
    pg.exec(&format!("DROP TABLE public.\"{leak}\""));
    assert_eq!(out.status.code(), Some(2), "{report}");
    assert!(!ok);
    assert!(
        isolation.contains(&format!("public.{leak} (outside its slice)")),
        "{isolation}"
    );
    for slug in ["acme", "initech"] {
        assert_eq!(repo.run(&["check", slug]).status.code(), Some(0), "{slug}");
    }
    repo.assert_plan_empty();
}

/// The schemas a tenant of the admin database is looked at in are those its role, or a
/// group it is a member of, holds rights on, and those anyone may use, each found by key
/// rather than by checking every tenant's schema: a schema granted to its role, or to a
/// group of it (the shared tenants'), is looked in; and its own schema open to anyone fails
/// its check at once, shows in the plan, and is closed again by apply.
#[test]
fn check_finds_what_the_role_or_its_group_was_granted_and_its_schema_open_to_anyone() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.apply();
    let acme = pg.name("acme");
    let (mine, group, theirs) = (
        format!("{}granted", pg.prefix),
        format!("{}_shared", pg.prefix),
        format!("{}through_group", pg.prefix),
    );
    let isolation = |slug: &str, what: &str| {
        let out = repo.run(&["check", slug, "--format", "json"]);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let (ok, isolation) = check(&report, slug, "isolation");
        assert_eq!(out.status.code(), Some(2), "{what}: {report}");
        assert!(!ok, "{what}");
        isolation
    };

    // A schema granted to acme's role; and one granted to the shared group, of which
    // initech (in the shared tables) is a member: what the group is granted, each of its
    // tenants reaches.
    for (schema, grantee, slug) in [(&mine, &acme, "acme"), (&theirs, &group, "initech")] {
        pg.exec(&format!(
            "CREATE SCHEMA \"{schema}\"; CREATE TABLE \"{schema}\".t (x int);
             GRANT USAGE ON SCHEMA \"{schema}\" TO \"{grantee}\"; GRANT SELECT ON \"{schema}\".t TO \"{grantee}\""
        ));
        let found = isolation(slug, &format!("a schema granted to {grantee}"));
        assert!(
            found.contains(&format!("{schema}.t (outside its slice)")),
            "{found}"
        );
        pg.exec(&format!("DROP SCHEMA \"{schema}\" CASCADE"));
    }

    pg.exec(&format!("GRANT USAGE ON SCHEMA \"{acme}\" TO PUBLIC"));
    let found = isolation("acme", "its own schema open to anyone");
    assert!(
        found.contains(&format!("anyone (PUBLIC) may use its schema {acme}")),
        "{found}"
    );
    // The plan sees it too, and apply takes the right back with the slice's grants.
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains(&format!(
            "access = \"unsafe: anyone (PUBLIC) may use the schema {acme}\" → \"granted\""
        )),
        "{plan}"
    );
    repo.apply();
    assert_eq!(
        pg.count(&format!(
            "SELECT count(*) FROM pg_namespace WHERE nspname = '{acme}' AND has_schema_privilege('public', oid, 'USAGE')"
        )),
        0
    );

    for slug in ["acme", "initech"] {
        assert_eq!(repo.run(&["check", slug]).status.code(), Some(0), "{slug}");
    }
    repo.assert_plan_empty();
}

//! A slug the state let go of (`state rm`) is not a key to the data of the tenant that had
//! it: a new file for it is refused, and only an explicit `--import` adopts that tenant,
//! whole, with passwords made anew; its erasure then removes everything it has.

use serde_json::json;

use crate::pg::Pg;
use crate::support::text;
use crate::trust::{password_of, verifier_accepts};

#[test]
fn a_released_slug_given_to_a_new_file_is_refused_and_adopted_only_on_purpose() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.apply();
    let acme = pg.name("acme");
    let old_password = password_of(&repo, "acme");
    pg.query_as(
        &acme,
        &pg.db,
        &format!(
            "INSERT INTO \"{acme}\".projects (name) VALUES ('the old customer') RETURNING name"
        ),
    )
    .unwrap();
    repo.write(".tenant-reconcile/buckets/acme/reports/q1.txt", "numbers\n");
    let tenant_id = pg.query("SELECT tenant_id FROM tenant_reconcile.tenants WHERE slug = 'acme'")
        [0]["tenant_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Its role's mark names it by its id, as well as the state.
    let mark = pg.query(&format!(
        "SELECT shobj_description(oid, 'pg_authid') AS mark FROM pg_roles WHERE rolname = '{acme}'"
    ))[0]["mark"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(mark.ends_with(&format!(" tenant={tenant_id}")), "{mark}");

    repo.remove("tenants/acme.yaml");
    let out = repo.run(&["state", "rm", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let newcomer = "slug: acme\nname: Mallory Ltd\nplan: growth\nowner:\n  email: mallory@attacker.example\nregion: eu-west-1\n";
    repo.write("tenants/acme.yaml", newcomer);

    for args in [&["plan"][..], &["apply", "--auto-approve"]] {
        let out = repo.run(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            text(&out.stdout)
        );
        let err = text(&out.stderr);
        for expected in [
            "tenants/acme.yaml",
            "the slug acme belonged to a tenant",
            "released from this state on",
            "a new file does not take them over",
            "plan --import acme",
        ] {
            assert!(
                err.contains(expected),
                "{args:?}: missing {expected:?} in:\n{err}"
            );
        }
    }
    assert_eq!(
        pg.query(&format!(
            "SELECT email FROM tenant_reconcile.memberships WHERE tenant_id = '{tenant_id}'"
        )),
        vec![json!({"email": "ops@acme.example"})],
        "nothing changed"
    );

    // Adopted on purpose: every resource it has is shown as an import.
    let out = repo.run(&["plan", "--import", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert!(
        plan.contains(
            "# acme will be adopted: all it has is imported as it is, with new passwords"
        ),
        "{plan}"
    );
    for kind in [
        "registry", "owner", "features", "role", "database", "bucket",
    ] {
        let line = format!("<= acme/{kind} will be imported");
        assert!(plan.contains(&line), "missing {line:?} in:\n{plan}");
    }
    let out = repo.run(&["apply", "--auto-approve", "--import", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    repo.assert_plan_empty();

    // Its passwords are new: the one handed out before no longer logs in.
    let new_password = password_of(&repo, "acme");
    assert_ne!(new_password, old_password);
    let stored = pg.query(&format!(
        "SELECT rolpassword FROM pg_authid WHERE rolname = '{acme}'"
    ))[0]["rolpassword"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(verifier_accepts(&stored, &new_password));
    assert!(!verifier_accepts(&stored, &old_password));

    // Its erasure removes all it has, recorded by the import or not.
    repo.write(
        "tenants/acme.yaml",
        &format!("{newcomer}status: deprovisioned\noffboarding:\n  erase: true\n  export: false\n"),
    );
    let out = repo.run(&["apply", "--auto-approve"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    repo.assert_plan_empty();
    for sql in [
        format!("SELECT count(*) FROM pg_roles WHERE rolname = '{acme}'"),
        format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{acme}'"),
        format!(
            "SELECT count(*) FROM tenant_reconcile.feature_flags WHERE tenant_id = '{tenant_id}'"
        ),
        format!("SELECT count(*) FROM tenant_reconcile.quotas WHERE tenant_id = '{tenant_id}'"),
        format!(
            "SELECT count(*) FROM tenant_reconcile.memberships WHERE tenant_id = '{tenant_id}'"
        ),
    ] {
        assert_eq!(pg.count(&sql), 0, "{sql}");
    }
    assert!(
        !repo.path().join(".tenant-reconcile/buckets/acme").exists(),
        "the bucket folder is gone"
    );
}

/// A state that recorded only what its plans changed (as an import did before it adopted
/// every resource) still exports and purges all the tenant has: refresh finds the rest by
/// the marks naming the tenant and by its rows in the control plane.
#[test]
fn an_erasure_reaches_what_the_state_never_recorded_of_the_tenant() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.apply();
    let acme = pg.name("acme");
    pg.query_as(
        &acme,
        &pg.db,
        &format!(
            "INSERT INTO \"{acme}\".projects (name) VALUES ('unrecorded slice') RETURNING name"
        ),
    )
    .unwrap();
    let tenant_id = pg.query("SELECT tenant_id FROM tenant_reconcile.tenants WHERE slug = 'acme'")
        [0]["tenant_id"]
        .as_str()
        .unwrap()
        .to_string();
    pg.exec(
        "UPDATE tenant_reconcile.state_tenants SET body = (body::jsonb
           #- '{resources,role}' #- '{resources,database}' #- '{resources,features}')::text
         WHERE slug = 'acme'",
    );
    // A plan would record them again, as it does what a killed run made; the erasure
    // below comes first and must reach them all the same.
    let plan = text(&repo.run(&["plan"]).stdout);
    for key in ["features", "role", "database"] {
        let expected = format!(
            "~ acme/{key}  # made by a run cut short before the state recorded it: recorded now"
        );
        assert!(plan.contains(&expected), "missing {expected:?} in:\n{plan}");
    }

    crate::offboarding::erase(&repo, "acme", true);
    let plan = text(&repo.run(&["plan"]).stdout);
    for expected in [
        format!("- acme/database  # schema {acme}"),
        format!("- acme/role  # role {acme}"),
        "- acme/features  # feature flags".to_string(),
    ] {
        assert!(plan.contains(&expected), "missing {expected:?} in:\n{plan}");
    }
    let out = repo.run(&["apply", "--auto-approve"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    repo.assert_plan_empty();
    for sql in [
        format!("SELECT count(*) FROM pg_roles WHERE rolname = '{acme}'"),
        format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{acme}'"),
        format!(
            "SELECT count(*) FROM tenant_reconcile.feature_flags WHERE tenant_id = '{tenant_id}'"
        ),
    ] {
        assert_eq!(pg.count(&sql), 0, "{sql}");
    }
    let exported = std::fs::read_to_string(
        repo.path()
            .join(".tenant-reconcile/exports/acme/tables/projects.csv"),
    )
    .unwrap();
    assert!(exported.contains("unrecorded slice"), "{exported}");
}

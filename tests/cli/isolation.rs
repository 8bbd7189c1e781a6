//! A tenant's role reaches its own slice and nothing else, whoever the admin is and whatever
//! is done to the role by hand: checked from outside as the tenant's own role, on the real
//! server at 127.0.0.1:5432 (whose `postgres` admin is a superuser).

use serde_json::{json, Value};

use crate::pg::Pg;
use crate::support::{text, Repo};

fn tenant_id(pg: &Pg, slug: &str) -> String {
    let rows = pg.query(&format!(
        "SELECT tenant_id FROM tenant_reconcile.tenants WHERE slug = '{slug}'"
    ));
    rows[0]["tenant_id"].as_str().unwrap().to_string()
}

/// `plan --refresh-only` and `check` both exit 2, each naming `cause`.
fn assert_drift_and_unhealthy(repo: &Repo, cause: &str) {
    let out = repo.run(&["plan", "--refresh-only"]);
    let drift = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{drift}\n{}", text(&out.stderr));
    assert!(drift.contains(cause), "missing {cause:?} in:\n{drift}");
    let out = repo.run(&["check"]);
    let health = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{health}\n{}",
        text(&out.stderr)
    );
}

/// After apply: the plan is empty and every tenant is healthy.
fn assert_repaired(repo: &Repo) {
    repo.apply();
    repo.assert_plan_empty();
    let out = repo.run(&["check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The distinct tenant ids `role` sees in the shared projects.
fn shared_ids(pg: &Pg, role: &str) -> Vec<Value> {
    pg.query_as(
        role,
        &pg.db,
        "SELECT DISTINCT tenant_id FROM tenants_shared.projects",
    )
    .unwrap()
}

/// Two shared tenants only: initech (the example's) and hooli.
fn shared_repo(pg: &Pg) -> Repo {
    let repo = pg.repo();
    for slug in ["acme", "globex", "umbrella-labs"] {
        repo.remove(&format!("tenants/{slug}.yaml"));
    }
    repo.write(
        "tenants/hooli.yaml",
        "slug: hooli\nname: Hooli\nplan: starter\nisolation: shared\nowner:\n  email: gavin@hooli.example\nregion: us-west-2\n",
    );
    repo
}

#[test]
fn a_view_reading_the_shared_tables_as_its_owner_is_refused_and_one_made_by_hand_is_drift() {
    let pg = Pg::new();
    let repo = shared_repo(&pg);
    repo.write(
        "migrations/0003_project_names.sql",
        "CREATE VIEW project_names AS SELECT name FROM projects;\n",
    );
    let out = repo.run(&["apply", "--auto-approve"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{}\n{err}", text(&out.stdout));
    assert!(
        err.contains("migration 0003_project_names on tenants_shared is refused: the view tenants_shared.project_names would run with its owner's rights")
            && err.contains("WITH (security_invoker = true)"),
        "{err}"
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM pg_views WHERE viewname = 'project_names'"),
        0,
        "the migration was rolled back"
    );

    // Written as the refusal says, the view filters as the tables do.
    repo.write(
        "migrations/0003_project_names.sql",
        "CREATE VIEW project_names WITH (security_invoker = true) AS SELECT name FROM projects;\n",
    );
    repo.apply();
    repo.assert_plan_empty();
    let out = repo.run(&["plan"]);
    assert!(
        text(&out.stderr).contains(
            "the admin connection is a superuser, which row-level security never filters"
        ),
        "{}",
        text(&out.stderr)
    );
    let (initech, hooli) = (pg.name("initech"), pg.name("hooli"));
    for (role, slug) in [(&initech, "initech"), (&hooli, "hooli")] {
        // Every relation the role can read, read as the role: its own rows only.
        let reachable = pg
            .query_as(
                role,
                &pg.db,
                "SELECT c.oid::regclass::text AS rel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                   AND has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT') ORDER BY 1",
            )
            .unwrap();
        assert_eq!(
            reachable,
            vec![
                json!({"rel": "tenants_shared.project_names"}),
                json!({"rel": "tenants_shared.projects"}),
                json!({"rel": "tenants_shared.settings"}),
            ]
        );
        for rel in ["project_names", "projects"] {
            assert_eq!(
                pg.query_as(
                    role,
                    &pg.db,
                    &format!("SELECT count(*) AS n FROM tenants_shared.{rel}")
                )
                .unwrap(),
                vec![json!({"n": 1})],
                "{slug} through {rel}"
            );
        }
        assert_eq!(
            shared_ids(&pg, role),
            vec![json!({"tenant_id": tenant_id(&pg, slug)})]
        );
    }
    assert_eq!(
        pg.count("SELECT count(*) FROM tenants_shared.project_names"),
        2
    );

    // A plain view made by hand and granted to the group is drift, and apply refuses it.
    pg.exec(&format!(
        "CREATE VIEW tenants_shared.leak AS SELECT name, tenant_id FROM tenants_shared.projects;
         GRANT SELECT ON tenants_shared.leak TO \"{}\";",
        format_args!("{}_shared", pg.prefix)
    ));
    assert_drift_and_unhealthy(
        &repo,
        "the view tenants_shared.leak runs with its owner's rights, which row-level security does not filter",
    );
    let out = repo.run(&["apply", "--auto-approve"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr)
            .contains("the view tenants_shared.leak would run with its owner's rights"),
        "{}",
        text(&out.stderr)
    );
    pg.exec("DROP VIEW tenants_shared.leak");
    assert_repaired(&repo);

    // So are a materialized view and a SECURITY DEFINER function the group may use.
    pg.exec(&format!(
        "CREATE MATERIALIZED VIEW tenants_shared.names AS SELECT name FROM tenants_shared.projects;
         GRANT SELECT ON tenants_shared.names TO \"{group}\";
         CREATE FUNCTION tenants_shared.all_names() RETURNS SETOF text LANGUAGE sql SECURITY DEFINER
           AS 'SELECT name FROM tenants_shared.projects';",
        group = format_args!("{}_shared", pg.prefix)
    ));
    assert_drift_and_unhealthy(
        &repo,
        "the materialized view tenants_shared.names holds rows read with its owner's rights",
    );
    let drift = text(&repo.run(&["plan", "--refresh-only"]).stdout);
    assert!(
        drift.contains("the function tenants_shared.all_names() runs with its owner's rights (SECURITY DEFINER)"),
        "{drift}"
    );
    pg.exec(
        "DROP MATERIALIZED VIEW tenants_shared.names; DROP FUNCTION tenants_shared.all_names()",
    );
    assert_repaired(&repo);
}

#[test]
fn role_attributes_and_memberships_given_by_hand_are_drift_that_apply_takes_back() {
    let pg = Pg::new();
    let repo = shared_repo(&pg);
    repo.apply();
    let initech = pg.name("initech");
    let own = vec![json!({"tenant_id": tenant_id(&pg, "initech")})];
    for (given, cause) in [
        ("SUPERUSER", "is SUPERUSER"),
        ("BYPASSRLS", "is BYPASSRLS"),
        ("CREATEROLE", "is CREATEROLE"),
        ("CREATEDB", "is CREATEDB"),
        ("REPLICATION", "is REPLICATION"),
    ] {
        pg.exec(&format!("ALTER ROLE \"{initech}\" {given}"));
        assert_drift_and_unhealthy(&repo, &format!("{initech} {cause}"));
        assert_repaired(&repo);
        let attrs = pg.query(&format!(
            "SELECT rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication OR rolbypassrls AS any FROM pg_roles WHERE rolname = '{initech}'"
        ));
        assert_eq!(attrs, vec![json!({"any": false})], "{given} was taken back");
        assert_eq!(shared_ids(&pg, &initech), own, "after {given}");
    }
    // A membership that reads everything.
    pg.exec(&format!("GRANT pg_read_all_data TO \"{initech}\""));
    assert_drift_and_unhealthy(&repo, &format!("{initech} is a member of pg_read_all_data"));
    assert_repaired(&repo);
    assert!(pg
        .query_as(
            &initech,
            &pg.db,
            "SELECT count(*) FROM tenant_reconcile.tenants"
        )
        .unwrap_err()
        .contains("permission denied"));
    assert_eq!(shared_ids(&pg, &initech), own);
}

#[test]
fn rights_a_database_tenant_is_given_on_the_control_plane_or_its_database_are_drift() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.apply();
    let globex = pg.name("globex");
    // Its own database is its slice; the admin database holds the control plane.
    pg.exec(&format!(
        "GRANT USAGE ON SCHEMA tenant_reconcile TO \"{globex}\";
         GRANT SELECT ON ALL TABLES IN SCHEMA tenant_reconcile TO \"{globex}\";"
    ));
    assert!(pg
        .query_as(&globex, &pg.db, "SELECT slug FROM tenant_reconcile.tenants")
        .is_ok());
    assert_drift_and_unhealthy(
        &repo,
        &format!("{globex} has rights on schema tenant_reconcile in the admin database"),
    );
    assert_repaired(&repo);
    let e = pg
        .query_as(&globex, &pg.db, "SELECT slug FROM tenant_reconcile.tenants")
        .unwrap_err();
    assert!(e.contains("permission denied"), "{e}");

    // Anyone may connect to its database again.
    pg.exec(&format!("GRANT CONNECT ON DATABASE \"{globex}\" TO PUBLIC"));
    assert_drift_and_unhealthy(
        &repo,
        &format!("PUBLIC may connect to the database {globex}"),
    );
    assert_repaired(&repo);
    assert_eq!(
        pg.query(&format!(
            "SELECT has_database_privilege('public', '{globex}', 'CONNECT') AS public_connect"
        )),
        vec![json!({"public_connect": false})]
    );
    assert_eq!(
        pg.query_as(&globex, &globex, "SELECT count(*) AS n FROM projects")
            .unwrap(),
        vec![json!({"n": 1})],
        "its own data is still its own"
    );
}

#[test]
fn a_large_object_a_tenant_made_in_another_database_is_drift_and_does_not_stop_its_erasure() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.apply();
    let acme = pg.name("acme");
    // Another database on the server, which PUBLIC may connect to (as `postgres` is).
    let elsewhere = format!("{}elsewhere", pg.prefix);
    pg.exec_on("postgres", &format!("CREATE DATABASE \"{elsewhere}\""));
    let made = pg
        .query_as(&acme, &elsewhere, "SELECT lo_create(0)::bigint AS oid")
        .unwrap();
    let oid = made[0]["oid"].as_i64().unwrap();
    assert_drift_and_unhealthy_refresh(
        &repo,
        &format!("{acme} owns large object {oid} in database {elsewhere}"),
    );

    crate::offboarding::erase(&repo, "acme", false);
    repo.apply();
    repo.assert_plan_empty();
    assert_eq!(
        pg.count(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = '{acme}'"
        )),
        0,
        "the role is gone"
    );
    assert_eq!(
        pg.query_as(
            "postgres",
            &elsewhere,
            "SELECT count(*) AS n FROM pg_largeobject_metadata"
        )
        .unwrap(),
        vec![json!({"n": 0})],
        "so is what it owned elsewhere"
    );
    assert_eq!(
        pg.count(&format!(
            "SELECT count(*) FROM pg_namespace WHERE nspname = '{acme}'"
        )),
        0
    );
}

/// Only `plan --refresh-only` (a large object is nothing the smoke tests look for).
fn assert_drift_and_unhealthy_refresh(repo: &Repo, cause: &str) {
    let out = repo.run(&["plan", "--refresh-only"]);
    let drift = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{drift}\n{}", text(&out.stderr));
    assert!(drift.contains(cause), "missing {cause:?} in:\n{drift}");
}

#[test]
fn a_shared_tenants_seed_rows_land_in_its_own_slice_whatever_its_name_renders_to() {
    let pg = Pg::new();
    let repo = shared_repo(&pg);
    repo.remove("tenants/hooli.yaml");
    // A template that does not JSON-encode the tenant's name.
    repo.write(
        "templates/seed.yaml.tera",
        "projects:\n  - {name: Sample, description: {{ tenant.name }}}\n",
    );
    repo.apply();
    let victim = tenant_id(&pg, "initech");
    repo.write(
        "tenants/mallory.yaml",
        &format!(
            "slug: mallory\nname: \"Welcome, tenant_id: {victim}\"\nplan: starter\nisolation: shared\nowner:\n  email: m@mallory.example\nregion: us-west-2\n"
        ),
    );
    repo.apply();
    repo.assert_plan_empty();
    let initech = pg.name("initech");
    let mallory = pg.name("mallory");
    assert_eq!(
        pg.query_as(
            &initech,
            &pg.db,
            "SELECT name, description FROM tenants_shared.projects"
        )
        .unwrap(),
        vec![json!({"name": "Sample", "description": "Initech"})],
        "nothing was written into initech's slice"
    );
    assert_eq!(
        shared_ids(&pg, &mallory),
        vec![json!({"tenant_id": tenant_id(&pg, "mallory")})]
    );
    assert_eq!(
        pg.query_as(
            &mallory,
            &pg.db,
            "SELECT count(*) AS n FROM tenants_shared.projects"
        )
        .unwrap(),
        vec![json!({"n": 1})]
    );
}

/// Only a role apply made itself, moments before its slice, is taken as holding nothing
/// beyond it: one made by hand and imported is looked at, and what it was given is taken.
#[test]
fn a_role_made_by_hand_and_imported_is_confined_to_its_slice() {
    let pg = Pg::new();
    let repo = pg.repo();
    let acme = pg.name("acme");
    pg.exec(&format!(
        "CREATE ROLE \"{acme}\" LOGIN CREATEDB; GRANT pg_read_all_data TO \"{acme}\""
    ));
    let out = repo.run(&["apply", "--auto-approve", "--import", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let held = pg.query(&format!(
        "SELECT r.rolcreatedb, EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.member = r.oid) AS member
         FROM pg_roles r WHERE r.rolname = '{acme}'"
    ));
    assert_eq!(held, vec![json!({"rolcreatedb": false, "member": false})]);
    let read = pg.query_as(
        &acme,
        &pg.db,
        "SELECT count(*) FROM tenant_reconcile.tenants",
    );
    assert!(read.unwrap_err().contains("permission denied"));
    repo.assert_plan_empty();
}

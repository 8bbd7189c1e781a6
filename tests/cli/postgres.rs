//! The Postgres target and state backend against the real server on 127.0.0.1:5432. The
//! example repo has a tenant in each isolation mode: acme (schema), globex (database),
//! initech (shared) and umbrella-labs (schema, suspended).

use std::io::{BufRead, BufReader};
use std::time::Duration;

use serde_json::json;

use crate::pg::Pg;
use crate::support::text;

fn tenant_id(pg: &Pg, slug: &str) -> String {
    let rows = pg.query(&format!(
        "SELECT tenant_id FROM tenant_reconcile.tenants WHERE slug = '{slug}'"
    ));
    rows[0]["tenant_id"].as_str().unwrap().to_string()
}

#[test]
fn apply_builds_every_isolation_mode_and_then_the_plan_is_empty() {
    let pg = Pg::new();
    let repo = pg.repo();
    let out = repo.apply();
    assert!(text(&out.stdout).contains("4 tenants reconciled: 36 added"));
    repo.assert_plan_empty();

    assert_eq!(
        pg.query("SELECT slug, lifecycle, step FROM tenant_reconcile.tenants ORDER BY slug"),
        vec![
            json!({"slug": "acme", "lifecycle": "active", "step": null}),
            json!({"slug": "globex", "lifecycle": "active", "step": null}),
            json!({"slug": "initech", "lifecycle": "active", "step": null}),
            json!({"slug": "umbrella-labs", "lifecycle": "suspended", "step": null}),
        ]
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM tenant_reconcile.outbox WHERE type = 'TenantProvisioned'"),
        4
    );
    // schema: the tenant's schema, owned by the admin, with the migrations and seed.
    let acme = pg.name("acme");
    assert_eq!(
        pg.query(&format!(
            "SELECT nspowner::regrole::text AS owner FROM pg_namespace WHERE nspname = '{acme}'"
        )),
        vec![json!({"owner": "postgres"})]
    );
    assert_eq!(
        pg.query(&format!(
            "SELECT name, description FROM \"{acme}\".projects"
        )),
        vec![json!({"name": "Beispielprojekt", "description": "Willkommen, Acme Corporation"})]
    );
    // database: its own database, PUBLIC's CONNECT revoked.
    let globex = pg.name("globex");
    assert_eq!(
        pg.query(&format!(
            "SELECT has_database_privilege('public', datname, 'CONNECT') AS public_connect FROM pg_database WHERE datname = '{globex}'"
        )),
        vec![json!({"public_connect": false})]
    );
    // shared: forced row-level security, a tenant_id column filled with initech's id.
    assert_eq!(
        pg.query(
            "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class
             WHERE relnamespace = 'tenants_shared'::regnamespace AND relkind = 'r' ORDER BY relname"
        ),
        vec![
            json!({"relname": "projects", "relrowsecurity": true, "relforcerowsecurity": true}),
            json!({"relname": "settings", "relrowsecurity": true, "relforcerowsecurity": true}),
        ]
    );
    assert_eq!(
        pg.query("SELECT DISTINCT tenant_id FROM tenants_shared.projects"),
        vec![json!({"tenant_id": tenant_id(&pg, "initech")})]
    );
    // Suspended: the role exists but cannot log in.
    assert_eq!(
        pg.query(&format!(
            "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname = '{}'",
            pg.name("umbrella-labs")
        )),
        vec![json!({"rolcanlogin": false, "rolsuper": false, "rolcreaterole": false, "rolcreatedb": false, "rolbypassrls": false})]
    );
    // Passwords are stored as SCRAM verifiers; the state holds none of them.
    assert_eq!(
        pg.count(&format!(
            "SELECT count(*) FROM pg_authid WHERE rolname LIKE '{}%' AND rolpassword LIKE 'SCRAM-SHA-256$4096:%'",
            pg.prefix.replace('_', "\\_")
        )),
        4
    );
    let state = pg.query(
        "SELECT (SELECT string_agg(body, '') FROM tenant_reconcile.state_tenants) || (SELECT body FROM tenant_reconcile.state_header) AS body",
    );
    let body = state[0]["body"].as_str().unwrap();
    assert!(!body.contains("SCRAM"), "no verifier in the state");
}

#[test]
fn a_tenant_cannot_reach_another_tenants_data_in_any_mode() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.apply();
    let (acme, globex, initech) = (pg.name("acme"), pg.name("globex"), pg.name("initech"));
    let db = pg.db.clone();

    // schema: acme reads its own schema, and nothing of anyone else's.
    assert_eq!(
        pg.query_as(
            &acme,
            &db,
            &format!("SELECT count(*) AS n FROM \"{acme}\".projects")
        )
        .unwrap(),
        vec![json!({"n": 1})]
    );
    let umbrella = pg.name("umbrella-labs");
    for sql in [
        format!("SELECT * FROM \"{umbrella}\".projects"),
        "SELECT * FROM tenants_shared.projects".to_string(),
        "SELECT * FROM tenant_reconcile.tenants".to_string(),
        "SELECT * FROM tenant_reconcile.roles".to_string(),
    ] {
        let e = pg.query_as(&acme, &db, &sql).unwrap_err();
        assert!(e.contains("permission denied"), "{sql}: {e}");
    }
    let e = pg
        .query_as(
            &acme,
            &db,
            &format!("INSERT INTO \"{umbrella}\".projects (name) VALUES ('x') RETURNING 1"),
        )
        .unwrap_err();
    assert!(e.contains("permission denied"), "{e}");

    // database: only globex may connect to globex's database, and globex only to its own.
    assert_eq!(
        pg.query_as(&globex, &globex, "SELECT count(*) AS n FROM projects")
            .unwrap(),
        vec![json!({"n": 1})]
    );
    let e = pg.query_as(&acme, &globex, "SELECT 1").unwrap_err();
    assert!(e.contains("permission denied for database"), "{e}");
    let e = pg
        .query_as(&globex, &db, &format!("SELECT * FROM \"{acme}\".projects"))
        .unwrap_err();
    assert!(e.contains("permission denied"), "{e}");

    // shared: initech sees and writes only its own rows, whatever it sets app.tenant_id to.
    pg.exec(
        "SELECT set_config('app.tenant_id', 'someone-else', false);
         INSERT INTO tenants_shared.projects (name, tenant_id) VALUES ('Other tenant', 'someone-else');",
    );
    assert_eq!(
        pg.query_as(&initech, &db, "SELECT name FROM tenants_shared.projects")
            .unwrap(),
        vec![json!({"name": "Sample project"})]
    );
    let e = pg
        .query_as(
            &initech,
            &db,
            "SELECT set_config('app.tenant_id', 'someone-else', false) AS s, (SELECT count(*) FROM tenants_shared.projects) AS n",
        )
        .unwrap();
    assert_eq!(
        e[0]["n"],
        json!(1),
        "the session setting cannot widen a tenant role's view"
    );
    let e = pg
        .query_as(
            &initech,
            &db,
            "INSERT INTO tenants_shared.projects (name, tenant_id) VALUES ('sneaky', 'someone-else') RETURNING 1",
        )
        .unwrap_err();
    assert!(e.contains("row-level security"), "{e}");
    let e = pg
        .query_as(
            &initech,
            &db,
            "UPDATE tenants_shared.projects SET name = 'gone' RETURNING name",
        )
        .unwrap();
    assert_eq!(e.len(), 1, "the update reached initech's own row only");
    assert_eq!(
        pg.count("SELECT count(*) FROM tenants_shared.projects WHERE name = 'Other tenant'"),
        1
    );
    let e = pg
        .query_as(&initech, &db, &format!("SELECT * FROM \"{acme}\".projects"))
        .unwrap_err();
    assert!(e.contains("permission denied"), "{e}");

    // Suspended: umbrella-labs cannot log in at all.
    let e = pg.query_as(&umbrella, &db, "SELECT 1").unwrap_err();
    assert!(e.contains("not permitted to log in"), "{e}");
}

#[test]
fn drift_is_shown_field_by_field_and_apply_repairs_it() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.apply();
    let (acme, globex) = (pg.name("acme"), pg.name("globex"));
    let acme_id = tenant_id(&pg, "acme");
    pg.exec(&format!(
        "DROP SCHEMA \"{umbrella}\" CASCADE;
         REVOKE USAGE ON SCHEMA \"{acme}\" FROM \"{acme}\";
         UPDATE tenant_reconcile.feature_flags SET enabled = NOT enabled WHERE tenant_id = '{acme_id}' AND flag = 'sso';
         DELETE FROM tenant_reconcile.slice_migrations WHERE slice = '{acme}' AND version = '0002';
         ALTER ROLE \"{initech}\" PASSWORD 'set-by-hand';
         ALTER ROLE \"{globex}\" NOLOGIN;
         REVOKE CONNECT ON DATABASE \"{globex}\" FROM \"{globex}\";",
        umbrella = pg.name("umbrella-labs"),
        initech = pg.name("initech"),
    ));
    let out = repo.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    for expected in [
        "~ acme/features  # changed outside tenant-reconcile",
        "~ sso = false → true",
        "~ access         = \"missing\" → \"granted\"",
        "~ schema_version = \"0001_create_projects\" → \"0002_create_settings\"",
        "~ password_fingerprint = \"(changed outside tenant-reconcile)\" → \"sha256:",
        "~ globex/role  # changed outside tenant-reconcile\n      ~ login = false → true",
        "+ umbrella-labs/database  # changed outside tenant-reconcile",
        "+ umbrella-labs/seed  # changed outside tenant-reconcile",
    ] {
        assert!(plan.contains(expected), "missing {expected:?} in:\n{plan}");
    }

    repo.apply();
    repo.assert_plan_empty();
    assert_eq!(
        pg.query_as(&globex, &globex, "SELECT count(*) AS n FROM projects")
            .unwrap(),
        vec![json!({"n": 1})]
    );
    assert_eq!(
        pg.query_as(
            &acme,
            &pg.db,
            &format!("SELECT count(*) AS n FROM \"{acme}\".settings")
        )
        .unwrap(),
        vec![json!({"n": 2})],
        "the re-recorded migration ran again without harm; the seed stayed single"
    );
    assert_eq!(
        pg.count(&format!(
            "SELECT count(*) FROM tenant_reconcile.slice_migrations WHERE slice = '{acme}'"
        )),
        2
    );
}

#[test]
fn suspend_and_resume_take_login_away_and_give_it_back() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.apply();
    let acme = pg.name("acme");
    let file = repo.path().join("tenants/acme.yaml");
    let original = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{original}status: suspended\n")).unwrap();
    let out = repo.run(&["plan"]);
    assert!(
        text(&out.stdout).contains("acme will be suspended (active → suspended)"),
        "{}",
        text(&out.stdout)
    );
    repo.apply();
    repo.assert_plan_empty();
    assert!(pg
        .query_as(&acme, &pg.db, "SELECT 1")
        .unwrap_err()
        .contains("not permitted to log in"));

    std::fs::write(&file, original).unwrap();
    repo.apply();
    repo.assert_plan_empty();
    assert!(pg.query_as(&acme, &pg.db, "SELECT 1").is_ok());
    assert_eq!(
        pg.query(
            "SELECT type FROM tenant_reconcile.outbox o JOIN tenant_reconcile.tenants t USING (tenant_id) WHERE t.slug = 'acme' ORDER BY o.id"
        ),
        vec![
            json!({"type": "TenantProvisioned"}),
            json!({"type": "TenantSuspended"}),
            json!({"type": "TenantResumed"}),
        ]
    );
    assert_eq!(
        pg.count(&format!("SELECT count(*) FROM \"{acme}\".projects")),
        1,
        "nothing was provisioned again"
    );
}

#[test]
fn killed_mid_apply_against_postgres_a_rerun_converges_exactly_once() {
    let pg = Pg::new();
    let repo = pg.repo();
    let tenants = 24;
    for i in 0..tenants {
        let isolation = ["schema", "database", "shared"][i % 3];
        repo.write(
            &format!("tenants/bulk-{i:03}.yaml"),
            &format!("slug: bulk-{i:03}\nname: Bulk {i}\nplan: growth\nisolation: {isolation}\nowner:\n  email: o{i}@bulk.example\nregion: eu-west-1\n"),
        );
    }
    for (after_lines, delay_ms) in [(2, 0), (0, 150), (5, 20)] {
        repo.kill_apply(4, after_lines, Duration::from_millis(delay_ms));
    }
    repo.apply();
    repo.assert_plan_empty();
    let all = tenants as i64 + 4;
    assert_eq!(
        pg.count("SELECT count(*) FROM tenant_reconcile.tenants"),
        all
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM tenant_reconcile.memberships"),
        all
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM tenant_reconcile.outbox WHERE type = 'TenantProvisioned'"),
        all,
        "every tenant announced exactly once"
    );
    assert_eq!(pg.count("SELECT count(*) FROM tenant_reconcile.seeds"), all);
    for i in [0, 3] {
        let schema = pg.name(&format!("bulk-{i:03}"));
        assert_eq!(
            pg.count(&format!("SELECT count(*) FROM \"{schema}\".projects")),
            1
        );
    }
    let db = pg.name("bulk-001");
    let rows = pg
        .query_as("postgres", &db, "SELECT count(*) AS n FROM projects")
        .unwrap();
    assert_eq!(rows, vec![json!({"n": 1})]);
    assert_eq!(
        pg.count("SELECT count(*) FROM tenants_shared.projects"),
        (tenants / 3) as i64 + 1,
        "one seeded project per shared tenant, initech included"
    );
}

#[test]
fn a_second_apply_waits_for_the_lock_and_names_its_holder_but_other_states_do_not_block() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.apply();
    // Hold the state's lock as a running apply would.
    let url = pg.url();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query("SELECT pg_advisory_lock(hashtextextended('tenant-reconcile/state/default', 0))")
                .execute(&mut c)
                .await
                .unwrap();
            sqlx::query("INSERT INTO tenant_reconcile.state_locks (name, info) VALUES ('default', $1)")
                .bind(r#"{"id":"L1","operation":"apply","who":"ci@runner-7","host":"runner-7","pid":4242,"created":"2026-11-23T10:00:00Z","version":"0.1.0"}"#)
                .execute(&mut c)
                .await
                .unwrap();
            ready_tx.send(()).unwrap();
            rx.recv().unwrap();
        });
    });
    ready_rx.recv().unwrap();
    let started = std::time::Instant::now();
    let out = repo.run(&["apply", "--auto-approve", "--lock-timeout", "1s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() >= Duration::from_secs(1), "it waited");
    let err = text(&out.stderr);
    assert!(
        err.contains("the state is locked by `apply` run by ci@runner-7 (pid 4242)"),
        "{err}"
    );

    // A state of another name is not blocked by that lock. It is another environment,
    // with names of its own: what the first state made is not its to take.
    let staging = format!("{}stg_", pg.prefix);
    repo.write(
        "tenant-reconcile.hcl",
        &format!(
            "output_dir = \"rendered-staging\"\n{}",
            pg.config("  schema = \"staging_admin\"\n  shared_schema = \"staging_shared\"\n")
                .replace(
                    "backend = \"postgres\"",
                    "backend = \"postgres\"\n  name = \"staging\"",
                )
                .replace(&format!("= \"{}\"", pg.prefix), &format!("= \"{staging}\""))
        ),
    );
    let out = repo.run(&["apply", "--auto-approve", "--lock-timeout", "0s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    tx.send(()).unwrap();
    holder.join().unwrap();
}

#[test]
fn changing_isolation_is_a_replace_that_needs_a_flag_and_keeps_the_old_slice() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.apply();
    let acme = pg.name("acme");
    let file = repo.path().join("tenants/acme.yaml");
    let text_before = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text_before.contains("isolation"),
        "acme takes schema from its plan"
    );
    std::fs::write(&file, format!("{text_before}isolation: database\n")).unwrap();

    let out = repo.run(&["plan"]);
    let plan = text(&out.stdout);
    assert!(plan.contains("-/+ acme/database"), "{plan}");
    assert!(plan.contains("# forces replacement"), "{plan}");
    // Not "in place": the heading and the counts say a resource is replaced.
    assert!(
        plan.contains(
            "acme will be updated, replacing resources (the old ones kept until it is purged)"
        ),
        "{plan}"
    );
    assert!(
        plan.contains("Plan: 1 to add, 1 to change, 1 to replace, 0 to destroy."),
        "{plan}"
    );
    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("pass --allow-replace"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        pg.count(&format!(
            "SELECT count(*) FROM pg_database WHERE datname = '{acme}'"
        )),
        0,
        "nothing applied"
    );

    let out = repo.run(&["apply", "--auto-approve", "--allow-replace"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 added, 1 changed, 1 replaced, 0 destroyed."),
        "{}",
        text(&out.stdout)
    );
    repo.assert_plan_empty();
    assert_eq!(
        pg.count(&format!(
            "SELECT count(*) FROM pg_database WHERE datname = '{acme}'"
        )),
        1
    );
    assert_eq!(
        pg.count(&format!("SELECT count(*) FROM \"{acme}\".projects")),
        1,
        "the old schema and its data are still there"
    );
}

#[test]
fn credentials_print_a_login_that_works_and_rotation_changes_it() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.apply();
    let out = repo.run(&["credentials", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let url = text(&out.stdout).trim().to_string();
    let acme = pg.name("acme");
    assert!(url.starts_with(&format!("postgresql://{acme}:")), "{url}");
    assert!(
        url.ends_with(&format!("/{}?options=-csearch_path%3D{acme}", pg.db)),
        "{url}"
    );
    let password = url
        .split(':')
        .nth(2)
        .unwrap()
        .split('@')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(password.len(), 64);

    // Nothing the tool wrote or printed elsewhere holds the password.
    let everything = [
        text(&repo.run(&["plan", "--format", "json"]).stdout),
        text(&repo.run(&["show", "--json"]).stdout),
        pg.query("SELECT (SELECT string_agg(body, '') FROM tenant_reconcile.state_tenants) || (SELECT body FROM tenant_reconcile.state_header) AS body")[0]["body"].to_string(),
    ];
    for output in everything {
        assert!(!output.contains(&password));
    }

    let verifier = |pg: &Pg| {
        pg.query(&format!(
            "SELECT rolpassword FROM pg_authid WHERE rolname = '{acme}'"
        ))[0]["rolpassword"]
            .clone()
    };
    let before = verifier(&pg);
    let out = repo.run(&["apply", "--auto-approve", "--rotate-credentials", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    repo.assert_plan_empty();
    assert_ne!(verifier(&pg), before);
    let rotated = text(&repo.run(&["credentials", "acme"]).stdout);
    assert!(!rotated.contains(&password));
}

#[test]
fn an_unreachable_server_is_a_clear_error_and_nothing_is_written() {
    let pg = Pg::new();
    let mut repo = pg.repo();
    repo.env[0].1 = "postgres://postgres@127.0.0.1:1/nowhere".into();
    let out = repo.run(&["plan"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("127.0.0.1:1/nowhere"), "{err}");
    assert!(
        !err.contains("postgres@"),
        "no credentials in messages: {err}"
    );

    repo.env.retain(|(k, _)| k != "DATABASE_URL");
    let out = repo.run(&["plan"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("set DATABASE_URL"),
        "{}",
        text(&out.stderr)
    );
    // validate needs no server.
    assert!(repo.run(&["validate"]).status.success());
}

#[test]
fn names_longer_than_postgres_allows_are_refused_at_validate() {
    let pg = Pg::new();
    let repo = pg.repo();
    let prefix = format!("{}{}", pg.prefix, "x".repeat(40));
    repo.write(
        "tenant-reconcile.hcl",
        &pg.config("  shared_schema = \"shared_rows\"\n").replace(
            &format!("role_prefix = \"{}\"", pg.prefix),
            &format!("role_prefix = \"{prefix}\""),
        ),
    );
    let out = repo.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("tenants/umbrella-labs.yaml:1:1: field `slug`: the role name"),
        "{err}"
    );
    assert!(err.contains("PostgreSQL allows 63"), "{err}");
    assert_eq!(
        pg.count("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_reconcile'"),
        0
    );
}

#[test]
fn an_edited_migration_is_refused_naming_it() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.apply();
    let path = repo.path().join("migrations/0001_create_projects.sql");
    let sql = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        sql.replace("description TEXT", "description TEXT, extra TEXT"),
    )
    .unwrap();
    let out = repo.run(&["plan"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("0001_create_projects"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_new_schema_tenant_s_role_slice_and_seed_are_made_together_or_not_at_all() {
    let pg = Pg::new();
    let repo = pg.repo();
    // A migration the server refuses half-way: every new slice stops at it.
    repo.write(
        "migrations/0003_half_way.sql",
        "CREATE TABLE notes (body text);\nINSERT INTO projectz (name) VALUES ('x');\n",
    );
    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("acme/database: migration 0003_half_way on")
            && err.contains("relation \"projectz\" does not exist"),
        "{err}"
    );
    // The role, the schema with its first migrations, and their records went with it,
    // seen from outside: none of acme's data plane stands.
    let acme = pg.name("acme");
    for (what, sql) in [
        (
            "role",
            format!("SELECT count(*) FROM pg_roles WHERE rolname = '{acme}'"),
        ),
        (
            "schema",
            format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{acme}'"),
        ),
        (
            "role record",
            "SELECT count(*) FROM tenant_reconcile.roles WHERE slug = 'acme'".into(),
        ),
        (
            "slice record",
            "SELECT count(*) FROM tenant_reconcile.slices WHERE slug = 'acme'".into(),
        ),
        (
            "migrations",
            format!(
                "SELECT count(*) FROM tenant_reconcile.slice_migrations WHERE slice = '{acme}'"
            ),
        ),
        (
            "seed",
            "SELECT count(*) FROM tenant_reconcile.seeds WHERE slug = 'acme'".into(),
        ),
    ] {
        assert_eq!(
            pg.count(&sql),
            0,
            "acme's {what} was left by the failed step"
        );
    }
    // Its registry row shows the step it stopped at, the first of the three.
    assert_eq!(
        pg.query("SELECT lifecycle, step FROM tenant_reconcile.tenants WHERE slug = 'acme'"),
        vec![json!({"lifecycle": "provisioning", "step": "role"})]
    );

    repo.write(
        "migrations/0003_half_way.sql",
        "CREATE TABLE notes (body text);\n",
    );
    repo.apply();
    repo.assert_plan_empty();
    // The tenant, logged in as itself, reads its seed and its new table.
    let read = pg
        .query_as(
            &acme,
            &pg.db,
            &format!("SELECT (SELECT count(*) FROM \"{acme}\".projects) AS projects, (SELECT count(*) FROM \"{acme}\".notes) AS notes"),
        )
        .unwrap();
    assert_eq!(read, vec![json!({"projects": 1, "notes": 0})]);
}

#[test]
fn every_isolation_mode_applies_through_a_pool_of_one_connection() {
    // A step that asks the pool for a connection while it holds one of the pool's waits for
    // itself. With one connection it waits at once; with the default ten it waited whenever
    // ten tenants held one each (the pool's 30 s timeout, then retries: minutes).
    let pg = Pg::new();
    let repo = pg.repo();
    repo.write(
        "tenant-reconcile.hcl",
        &pg.config("  max_connections = 1\n"),
    );
    let out = repo.apply_with(&["--parallelism", "4"]);
    assert!(text(&out.stdout).contains("4 tenants reconciled: 36 added"));
    repo.assert_plan_empty();
    // The suspended tenant's role, made and held in the same run, may not log in.
    let umbrella = pg.name("umbrella-labs");
    assert!(pg.query_as(&umbrella, &pg.db, "SELECT 1").is_err());

    // Offboarding (revoked, exported) and then the purge of a tenant in each mode, whose
    // steps of many tenants go in batches, through the same one connection.
    crate::purge::no_hold(&repo);
    for slug in ["acme", "globex", "initech"] {
        crate::offboarding::offboard(&repo, slug);
    }
    for _ in 0..2 {
        repo.apply_with(&["--parallelism", "4"]);
    }
    repo.assert_plan_empty();
    assert_eq!(
        pg.query("SELECT slug, lifecycle FROM tenant_reconcile.tenants ORDER BY slug"),
        vec![
            json!({"slug": "acme", "lifecycle": "deprovisioned"}),
            json!({"slug": "globex", "lifecycle": "deprovisioned"}),
            json!({"slug": "initech", "lifecycle": "deprovisioned"}),
            json!({"slug": "umbrella-labs", "lifecycle": "suspended"}),
        ]
    );
    let (acme, globex, initech) = (pg.name("acme"), pg.name("globex"), pg.name("initech"));
    assert_eq!(
        pg.count(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname IN ('{acme}', '{globex}', '{initech}')"
        )),
        0
    );
}

#[test]
fn a_slug_whose_schema_would_be_an_admin_schema_is_refused() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.write(
        "tenant-reconcile.hcl",
        &pg.config("  schema = \"tenant_reconcile\"\n").replace(
            &format!("schema_prefix = \"{}\"", pg.prefix),
            "schema_prefix = \"tenant_\"",
        ),
    );
    repo.write(
        "tenants/reconcile.yaml",
        "slug: reconcile\nname: Reconcile Ltd\nplan: growth\nowner:\n  email: a@reconcile.example\nregion: eu-west-1\n",
    );
    let out = repo.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("tenants/reconcile.yaml:1:1: field `slug`: the schema name \"tenant_reconcile\" is taken"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn connections_cut_mid_apply_are_retried_or_converge_on_rerun() {
    let pg = Pg::new();
    let repo = pg.repo();
    for i in 0..12 {
        repo.write(
            &format!("tenants/bulk-{i:03}.yaml"),
            &format!("slug: bulk-{i:03}\nname: Bulk {i}\nplan: growth\nisolation: schema\nowner:\n  email: o{i}@bulk.example\nregion: eu-west-1\n"),
        );
    }
    let mut child = repo.spawn_apply(2);
    // As a server restart would: end every connection of the running apply, a few times.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut cut = 0;
    while let Some(Ok(line)) = lines.next() {
        if line.contains("done") && cut < 3 {
            // This test's own connections only (its database and its tenants'): other
            // tests run on the same server at the same time.
            pg.exec(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE application_name = 'tenant-reconcile' AND pid <> pg_backend_pid()
                   AND (datname = current_database() OR starts_with(datname, '{}'))",
                pg.prefix
            ));
            cut += 1;
        }
    }
    let _ = child.wait();
    assert!(cut > 0, "the apply was interrupted");
    // Whatever the interrupted run managed, a rerun converges with nothing twice.
    repo.apply();
    repo.assert_plan_empty();
    assert_eq!(
        pg.count("SELECT count(*) FROM tenant_reconcile.tenants"),
        16
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM tenant_reconcile.outbox WHERE type = 'TenantProvisioned'"),
        16
    );
    assert_eq!(pg.count("SELECT count(*) FROM tenant_reconcile.seeds"), 16);
}

/// A session holding the state's lock, on the test's own database, as a running apply's
/// lock connection does, with `pid` recorded as the holder's on this host; it lets go after
/// `hold`.
fn hold_state_lock(pg: &Pg, pid: u32, hold: Duration) -> std::process::Child {
    let info = json!({
        "id": "00000000-0000-0000-0000-000000000001",
        "operation": "apply",
        "who": "someone",
        "host": gethostname::gethostname().to_string_lossy(),
        "pid": pid,
        "created": "2026-12-03T00:00:00Z",
        "version": "0.1.0",
    });
    pg.exec(&format!(
        "INSERT INTO tenant_reconcile.state_locks (name, info) VALUES ('default', '{info}')
         ON CONFLICT (name) DO UPDATE SET info = excluded.info"
    ));
    // Named, so its own lock is told from that of a session just ended and not yet gone.
    let name = format!("lock-holder-{}", uuid::Uuid::new_v4().simple());
    let mut child = std::process::Command::new("psql")
        .env("PGAPPNAME", &name)
        .arg(pg.url())
        .args(["-X", "-q", "-c"])
        .arg("SELECT pg_advisory_lock(hashtextextended('tenant-reconcile/state/default', 0))")
        .arg("-c")
        .arg(format!("SELECT pg_sleep({})", hold.as_secs_f64()))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Until the session holds it.
    for _ in 0..100 {
        let held = pg.count(&format!(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = '{name}'"
        ));
        if held == 1 {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the session never took the lock");
}

#[test]
fn a_rerun_right_after_a_kill_waits_for_the_server_to_let_go_of_the_dead_runs_lock() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.apply();
    let tenant = repo.path().join("tenants/acme.yaml");
    let acme = std::fs::read_to_string(&tenant).unwrap();
    std::fs::write(&tenant, format!("{acme}status: suspended\n")).unwrap();

    // The holder is a process of this host that is gone (a run killed a moment ago, whose
    // session the server has not yet ended): the rerun waits for the lock, then applies.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let mut session = hold_state_lock(&pg, gone.id(), Duration::from_millis(1500));
    let out = repo.run(&["apply", "--auto-approve"]);
    session.wait().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    repo.assert_plan_empty();

    // A holder that is alive (this test's own process) is waited for only as long as
    // --lock-timeout says: refused at once, nothing applied.
    std::fs::write(&tenant, &acme).unwrap();
    let mut session = hold_state_lock(&pg, std::process::id(), Duration::from_millis(1500));
    let out = repo.run(&["apply", "--auto-approve"]);
    session.wait().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "the state is locked by `apply` run by someone (pid {})",
            std::process::id()
        )),
        "{err}"
    );
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(plan.contains("acme will be resumed"), "{plan}");
}

/// A tenant's control-plane changes that follow each other are one transaction: when one of
/// them fails, the report names it, none of them is made, and the next apply makes them all.
#[test]
fn control_plane_changes_made_together_fail_together_naming_the_one_that_failed() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.apply();
    pg.exec(
        "CREATE FUNCTION tenant_reconcile.refuse_quotas() RETURNS trigger LANGUAGE plpgsql
           AS $$ BEGIN RAISE EXCEPTION 'quotas are frozen'; END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON tenant_reconcile.quotas
           FOR EACH ROW EXECUTE FUNCTION tenant_reconcile.refuse_quotas()",
    );
    let acme = std::fs::read_to_string(repo.path().join("tenants/acme.yaml")).unwrap();
    repo.write(
        "tenants/acme.yaml",
        &acme
            .replace("name: Acme Corporation", "name: Acme Corp")
            .replace("seats: 80", "seats: 90"),
    );
    let out = repo.run(&["apply", "--auto-approve"]);
    let said = text(&out.stdout) + &text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("acme/quotas: "), "{said}");
    assert!(said.contains("quotas are frozen"), "{said}");
    let name = "SELECT name FROM tenant_reconcile.tenants WHERE slug = 'acme'";
    assert_eq!(pg.query(name), vec![json!({"name": "Acme Corporation"})]);
    pg.exec("DROP TRIGGER refuse ON tenant_reconcile.quotas");
    repo.apply();
    assert_eq!(pg.query(name), vec![json!({"name": "Acme Corp"})]);
    let seats = pg.query(
        "SELECT q.value FROM tenant_reconcile.quotas q JOIN tenant_reconcile.tenants t USING (tenant_id)
         WHERE t.slug = 'acme' AND q.name = 'seats'",
    );
    assert_eq!(seats, vec![json!({"value": 90})]);
    repo.assert_plan_empty();
}

/// How many rows each of the admin schema's tables has read by scanning it whole since the
/// database's statistics were reset, once every session but the asking one has gone (a
/// session hands its counts over as it ends).
fn rows_scanned(pg: &Pg) -> Vec<(String, i64)> {
    for _ in 0..100 {
        let others = pg.count(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
            pg.db
        ));
        if others == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The admin tables, and the catalogs that hold a row per tenant's schema and relation:
    // a smoke test's catalog questions are one tenant's too.
    pg.query(
        "SELECT relname, seq_tup_read FROM pg_stat_user_tables
         WHERE schemaname = 'tenant_reconcile'
         UNION ALL SELECT relname, seq_tup_read FROM pg_stat_sys_tables
         WHERE schemaname = 'pg_catalog' AND relname IN ('pg_namespace', 'pg_depend')
         ORDER BY relname",
    )
    .into_iter()
    .map(|r| {
        (
            r["relname"].as_str().unwrap().to_string(),
            r["seq_tup_read"].as_i64().unwrap(),
        )
    })
    .collect()
}

#[test]
fn a_one_tenant_apply_reads_no_admin_table_whole() {
    // A statement that looked a tenant up in a bound list (a checkpoint, a step marker, a
    // refresh) was planned as if the list held 100 rows, so in a fleet of a few thousand it
    // read the whole table to find one; a role's catalog row was compared in another
    // collation than its key's index; a smoke test's catalog questions read every tenant's
    // schema. Each made one tenant's change cost the fleet. Below
    // a few hundred rows a whole read is the server's right choice, so the fleet is larger.
    let pg = Pg::new();
    let repo = pg.repo();
    let fleet = 500;
    for i in 0..fleet {
        repo.write_tenant(&format!("fleet-{i:03}"));
    }
    repo.apply();
    // What the server's autovacuum does between applies: the count of live tenants (a
    // plan of some tenants weighs the files gone against it) then reads the state's index
    // alone, its pages marked all-visible.
    pg.exec("VACUUM ANALYZE");
    repo.write(
        "tenants/fleet-007.yaml",
        "slug: fleet-007\nname: Fleet Seven\nplan: growth\nowner:\n  email: o@fleet-007.example\nregion: eu-west-1\nquotas:\n  seats: 42\n",
    );
    // A changed tenant, then a new one (its role, schema, migrations, seed, smoke tests and
    // move to active), each applied alone.
    repo.write_tenant("fleet-new");
    for (slug, done) in [
        ("fleet-007", "1 tenant reconciled: 0 added, 3 changed"),
        ("fleet-new", "1 tenant reconciled: 9 added, 0 changed"),
    ] {
        rows_scanned(&pg);
        pg.exec("SELECT pg_stat_reset()");
        let out = repo.apply_with(&["--tenant", slug]);
        assert!(text(&out.stdout).contains(done), "{}", text(&out.stdout));
        // Two reads of every schema are the run's own, which no index answers: the schemas
        // anyone may use (a right given to PUBLIC is on no role's record), and the views
        // anywhere that read the shared tables with their owner's rights. The smoke test's
        // questions read it whole twice more before their lookups went by index.
        let whole: Vec<String> = rows_scanned(&pg)
            .into_iter()
            .filter(|(table, read)| match table.as_str() {
                "pg_namespace" => *read >= 3 * fleet,
                _ => *read >= fleet,
            })
            .map(|(table, read)| format!("{table} ({read} rows)"))
            .collect();
        assert!(
            whole.is_empty(),
            "the apply of {slug} alone read whole tables: {whole:?}"
        );
    }
    assert_eq!(
        pg.query("SELECT t.name, q.value FROM tenant_reconcile.tenants t JOIN tenant_reconcile.quotas q ON q.tenant_id = t.tenant_id AND q.name = 'seats' WHERE t.slug = 'fleet-007'"),
        vec![json!({"name": "Fleet Seven", "value": 42})]
    );
    repo.assert_plan_empty();
}

/// A seed's rows of one table go in one statement while they name the same columns: a row
/// that leaves a column out keeps its default, and the rows keep their order.
#[test]
fn seed_rows_that_name_other_columns_keep_their_defaults_and_their_order() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.write(
        "migrations/0003_project_kind.sql",
        "ALTER TABLE projects ADD COLUMN kind TEXT NOT NULL DEFAULT 'sample';\nALTER TABLE projects ADD COLUMN n SERIAL;\n",
    );
    repo.write(
        "templates/seed.yaml.tera",
        "projects:\n  - {name: a, kind: own}\n  - {name: b}\n  - {name: c}\n  - {name: d, kind: own}\nsettings:\n  - {key: locale, value: en}\n",
    );
    repo.apply();
    let acme = pg.name("acme");
    let rows = pg
        .query_as(
            &acme,
            &pg.db,
            &format!("SELECT name, kind, n FROM \"{acme}\".projects ORDER BY n"),
        )
        .unwrap();
    assert_eq!(
        rows,
        vec![
            json!({"name": "a", "kind": "own", "n": 1}),
            json!({"name": "b", "kind": "sample", "n": 2}),
            json!({"name": "c", "kind": "sample", "n": 3}),
            json!({"name": "d", "kind": "own", "n": 4}),
        ]
    );
    repo.assert_plan_empty();
}

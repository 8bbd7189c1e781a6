//! Trust with real data on a Postgres server other environments share: a wrong master key
//! changes nothing, a rotation re-keys on purpose, and every right a slice needs is
//! compared, so a revoked one is drift that apply repairs.

use serde_json::{json, Value};

use crate::pg::Pg;
use crate::support::text;

/// Every role of the test's prefix with its stored verifier, as the server has them.
fn verifiers(pg: &Pg) -> Vec<Value> {
    pg.query(&format!(
        "SELECT rolname, rolpassword FROM pg_authid WHERE rolname LIKE '{}%' AND rolcanlogin ORDER BY 1",
        pg.prefix.replace('_', "\\_")
    ))
}

/// Whether `password` is the one a SCRAM-SHA-256 verifier was made from, worked out here
/// from the verifier's own salt and iterations (the server trusts local logins, so a login
/// would prove nothing).
pub fn verifier_accepts(verifier: &str, password: &str) -> bool {
    use base64::Engine;
    use hmac::Mac;
    use sha2::Digest;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (head, keys) = verifier.rsplit_once('$').unwrap();
    let (iterations, salt) = head
        .strip_prefix("SCRAM-SHA-256$")
        .unwrap()
        .split_once(':')
        .unwrap();
    let stored = b64.decode(keys.split(':').next().unwrap()).unwrap();
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
        password.as_bytes(),
        &b64.decode(salt).unwrap(),
        iterations.parse().unwrap(),
        &mut salted,
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&salted).unwrap();
    mac.update(b"Client Key");
    sha2::Sha256::digest(mac.finalize().into_bytes()).as_slice() == stored.as_slice()
}

pub fn password_of(repo: &crate::support::Repo, slug: &str) -> String {
    let out = repo.run(&["credentials", slug]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let url = text(&out.stdout);
    let after_user = url.trim().split_once("://").unwrap().1;
    after_user
        .split_once('@')
        .unwrap()
        .0
        .split_once(':')
        .unwrap()
        .1
        .to_string()
}

#[test]
fn a_wrong_master_key_changes_nothing_and_a_rotation_rekeys_every_tenant() {
    let pg = Pg::new();
    let mut repo = pg.repo();
    repo.apply();
    let acme = pg.name("acme");
    let old_password = password_of(&repo, "acme");
    let before = verifiers(&pg);
    assert_eq!(before.len(), 3, "{before:?}");
    let state = || {
        pg.query(
            "SELECT h.generation, h.body, (SELECT string_agg(t.slug || ':' || t.generation, ',' ORDER BY t.slug)
             FROM tenant_reconcile.state_tenants t) AS records FROM tenant_reconcile.state_header h",
        )
    };
    let state_before = state();

    // A typo in the CI secret: every command that derives a password refuses it.
    repo.env[1].1 = "another-master-key-0123456789abcdef012345".into();
    for args in [
        &["plan"][..],
        &["apply", "--auto-approve"],
        &["credentials", "acme"],
    ] {
        let out = repo.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("the master key from TENANT_RECONCILE_MASTER_KEY (kid:")
                && err.contains("is not the key this state was applied with (kid:")
                && err.contains("--rotate-master-key"),
            "{args:?}: {err}"
        );
        assert!(text(&out.stdout).is_empty(), "{args:?} printed a plan");
    }
    assert_eq!(verifiers(&pg), before, "no password changed");
    assert_eq!(state(), state_before, "the state did not move");

    // On purpose: the plan shows every role re-keyed, and apply does it.
    let out = repo.run(&["plan", "--rotate-master-key", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert!(plan.contains("the master key changes from kid:"), "{plan}");
    for slug in ["acme", "globex", "initech", "umbrella-labs"] {
        let role = format!("~ {slug}/role\n      ~ password_fingerprint = \"sha256:");
        assert!(plan.contains(&role), "missing {role:?} in:\n{plan}");
    }
    let out = repo.run(&["apply", "--auto-approve", "--rotate-master-key"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    repo.assert_plan_empty();

    let after = verifiers(&pg);
    for (old, new) in before.iter().zip(&after) {
        assert_ne!(old["rolpassword"], new["rolpassword"], "{}", new["rolname"]);
    }
    let new_password = password_of(&repo, "acme");
    assert_ne!(new_password, old_password);
    let stored = after.iter().find(|r| r["rolname"] == json!(acme)).unwrap()["rolpassword"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(verifier_accepts(&stored, &new_password));
    assert!(!verifier_accepts(&stored, &old_password));

    // The old key is now the wrong one.
    repo.env[1].1 = crate::pg::MASTER_KEY.into();
    let out = repo.run(&["plan"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
}

#[test]
fn a_revoked_shared_grant_or_weakened_policy_is_drift_and_apply_repairs_it() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.apply();
    let initech = pg.name("initech");
    let group = format!("{}_shared", pg.prefix);
    let db = pg.db.clone();
    let own_rows = |pg: &Pg| pg.query_as(&initech, &db, "SELECT name FROM tenants_shared.projects");
    assert_eq!(
        own_rows(&pg).unwrap(),
        vec![json!({"name": "Sample project"})]
    );

    pg.exec(&format!(
        "REVOKE ALL ON ALL TABLES IN SCHEMA tenants_shared FROM \"{group}\""
    ));
    let e = own_rows(&pg).unwrap_err();
    assert!(e.contains("permission denied for table projects"), "{e}");
    let out = repo.run(&["plan", "--refresh-only"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("initech/database"),
        "{}",
        text(&out.stdout)
    );
    let out = repo.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2));
    let plan = text(&out.stdout);
    assert!(
        plan.contains("~ initech/database  # changed outside tenant-reconcile")
            && plan.contains("~ access = \"missing\" → \"granted\""),
        "{plan}"
    );
    repo.apply();
    repo.assert_plan_empty();
    assert_eq!(
        own_rows(&pg).unwrap(),
        vec![json!({"name": "Sample project"})]
    );

    // Row-level security weakened: forcing switched off, a policy that lets every row
    // through. Another tenant's row shows to initech until apply puts them back.
    pg.exec(
        "SELECT set_config('app.tenant_id', 'someone-else', false);
         INSERT INTO tenants_shared.projects (name, tenant_id) VALUES ('Other tenant', 'someone-else');
         ALTER TABLE tenants_shared.settings NO FORCE ROW LEVEL SECURITY;
         ALTER POLICY tenant_isolation ON tenants_shared.projects USING (true);",
    );
    assert_eq!(own_rows(&pg).unwrap().len(), 2, "the weakened policy leaks");
    let out = repo.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("~ initech/database"));
    repo.apply();
    repo.assert_plan_empty();
    assert_eq!(
        own_rows(&pg).unwrap(),
        vec![json!({"name": "Sample project"})]
    );
    assert_eq!(
        pg.query(
            "SELECT relname, relforcerowsecurity FROM pg_class
             WHERE relnamespace = 'tenants_shared'::regnamespace AND relkind = 'r' ORDER BY relname"
        ),
        vec![
            json!({"relname": "projects", "relforcerowsecurity": true}),
            json!({"relname": "settings", "relforcerowsecurity": true}),
        ]
    );
}

/// A role's stored verifier and comment, as the server has them.
fn role(pg: &Pg, name: &str) -> Value {
    pg.query(&format!(
        "SELECT rolpassword, shobj_description(oid, 'pg_authid') AS mark FROM pg_authid WHERE rolname = '{name}'"
    ))[0]
        .clone()
}

#[test]
fn a_role_schema_or_database_made_outside_this_state_is_a_conflict_until_imported() {
    let pg = Pg::new();
    let repo = pg.repo();
    let (acme, globex, initech) = (pg.name("acme"), pg.name("globex"), pg.name("initech"));
    // Made by hand before the first apply, as another tool or an operator would.
    pg.exec(&format!(
        "CREATE ROLE \"{initech}\" LOGIN PASSWORD 'set-by-hand';
         CREATE SCHEMA \"{acme}\";
         CREATE TABLE \"{acme}\".notes (body text);
         INSERT INTO \"{acme}\".notes VALUES ('keep me');"
    ));
    pg.exec_on("postgres", &format!("CREATE DATABASE \"{globex}\""));
    let initech_before = role(&pg, &initech);

    let out = repo.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    for expected in [
        format!("! initech/role exists and is not managed by this state (state \"default\"): role {initech} has no mark of ownership"),
        format!("! acme/database exists and is not managed by this state (state \"default\"): schema {acme} has no mark of ownership"),
        format!("! globex/database exists and is not managed by this state (state \"default\"): database {globex} has no mark of ownership"),
        "(nothing of acme is changed; to adopt what exists: tenant-reconcile plan --import acme)".to_string(),
        "3 resources are not this state's: their tenants are left as they are.".to_string(),
    ] {
        assert!(plan.contains(&expected), "missing {expected:?} in:\n{plan}");
    }
    assert!(
        !plan.contains("+ acme/role"),
        "a blocked tenant shows no changes:\n{plan}"
    );

    // Apply fails those tenants only, and changes nothing of theirs.
    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("3 of 4 tenants failed; the other one was applied"),
        "{err}"
    );
    assert!(err.contains("nothing of initech was changed"), "{err}");
    assert_eq!(role(&pg, &initech), initech_before);
    assert_eq!(
        pg.query(&format!(
            "SELECT relname FROM pg_class WHERE relnamespace = '\"{acme}\"'::regnamespace AND relkind = 'r'"
        )),
        vec![json!({"relname": "notes"})]
    );
    assert_eq!(
        pg.query(&format!(
            "SELECT has_database_privilege('public', '{globex}', 'CONNECT') AS open, shobj_description(oid, 'pg_database') AS mark
             FROM pg_database WHERE datname = '{globex}'"
        )),
        vec![json!({"open": true, "mark": null})]
    );
    assert_eq!(
        pg.query("SELECT slug FROM tenant_reconcile.tenants ORDER BY slug"),
        vec![json!({"slug": "umbrella-labs"})]
    );

    // Adopted on purpose: the plan shows each import with what it would change.
    let import = [
        "--import", "acme", "--import", "globex", "--import", "initech",
    ];
    let out = repo.cmd().arg("plan").args(import).output().unwrap();
    let plan = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for expected in [
        "<= initech/role will be imported\n      ~ credentials_version  = 0 → 1\n      + password_fingerprint = (known after apply)",
        "<= acme/database will be imported",
        "~ schema_version = \"\" → \"0002_create_settings\"",
        "<= globex/database will be imported",
        "Plan: 3 to import, ",
    ] {
        assert!(plan.contains(expected), "missing {expected:?} in:\n{plan}");
    }
    let out = repo
        .cmd()
        .args(["apply", "--auto-approve"])
        .args(import)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    repo.assert_plan_empty();

    let mark = role(&pg, &initech)["mark"].as_str().unwrap().to_string();
    assert!(
        mark.starts_with("tenant-reconcile state=default lineage="),
        "{mark}"
    );
    assert_ne!(
        role(&pg, &initech)["rolpassword"],
        initech_before["rolpassword"]
    );
    assert_eq!(
        pg.query(&format!("SELECT body FROM \"{acme}\".notes")),
        vec![json!({"body": "keep me"})],
        "an import keeps what was there"
    );
    // Each carries this state's mark, naming its own tenant.
    let state_mark = mark.split(" tenant=").next().unwrap();
    assert_eq!(
        pg.query(&format!(
            "SELECT obj_description('\"{acme}\"'::regnamespace, 'pg_namespace') LIKE '{state_mark} tenant=%' AS ours,
                    (SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{globex}') LIKE '{state_mark} tenant=%' AS db_ours"
        )),
        vec![json!({"ours": true, "db_ours": true})]
    );
}

#[test]
fn another_states_resources_on_the_same_server_are_conflicts_naming_that_state() {
    let pg = Pg::new();
    let production = pg.repo();
    let named = |pg: &Pg, name: &str| {
        pg.config("").replace(
            "backend = \"postgres\"\n",
            &format!("backend = \"postgres\"\n  name = \"{name}\"\n"),
        )
    };
    production.write("tenant-reconcile.hcl", &named(&pg, "production"));
    production.apply();
    let roles_before: Vec<Value> = ["acme", "globex", "initech", "umbrella-labs"]
        .iter()
        .map(|s| role(&pg, &pg.name(s)))
        .collect();

    // Staging: its own database on the same server, the same (default-like) prefixes.
    let staging_pg = pg.sibling();
    let staging = staging_pg.repo();
    staging.write("tenant-reconcile.hcl", &named(&staging_pg, "staging"));
    let out = staging.run(&["plan"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    for expected in [
        format!(
            "! acme/role exists and is not managed by this state (state \"staging\"): role {} is managed by another state, \"production\"",
            pg.name("acme")
        ),
        format!(
            "! globex/database exists and is not managed by this state (state \"staging\"): database {} is managed by another state, \"production\"",
            pg.name("globex")
        ),
    ] {
        assert!(plan.contains(&expected), "missing {expected:?} in:\n{plan}");
    }
    let out = staging.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("all 4 tenants failed"),
        "{}",
        text(&out.stderr)
    );
    let roles_after: Vec<Value> = ["acme", "globex", "initech", "umbrella-labs"]
        .iter()
        .map(|s| role(&pg, &pg.name(s)))
        .collect();
    assert_eq!(
        roles_after, roles_before,
        "production's roles are untouched"
    );
    production.assert_plan_empty();
}

#[test]
fn state_rm_forgets_an_orphan_and_leaves_everything_it_had() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.apply();
    let acme = pg.name("acme");
    let refused = repo.run(&["state", "rm", "acme"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("tenants/acme.yaml still exists"),
        "{}",
        text(&refused.stderr)
    );

    repo.remove("tenants/acme.yaml");
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(plan.contains("acme is orphaned"), "{plan}");
    let out = repo.run(&["state", "rm", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("Released acme from the state (recorded as released by "),
        "{said}"
    );
    assert!(said.contains("acme/role  left as it is"), "{said}");

    repo.assert_plan_empty();
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(!plan.contains("acme"), "{plan}");
    let show = text(&repo.run(&["show"]).stdout);
    assert!(!show.contains("\nacme "), "{show}");
    assert!(
        show.contains("Released (forgotten with `state rm`"),
        "{show}"
    );
    let json: Value = serde_json::from_slice(&repo.run(&["show", "--json"]).stdout).unwrap();
    assert_eq!(json["released"][0]["slug"], json!("acme"));
    assert!(json["released"][0]["by"].as_str().unwrap().contains('@'));
    // Its data is all still there.
    assert_eq!(
        pg.query(&format!("SELECT count(*) AS n FROM \"{acme}\".projects")),
        vec![json!({"n": 1})]
    );
    assert_eq!(
        pg.count(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = '{acme}'"
        )),
        1
    );
}

#[test]
fn a_failed_tenant_shows_where_and_why_and_its_error_is_said_once() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.apply();
    repo.write(
        "migrations/0003_bad.sql",
        "INSERT INTO projectz (name) VALUES ('x');\n",
    );
    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("Apply finished with errors: all 4 tenants failed."),
        "{err}"
    );
    let line = err
        .lines()
        .find(|l| l.trim_start().starts_with("acme: "))
        .unwrap_or_else(|| panic!("no line for acme in:\n{err}"));
    assert_eq!(
        line.matches("relation \"projectz\" does not exist").count(),
        1,
        "{line}"
    );

    let show = text(&repo.run(&["show"]).stdout);
    assert!(show.contains("FAILED at database (1 attempt)"), "{show}");
    assert!(
        !show.contains("acme/database: migration"),
        "the step is said once:\n{show}"
    );
    assert!(
        show.contains("acme failed at database on ")
            && show.contains("relation \"projectz\" does not exist"),
        "{show}"
    );
    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    let state_show = text(&repo.run(&["state", "show", "acme"]).stdout);
    assert!(
        state_show.contains("last apply:          FAILED at database on ")
            && state_show.contains("(2 attempts in a row)"),
        "{state_show}"
    );
    let json: Value = serde_json::from_slice(&repo.run(&["show", "--json"]).stdout).unwrap();
    assert_eq!(
        json["tenants"]["acme"]["last_failure"]["attempts"],
        json!(2)
    );
    assert_eq!(
        json["tenants"]["acme"]["last_failure"]["step"],
        json!("database")
    );

    repo.remove("migrations/0003_bad.sql");
    repo.apply();
    repo.assert_plan_empty();
    let show = text(&repo.run(&["show"]).stdout);
    assert!(!show.contains("FAILED"), "{show}");
}

#[test]
fn losing_the_state_server_mid_apply_stops_the_run_once_and_a_rerun_converges() {
    use std::io::{BufRead, BufReader};
    let pg = Pg::new();
    let mut repo = pg.repo();
    let tenants = 30;
    for i in 0..tenants {
        repo.write(
            &format!("tenants/bulk-{i:03}.yaml"),
            &format!("slug: bulk-{i:03}\nname: Bulk {i}\nplan: growth\nisolation: schema\nowner:\n  email: o{i}@bulk.example\nregion: eu-west-1\n"),
        );
    }
    // Only this run goes through the proxy; cutting it is the server restarting for it.
    let proxy = crate::cut_proxy::CutProxy::start("127.0.0.1:5432");
    repo.env[0].1 = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port, pg.db);
    let mut child = repo.spawn_apply(2);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for _ in 0..3 {
        lines.next().unwrap().unwrap();
    }
    proxy.cut();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{rest:#?}");
    let said = rest.join("\n");
    assert_eq!(
        said.matches("lost the state while applying").count(),
        1,
        "said once:\n{said}"
    );
    let counts = said
        .split("this run stopped starting tenants (")
        .nth(1)
        .and_then(|rest| rest.split(" not started)").next())
        .unwrap_or_else(|| panic!("no counts in:\n{said}"));
    let not_started: usize = counts.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        not_started > 0,
        "every tenant started after the loss: {counts}"
    );
    let progress = rest.iter().filter(|l| l.starts_with('[')).count();
    assert!(
        progress + 3 < tenants + 4,
        "tenants went on starting after the state was lost:\n{said}"
    );

    repo.apply();
    repo.assert_plan_empty();
    let all = tenants as i64 + 4;
    assert_eq!(
        pg.count("SELECT count(*) FROM tenant_reconcile.tenants"),
        all
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM tenant_reconcile.outbox WHERE type = 'TenantProvisioned'"),
        all,
        "every tenant announced exactly once"
    );
}

#[test]
fn a_bucket_of_this_account_made_outside_this_state_is_a_conflict_until_imported() {
    use aws_sdk_s3::types::{Tag, Tagging};
    let s3 = crate::moto::S3::new();
    let repo = s3.repo("");
    let globex = s3.bucket("globex", "us-east-1");
    // Made by hand in the same account, with a tag of its owner's.
    s3.block_on(s3.client.create_bucket().bucket(&globex).send())
        .unwrap();
    let tagging = Tagging::builder()
        .tag_set(Tag::builder().key("team").value("data").build().unwrap())
        .build()
        .unwrap();
    s3.block_on(
        s3.client
            .put_bucket_tagging()
            .bucket(&globex)
            .tagging(tagging)
            .send(),
    )
    .unwrap();
    let tags_before = s3.tags(&globex);

    let plan = text(&repo.run(&["plan"]).stdout);
    let expected = format!(
        "! globex/bucket exists and is not managed by this state (state \"default\"): bucket {globex} has no mark of ownership"
    );
    assert!(plan.contains(&expected), "missing {expected:?} in:\n{plan}");
    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("1 of 4 tenants failed; the other 3 were applied"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(s3.tags(&globex), tags_before, "nothing of it was changed");
    assert_eq!(s3.versioning(&globex), None);

    let out = repo.run(&["plan", "--import", "globex"]);
    let plan = text(&out.stdout);
    assert!(plan.contains("<= globex/bucket will be imported"), "{plan}");
    assert!(plan.contains("~ versioning"), "{plan}");
    let out = repo.run(&["apply", "--auto-approve", "--import", "globex"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    repo.assert_plan_empty();
    let tags = s3.tags(&globex);
    assert_eq!(tags["team"], "data", "its owner's tags are kept");
    assert_eq!(tags["managed-by"], "tenant-reconcile");
    assert!(
        tags["tenant-reconcile-state"].starts_with("tenant-reconcile state=default lineage="),
        "{tags:?}"
    );
    // Every bucket this state made carries its mark, naming the bucket's own tenant.
    let acme = s3.bucket("acme", "eu-west-1");
    let state_mark = |m: &str| m.split(" tenant=").next().unwrap().to_string();
    let acme_mark = &s3.tags(&acme)["tenant-reconcile-state"];
    assert_eq!(
        state_mark(acme_mark),
        state_mark(&tags["tenant-reconcile-state"])
    );
    assert_ne!(acme_mark, &tags["tenant-reconcile-state"]);
}

#[test]
fn a_rendered_file_left_by_someone_else_is_a_conflict_until_imported() {
    let repo = crate::support::Repo::example();
    let file = ".tenant-reconcile/rendered/acme/namespace.yaml";
    repo.write(file, "# written by hand\nkind: Namespace\n");
    insta::assert_snapshot!(
        "conflict_plan",
        text(&repo.run(&["plan", "--tenant", "acme"]).stdout)
    );
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("! acme/file/namespace.yaml exists and is not managed by this state (state \"default\"): file acme/namespace.yaml has no mark of ownership"),
        "{plan}"
    );
    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    let read = || std::fs::read_to_string(repo.path().join(file)).unwrap();
    assert_eq!(read(), "# written by hand\nkind: Namespace\n");

    // Adopted through the config this time, where a pull request shows it; a slug
    // without a tenant file there is refused first.
    repo.write("tenant-reconcile.hcl", "import = [\"acme\", \"hooli\"]\n");
    let out = repo.run(&["plan"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .contains("tenant-reconcile.hcl: import hooli: there is no tenants/hooli.yaml"),
        "{}",
        text(&out.stderr)
    );
    repo.write("tenant-reconcile.hcl", "import = [\"acme\"]\n");
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("<= acme/file/namespace.yaml will be imported")
            && plan.contains("-# written by hand"),
        "{plan}"
    );
    let out = repo.run(&["apply", "--auto-approve"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    repo.assert_plan_empty();
    assert!(read().starts_with("# Rendered by tenant-reconcile for tenant acme"));
    let mark = std::fs::read_to_string(
        repo.path()
            .join(".tenant-reconcile/rendered/acme/.tenant-reconcile-state"),
    )
    .unwrap();
    assert!(
        mark.starts_with("tenant-reconcile state=default lineage="),
        "{mark}"
    );
    assert!(mark.ends_with("\nnamespace.yaml\n"), "{mark}");

    // A folder of ours does not make every file in it ours: only those the mark lists.
    repo.remove("tenant-reconcile.hcl");
    repo.write("templates/files/extra.yaml.tera", "kind: ConfigMap\n");
    repo.write(".tenant-reconcile/rendered/acme/extra.yaml", "# by hand\n");
    let plan = text(&repo.run(&["plan", "--tenant", "acme"]).stdout);
    assert!(
        plan.contains("! acme/file/extra.yaml exists and is not managed by this state"),
        "{plan}"
    );
}

#[test]
fn a_state_from_before_keys_were_recorded_still_refuses_a_wrong_key() {
    let mut repo = crate::support::Repo::example();
    repo.env = vec![(
        "TENANT_RECONCILE_MASTER_KEY".into(),
        crate::pg::MASTER_KEY.into(),
    )];
    repo.apply();
    assert!(repo.state_json()["master_key_id"]
        .as_str()
        .unwrap()
        .starts_with("kid:"));
    repo.edit_state(|state| {
        state.as_object_mut().unwrap().remove("master_key_id");
    });

    repo.env[0].1 = "another-master-key-0123456789abcdef012345".into();
    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("does not derive the password recorded for")
            && err.contains("nothing was done"),
        "{err}"
    );
    assert!(
        repo.state_json().get("master_key_id").is_none(),
        "the state did not move"
    );

    // The right key passes, and the state learns it.
    repo.env[0].1 = crate::pg::MASTER_KEY.into();
    repo.assert_plan_empty();
    repo.apply();
    assert!(repo.state_json()["master_key_id"]
        .as_str()
        .unwrap()
        .starts_with("kid:"));
}

#[test]
fn a_database_created_but_not_yet_marked_is_ours_when_its_intent_was_recorded() {
    let pg = Pg::new();
    let repo = pg.repo();
    // The state in a local file, so the test can put it as a kill would leave it.
    repo.write(
        "tenant-reconcile.hcl",
        &pg.config("")
            .replace("state {\n  backend = \"postgres\"\n}\n", ""),
    );
    repo.apply();
    let globex = pg.name("globex");
    let edit = |f: &dyn Fn(&mut Value)| repo.edit_state(|state| f(&mut state["tenants"]["globex"]));
    // As a kill between CREATE DATABASE and COMMENT ON DATABASE leaves things: the database
    // unmarked, and not recorded.
    pg.exec_on(
        "postgres",
        &format!("COMMENT ON DATABASE \"{globex}\" IS NULL"),
    );
    edit(&|t| {
        t["resources"].as_object_mut().unwrap().remove("database");
    });
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("! globex/database exists and is not managed by this state"),
        "without the intent it is not known to be ours:\n{plan}"
    );

    // The intent apply records before the create makes it ours, to be marked.
    edit(&|t| t["creating"] = json!(["database"]));
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("~ globex/database") && plan.contains("+ managed_by = \"state default\""),
        "{plan}"
    );
    assert!(!plan.contains('!'), "{plan}");
    repo.apply();
    repo.assert_plan_empty();
    let mark = pg.query(&format!(
        "SELECT shobj_description(oid, 'pg_database') AS mark FROM pg_database WHERE datname = '{globex}'"
    ))[0]["mark"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        mark.starts_with("tenant-reconcile state=default lineage="),
        "{mark}"
    );
    let state = repo.state_json();
    assert!(
        state["tenants"]["globex"].get("creating").is_none(),
        "the intent is done"
    );
}

#[test]
fn log_lines_read_as_sentences_follow_the_colour_choice_and_come_as_json_for_machines() {
    let repo = crate::support::Repo::example();
    let logged = |extra: &[(&str, &str)], args: &[&str]| {
        let mut cmd = repo.cmd();
        cmd.env("TENANT_RECONCILE_LOG", "debug");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = cmd.args(args).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    // NO_COLOR is set for every command of the test repo.
    let plain = logged(&[], &["plan"]);
    let line = plain
        .lines()
        .find(|l| l.contains("loaded the repo"))
        .unwrap_or_else(|| panic!("no debug line in:\n{plain}"));
    assert!(line.starts_with("debug: loaded the repo ("), "{line}");
    assert!(line.contains("tenants: 4"), "{line}");
    assert!(
        !plain.contains("tenant_reconcile::"),
        "no module paths:\n{plain}"
    );
    assert!(
        !plain.contains('\u{1b}'),
        "no colour with NO_COLOR:\n{plain}"
    );
    let never = logged(&[("NO_COLOR", "")], &["--color", "never", "plan"]);
    assert!(
        !never.contains('\u{1b}'),
        "no colour with --color never:\n{never}"
    );
    let always = logged(&[], &["--color", "always", "plan"]);
    assert!(
        always.contains("\u{1b}["),
        "colour when asked for:\n{always}"
    );

    let json = logged(&[("TENANT_RECONCILE_LOG_FORMAT", "json")], &["plan"]);
    let events: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["message"] == json!("loaded the repo") && e["level"] == json!("DEBUG")),
        "{json}"
    );
    let out = repo
        .cmd()
        .env("TENANT_RECONCILE_LOG_FORMAT", "yaml")
        .arg("plan")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is not a log format; use text or json"));
}

#[test]
fn a_resource_made_after_the_plan_is_refused_as_apply_reaches_it() {
    let pg = Pg::new();
    let repo = pg.repo();
    let plan = repo.path().join("tenants.plan");
    let out = repo
        .cmd()
        .args(["plan", "--out"])
        .arg(&plan)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Made by hand between the plan and its apply.
    let (initech, globex) = (pg.name("initech"), pg.name("globex"));
    pg.exec(&format!(
        "CREATE ROLE \"{initech}\" LOGIN PASSWORD 'set-by-hand'"
    ));
    pg.exec_on("postgres", &format!("CREATE DATABASE \"{globex}\""));
    let initech_before = role(&pg, &initech);

    let out = repo.cmd().arg("apply").arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "the role {initech} exists and is not managed by this state (state \"default\"); it was left as it is"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "the database {globex} exists and is not managed by this state"
        )),
        "{err}"
    );
    assert!(err.contains("2 of 4 tenants failed"), "{err}");
    assert_eq!(role(&pg, &initech), initech_before);
    assert_eq!(
        pg.query(&format!(
            "SELECT has_database_privilege('public', '{globex}', 'CONNECT') AS open, shobj_description(oid, 'pg_database') AS mark
             FROM pg_database WHERE datname = '{globex}'"
        )),
        vec![json!({"open": true, "mark": null})]
    );
    // Now the plan knows them, and says so.
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(plan.contains("! initech/role exists"), "{plan}");
    assert!(plan.contains("! globex/database exists"), "{plan}");
}

#[test]
fn a_bucket_made_after_the_plan_is_refused_as_apply_reaches_it() {
    let s3 = crate::moto::S3::new();
    let repo = s3.repo("");
    let plan = repo.path().join("tenants.plan");
    let out = repo
        .cmd()
        .args(["plan", "--out"])
        .arg(&plan)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // In us-east-1 CreateBucket answers success for a bucket the account already has, so
    // only looking first tells it from a new one.
    let globex = s3.bucket("globex", "us-east-1");
    s3.block_on(s3.client.create_bucket().bucket(&globex).send())
        .unwrap();
    let out = repo.cmd().arg("apply").arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "the bucket {globex} exists and is not managed by this state (state \"default\"); it was left as it is"
        )),
        "{err}"
    );
    assert!(s3.tags(&globex).is_empty(), "nothing was written to it");
    assert_eq!(s3.versioning(&globex), None);
}

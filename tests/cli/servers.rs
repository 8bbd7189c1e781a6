//! Several Postgres servers: each new tenant is placed on a server of its region, by the
//! labels its plan asks for and under every server's cap, the least loaded first; its data
//! is made there and nowhere else; a tenant no server takes is refused with the reason while
//! the rest are applied; and a server added later moves nobody. Two servers are the test's
//! own (`initdb`), the third is the shared one at 127.0.0.1:5432, in the test's database.

use crate::own_pg::OwnPg;
use crate::pg::Pg;
use crate::support::text;

/// A tenant file of the example's `growth` plan (schema mode) in `region`, with `extra`
/// lines.
fn tenant(slug: &str, region: &str, extra: &str) -> String {
    format!("slug: {slug}\nname: {slug}\nplan: growth\nowner:\n  email: o@{slug}.example\nregion: {region}\n{extra}")
}

fn server_block(name: &str, url: &str, region: &str, cap: u32, extra: &str) -> String {
    format!(
        "postgres_server \"{name}\" {{\n  url = \"{url}\"\n  region = \"{region}\"\n  cap = {cap}\n{extra}}}\n"
    )
}

/// The example repo on `pg`'s database with its tenants taken out: each test writes its own.
fn own_tenants_only(pg: &Pg) -> crate::support::Repo {
    let repo = pg.repo();
    for slug in ["acme", "globex", "initech", "umbrella-labs"] {
        repo.remove(&format!("tenants/{slug}.yaml"));
    }
    repo
}

/// Migrations of its own whose tables have primary keys, as a product's would: a tenant's
/// tables can then be published for a move by replication.
fn keyed_tables(repo: &crate::support::Repo) {
    repo.write(
        "migrations/0001_create_projects.sql",
        "CREATE TABLE IF NOT EXISTS projects (\n  id BIGSERIAL PRIMARY KEY,\n  name TEXT NOT NULL,\n  description TEXT\n);\n",
    );
    repo.write(
        "migrations/0002_create_settings.sql",
        "CREATE TABLE IF NOT EXISTS settings (\n  id BIGSERIAL PRIMARY KEY,\n  key TEXT NOT NULL,\n  value TEXT NOT NULL\n);\n",
    );
}

/// The config of `pg` with the `servers` blocks.
fn on_servers(repo: &crate::support::Repo, pg: &Pg, servers: &str) {
    repo.write(
        "tenant-reconcile.hcl",
        &format!("{}{servers}", pg.config("")),
    );
}

#[test]
fn tenants_are_placed_by_region_and_cap_and_a_new_server_moves_nobody() {
    let (eu1, eu2) = (OwnPg::start(), OwnPg::start());
    let pg = Pg::new();
    let repo = own_tenants_only(&pg);
    for slug in ["te1", "te2", "te3", "te4", "te5"] {
        repo.write(
            &format!("tenants/{slug}.yaml"),
            &tenant(slug, "eu-west-1", ""),
        );
    }
    repo.write("tenants/tu1.yaml", &tenant("tu1", "us-east-1", ""));
    repo.write("tenants/far.yaml", &tenant("far", "ap-south-1", ""));
    let servers = [
        server_block("eu-1", &eu1.url("postgres"), "eu-west-1", 2, ""),
        server_block("eu-2", &eu2.url("postgres"), "eu-west-1", 4, ""),
        server_block(
            "us-1",
            &pg.url(),
            "us-east-1",
            5,
            "  isolation = [\"schema\"]\n",
        ),
    ]
    .concat();
    on_servers(&repo, &pg, &servers);

    // A pin to a server the config does not have is a problem of the tenant file.
    repo.write(
        "tenants/lost.yaml",
        &tenant("lost", "eu-west-1", "server: eu-9\n"),
    );
    let validate = repo.run(&["validate"]);
    let err = text(&validate.stderr);
    assert_eq!(validate.status.code(), Some(1), "{err}");
    assert!(
        err.contains("tenants/lost.yaml:7:")
            && err.contains("no Postgres server is called \"eu-9\"")
            && err.contains("servers in tenant-reconcile.hcl: eu-1, eu-2, us-1"),
        "{err}"
    );
    // So is a pin to a server of another region.
    repo.write(
        "tenants/lost.yaml",
        &tenant("lost", "eu-west-1", "server: us-1\n"),
    );
    let validate = repo.run(&["validate"]);
    let err = text(&validate.stderr);
    assert_eq!(validate.status.code(), Some(1), "{err}");
    assert!(
        err.contains("tenants/lost.yaml:7:")
            && err.contains("the Postgres server \"us-1\" is in us-east-1, and the tenant's region is eu-west-1"),
        "{err}"
    );
    repo.remove("tenants/lost.yaml");

    // The plan says where each goes, and why one goes nowhere.
    let plan = repo.run(&["plan"]);
    let out = text(&plan.stdout);
    assert!(plan.status.success(), "{out}{}", text(&plan.stderr));
    for line in [
        "+ te1/placement  # eu-west-1, 1 of 2 tenants",
        "+ te2/placement  # eu-west-1, 1 of 4 tenants",
        "+ te4/placement  # eu-west-1, 2 of 2 tenants",
        "+ tu1/placement  # us-east-1, 1 of 5 tenants",
        "# far is left as it is: no Postgres server takes it",
        "! far/placement: no Postgres server is in its region, ap-south-1: a tenant's data stays in its region",
        "1 tenant no Postgres server takes: left as it is.",
    ] {
        assert!(out.contains(line), "{line:?} not in:\n{out}");
    }

    // Applied: every other tenant is provisioned, and the one no server takes fails.
    let apply = repo.run(&["apply", "--auto-approve"]);
    let err = text(&apply.stderr);
    assert_eq!(apply.status.code(), Some(1), "{err}");
    assert!(
        err.contains("far: no Postgres server is in its region, ap-south-1")
            && err.contains("nothing of far was changed"),
        "{err}"
    );
    // Each tenant's role is on the server it was placed on, and on no other. The least
    // loaded by share of its cap goes first: 1 of 2 is as full as 2 of 4, and then the one
    // with fewer tenants takes it.
    let role = |slug: &str| pg.name(slug);
    assert_eq!(eu1.roles(&pg.prefix), ["te1", "te4"].map(role));
    assert_eq!(eu2.roles(&pg.prefix), ["te2", "te3", "te5"].map(role));
    let on_shared: Vec<String> = pg
        .query(&format!(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, '{}') ORDER BY 1",
            pg.prefix
        ))
        .iter()
        .map(|r| r["rolname"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(on_shared, [role("tu1")]);
    // The catalog says the same.
    let placed = pg.query(&format!(
        "SELECT slug, server FROM {}.placements ORDER BY slug",
        "tenant_reconcile"
    ));
    let placed: Vec<(String, String)> = placed
        .iter()
        .map(|r| {
            (
                r["slug"].as_str().unwrap().into(),
                r["server"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        placed,
        [
            ("te1", "eu-1"),
            ("te2", "eu-2"),
            ("te3", "eu-2"),
            ("te4", "eu-1"),
            ("te5", "eu-2"),
            ("tu1", "us-1")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    // The tenant reads its own tables on its server, as itself.
    let projects = eu1
        .query_as(
            &role("te1"),
            "postgres",
            &format!("SELECT count(*) AS n FROM {}.projects", role("te1")),
        )
        .unwrap();
    assert_eq!(projects[0]["n"], 1);
    // Its credentials name its server.
    let creds = repo.run(&["credentials", "te1"]);
    assert!(
        text(&creds.stdout).contains(&format!("@127.0.0.1:{}/postgres?", eu1.port)),
        "{}",
        text(&creds.stdout)
    );

    // One room is left, on eu-2: te6 takes it; te7, pinned to the full eu-1, and te8 after
    // te6 are refused with each server's reason, and the rest is applied.
    repo.write("tenants/te6.yaml", &tenant("te6", "eu-west-1", ""));
    repo.write(
        "tenants/te7.yaml",
        &tenant("te7", "eu-west-1", "server: eu-1\n"),
    );
    repo.write("tenants/te8.yaml", &tenant("te8", "eu-west-1", ""));
    repo.remove("tenants/far.yaml");
    let apply = repo.run(&["apply", "--auto-approve"]);
    let err = text(&apply.stderr);
    assert_eq!(apply.status.code(), Some(1), "{err}");
    for refused in [
        "te7: no Postgres server in eu-west-1 takes it: eu-1 is full (2 of 2 tenants)",
        "te8: no Postgres server in eu-west-1 takes it: eu-1 is full (2 of 2 tenants); eu-2 is full (4 of 4 tenants)",
    ] {
        assert!(err.contains(refused), "{refused:?} not in:\n{err}");
    }
    assert_eq!(
        eu2.roles(&pg.prefix),
        ["te2", "te3", "te5", "te6"].map(role)
    );

    // A server added later takes them, te7 pinned to it now, and moves nobody else.
    let eu3 = OwnPg::start();
    repo.write(
        "tenants/te7.yaml",
        &tenant("te7", "eu-west-1", "server: eu-3\n"),
    );
    repo.write(
        "tenant-reconcile.hcl",
        &format!(
            "{}{servers}{}",
            pg.config(""),
            server_block("eu-3", &eu3.url("postgres"), "eu-west-1", 10, "")
        ),
    );
    let plan = repo.run(&["plan"]);
    let out = text(&plan.stdout);
    for line in [
        "+ te7/placement  # eu-west-1, 1 of 10 tenants",
        "+ te8/placement  # eu-west-1, 2 of 10 tenants",
    ] {
        assert!(out.contains(line), "{line:?} not in:\n{out}");
    }
    repo.apply();
    assert_eq!(eu3.roles(&pg.prefix), ["te7", "te8"].map(role));
    assert_eq!(eu1.roles(&pg.prefix), ["te1", "te4"].map(role));
    repo.assert_plan_empty();
}

#[test]
fn check_export_and_an_erasure_reach_each_tenant_on_its_server() {
    let (eu1, eu2) = (OwnPg::start(), OwnPg::start());
    let pg = Pg::new();
    let repo = own_tenants_only(&pg);
    repo.write("tenants/one.yaml", &tenant("one", "eu-west-1", ""));
    repo.write("tenants/two.yaml", &tenant("two", "eu-west-1", ""));
    repo.write(
        "tenants/rows.yaml",
        &tenant("rows", "eu-west-1", "isolation: shared\n"),
    );
    let servers = [
        server_block("eu-1", &eu1.url("postgres"), "eu-west-1", 1, ""),
        server_block("eu-2", &eu2.url("postgres"), "eu-west-1", 5, ""),
    ]
    .concat();
    on_servers(&repo, &pg, &servers);
    repo.apply();
    let role = |slug: &str| pg.name(slug);
    assert_eq!(eu1.roles(&pg.prefix), [role("one")]);
    // eu-2 holds the shared group too.
    let on_eu2 = eu2.roles(&pg.prefix);
    assert!(
        on_eu2.contains(&role("rows")) && on_eu2.contains(&role("two")),
        "{on_eu2:?}"
    );

    // `check` runs each tenant's smoke tests on its own server: all healthy.
    let check = repo.run(&["check", "--format", "json"]);
    assert!(
        check.status.success(),
        "{}{}",
        text(&check.stdout),
        text(&check.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    let healthy: Vec<(&str, bool)> = report
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["slug"].as_str().unwrap(), t["healthy"] == true))
        .collect();
    assert_eq!(healthy, [("one", true), ("rows", true), ("two", true)]);

    // An export reads the tenant's rows where they are.
    let to = tempfile::tempdir().unwrap();
    let export = repo
        .cmd()
        .args(["export", "rows", "--to"])
        .arg(to.path().join("rows"))
        .output()
        .unwrap();
    assert!(export.status.success(), "{}", text(&export.stderr));
    let manifest = crate::offboarding::verified(&to.path().join("rows"));
    assert_eq!(manifest["tables"][0]["rows"], 1, "{manifest:#}");

    // Given a database of its own, it leaves its schema behind on its server, which the
    // state knows is there.
    repo.write(
        "tenants/one.yaml",
        &tenant("one", "eu-west-1", "isolation: database\n"),
    );
    repo.apply_with(&["--allow-replace"]);
    let shown = text(&repo.run(&["state", "show", "one"]).stdout);
    assert!(
        shown.contains(&format!("one/database/retired/schema-{}@eu-1", role("one"))),
        "{shown}"
    );

    // An erasure exports it (the schema left behind too, read on its server), then drops
    // its database, that schema and its role on its server, audited.
    crate::offboarding::erase(&repo, "one", true);
    repo.apply();
    repo.apply();
    assert!(
        eu1.roles(&pg.prefix).is_empty(),
        "{:?}",
        eu1.roles(&pg.prefix)
    );
    let databases = eu1
        .query_as(
            "postgres",
            "postgres",
            &format!(
                "SELECT datname FROM pg_database WHERE datname = '{}'",
                role("one")
            ),
        )
        .unwrap();
    assert!(databases.is_empty(), "{databases:?}");
    let schemas = eu1
        .query_as(
            "postgres",
            "postgres",
            &format!(
                "SELECT nspname FROM pg_namespace WHERE nspname = '{}'",
                role("one")
            ),
        )
        .unwrap();
    assert!(schemas.is_empty(), "{schemas:?}");
    let audited = pg.count(
        "SELECT count(*) FROM tenant_reconcile.deletion_audit WHERE slug = 'one' AND purged_at IS NOT NULL",
    );
    assert!(audited > 0);
    // A purged tenant takes no room on its server any more.
    assert_eq!(
        pg.count("SELECT count(*) FROM tenant_reconcile.placements WHERE slug = 'one'"),
        0
    );
    repo.assert_plan_empty();
}

#[test]
fn tenants_made_before_servers_were_named_are_recorded_on_the_postgres_blocks_own_server() {
    let eu1 = OwnPg::start();
    let pg = Pg::new();
    let repo = own_tenants_only(&pg);
    repo.write("tenants/oldco.yaml", &tenant("oldco", "eu-west-1", ""));
    repo.write(
        "tenants/oldshared.yaml",
        &tenant("oldshared", "eu-west-1", "isolation: shared\n"),
    );
    repo.apply();
    let oldco = pg.name("oldco");
    pg.query_as(
        &oldco,
        &pg.db,
        &format!("INSERT INTO {oldco}.projects (name) SELECT 'p' || g FROM generate_series(1, 200) g RETURNING 1"),
    )
    .unwrap();
    let before = repo.fingerprint();
    let eu1_block = server_block("eu-1", &eu1.url("postgres"), "eu-west-1", 10, "");

    // With no block for the postgres block's own server, placing them elsewhere would
    // build them anew there, empty: each is refused, and nothing changes.
    on_servers(&repo, &pg, &eu1_block);
    let apply = repo.run(&["apply", "--auto-approve"]);
    let err = text(&apply.stderr);
    assert_eq!(apply.status.code(), Some(1), "{err}");
    for slug in ["oldco", "oldshared"] {
        assert!(
            err.contains(&format!("{slug}: its data is on the postgres block's server, from before the config named servers, and no postgres_server block is that server (one without url or url_env is")),
            "{slug}: {err}"
        );
    }
    assert!(
        eu1.roles(&pg.prefix).is_empty(),
        "{:?}",
        eu1.roles(&pg.prefix)
    );
    assert_eq!(repo.fingerprint(), before, "nothing of theirs changed");

    // A block without a URL is that server: they are recorded on it as they are.
    let main = "postgres_server \"main\" {\n  region = \"eu-west-1\"\n  cap = 100\n}\n";
    on_servers(&repo, &pg, &format!("{main}{eu1_block}"));
    let plan = text(&repo.run(&["plan"]).stdout);
    for line in [
        "+ oldco/placement  # its data is there already: eu-west-1, 1 of 100 tenants",
        "+ oldshared/placement  # its data is there already: eu-west-1, 2 of 100 tenants",
    ] {
        assert!(plan.contains(line), "{line}\nnot in\n{plan}");
    }
    assert!(
        !plan.contains("oldco/role") && !plan.contains("oldco/database"),
        "{plan}"
    );
    repo.apply();
    let placed = pg.query("SELECT slug, server FROM tenant_reconcile.placements ORDER BY slug");
    assert_eq!(
        placed,
        [
            serde_json::json!({"slug": "oldco", "server": "main"}),
            serde_json::json!({"slug": "oldshared", "server": "main"}),
        ]
    );
    assert!(
        eu1.roles(&pg.prefix).is_empty(),
        "{:?}",
        eu1.roles(&pg.prefix)
    );
    repo.assert_plan_empty();

    // Its data is in its region: a file that now names another region, where no server
    // is, is refused with the reason, and nothing of it is done.
    repo.write(
        "tenants/oldshared.yaml",
        &tenant("oldshared", "us-east-1", "isolation: shared\n"),
    );
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("! oldshared/placement: its data is on main, in eu-west-1, and its file says us-east-1: no Postgres server is in its region, us-east-1"),
        "{plan}"
    );
    repo.write(
        "tenants/oldshared.yaml",
        &tenant("oldshared", "eu-west-1", "isolation: shared\n"),
    );

    // From there, a pin moves one as any placed tenant moves, every row with it.
    repo.write(
        "tenants/oldco.yaml",
        &tenant("oldco", "eu-west-1", "server: eu-1\n"),
    );
    repo.apply();
    let rows = eu1
        .query_as(
            &oldco,
            "postgres",
            &format!("SELECT count(*) AS n FROM {oldco}.projects"),
        )
        .unwrap();
    assert_eq!(rows[0]["n"], 201);
    assert!(
        pg.query_as(&oldco, &pg.db, "SELECT 1").is_err(),
        "the copy on the postgres block's server is fenced"
    );
    repo.assert_plan_empty();

    // Its role dropped by hand on eu-1, where it is alone: the plan puts back that, and
    // sees nothing wrong with the tenant on the other server.
    eu1.exec(&format!(
        "REASSIGN OWNED BY {oldco} TO postgres; DROP OWNED BY {oldco}; DROP ROLE {oldco}"
    ));
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(plan.contains("+ oldco/role"), "{plan}");
    assert!(!plan.contains("oldshared"), "{plan}");
    repo.apply();
    repo.assert_plan_empty();
}

#[test]
fn a_server_filled_by_another_run_since_the_plan_was_made_takes_no_more() {
    let eu1 = OwnPg::start();
    let pg = Pg::new();
    let repo = own_tenants_only(&pg);
    for slug in ["aaa", "bbb"] {
        repo.write(
            &format!("tenants/{slug}.yaml"),
            &tenant(slug, "eu-west-1", ""),
        );
    }
    repo.write("tenants/ccc.yaml", &tenant("ccc", "us-east-1", ""));
    let servers = [
        server_block("eu-1", &eu1.url("postgres"), "eu-west-1", 1, ""),
        server_block("us-1", &pg.url(), "us-east-1", 5, ""),
    ]
    .concat();
    on_servers(&repo, &pg, &servers);
    // A state to plan against, then a plan of aaa alone, which finds eu-1 empty.
    repo.apply_with(&["--tenant", "ccc"]);
    let saved = repo.path().join("aaa.plan");
    let plan = repo.run(&["plan", "--tenant", "aaa", "--out", saved.to_str().unwrap()]);
    assert!(
        text(&plan.stdout).contains("+ aaa/placement  # eu-west-1, 1 of 1 tenants"),
        "{}{}",
        text(&plan.stdout),
        text(&plan.stderr)
    );
    repo.apply_with(&["--tenant", "bbb"]);
    // The saved plan's placement finds the server full, and nothing of aaa is made.
    let apply = repo.run(&["apply", saved.to_str().unwrap()]);
    let err = text(&apply.stderr);
    assert_eq!(apply.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the Postgres server eu-1 is full (1 of 1 tenants), filled by another run since this plan was made"),
        "{err}"
    );
    assert_eq!(eu1.roles(&pg.prefix), [pg.name("bbb")]);
    // A new plan says so before anything is tried.
    let plan = repo.run(&["plan"]);
    assert!(
        text(&plan.stdout).contains("! aaa/placement: no Postgres server in eu-west-1 takes it: eu-1 is full (1 of 1 tenants)"),
        "{}",
        text(&plan.stdout)
    );
    repo.remove("tenants/aaa.yaml");
    repo.assert_plan_empty();
}

#[test]
fn a_tenant_pinned_to_another_server_moves_there_with_every_row() {
    let (eu1, eu2) = (OwnPg::start(), OwnPg::start());
    let pg = Pg::new();
    let repo = own_tenants_only(&pg);
    let pinned = |to: &str| {
        repo.write(
            "tenants/mover.yaml",
            &tenant("mover", "eu-west-1", &format!("server: {to}\n")),
        );
        repo.write(
            "tenants/sharer.yaml",
            &tenant(
                "sharer",
                "eu-west-1",
                &format!("isolation: shared\nserver: {to}\n"),
            ),
        );
        repo.write(
            "tenants/owndb.yaml",
            &tenant(
                "owndb",
                "eu-west-1",
                &format!("isolation: database\nserver: {to}\n"),
            ),
        );
    };
    pinned("eu-1");
    keyed_tables(&repo);
    let servers = [
        server_block("eu-1", &eu1.url("postgres"), "eu-west-1", 10, ""),
        server_block(
            "eu-2",
            &eu2.url("postgres"),
            "eu-west-1",
            10,
            "  labels = { zone = \"b\" }\n",
        ),
    ]
    .concat();
    on_servers(&repo, &pg, &servers);
    // A rendered file that names the tenant's server.
    repo.write(
        "templates/files/db.env.tera",
        "PGSERVER={{ server.name }}\nREGION={{ server.region }}\nZONE={{ server.labels.zone | default(value='-') }}\n",
    );
    let db_env =
        || std::fs::read_to_string(repo.state_dir().join("rendered/mover/db.env")).unwrap();
    repo.apply();
    assert_eq!(db_env(), "PGSERVER=eu-1\nREGION=eu-west-1\nZONE=-\n");
    let (mover, sharer, owndb) = (pg.name("mover"), pg.name("sharer"), pg.name("owndb"));
    // Rows of their own, written as themselves, beside their seed rows.
    eu1.query_as(
        &mover,
        "postgres",
        &format!("INSERT INTO {mover}.projects (name) SELECT 'p' || g FROM generate_series(1, 1000) g RETURNING 1"),
    )
    .unwrap();
    eu1.query_as(
        &sharer,
        "postgres",
        "INSERT INTO tenants_shared.settings (key, value) VALUES ('theme', 'dark') RETURNING 1",
    )
    .unwrap();
    eu1.query_as(
        &owndb,
        &owndb,
        "INSERT INTO projects (name) SELECT 'p' || g FROM generate_series(1, 500) g RETURNING 1",
    )
    .unwrap();
    let in_own_db = |server: &OwnPg, role: &str| -> Result<i64, String> {
        let rows = server.query_as(role, &owndb, "SELECT count(*) AS n FROM projects")?;
        Ok(rows[0]["n"].as_i64().unwrap())
    };
    assert_eq!(in_own_db(&eu1, &owndb), Ok(501));
    let counted = |server: &OwnPg, role: &str, table: &str| -> Result<i64, String> {
        let rows = server.query_as(
            role,
            "postgres",
            &format!("SELECT count(*) AS n FROM {table}"),
        )?;
        Ok(rows[0]["n"].as_i64().unwrap())
    };
    let projects = format!("{mover}.projects");
    assert_eq!(counted(&eu1, &mover, &projects), Ok(1001));
    assert_eq!(counted(&eu1, &sharer, "tenants_shared.settings"), Ok(3));

    // Pinned to eu-2: the plan shows the move, and apply carries it out.
    pinned("eu-2");
    let plan = repo.run(&["plan"]);
    let out = text(&plan.stdout);
    assert!(
        out.contains("~ mover/placement  # moves eu-1 → eu-2: eu-west-1, 1 of 10 tenants; 2 tables, 1,003 rows, by a copy under a fence, its writes paused for the copy (about "),
        "{out}"
    );
    insta::with_settings!({filters => vec![
        (r"t[0-9a-f]{10}_", "t_"),
        (r"about [0-9,]+ rows", "about [N] rows"),
    ]}, {
        insta::assert_snapshot!("tenants_moved_between_servers", out);
    });
    repo.apply();
    // The file that names its server is rendered anew.
    assert_eq!(db_env(), "PGSERVER=eu-2\nREGION=eu-west-1\nZONE=b\n");
    // Every row is on eu-2, read there by the tenant itself.
    assert_eq!(counted(&eu2, &mover, &projects), Ok(1001));
    assert_eq!(counted(&eu2, &sharer, "tenants_shared.settings"), Ok(3));
    assert_eq!(in_own_db(&eu2, &owndb), Ok(501));
    // The old copies are kept, fenced: no login, the data still there.
    assert_eq!(in_own_db(&eu1, "postgres"), Ok(501));
    for role in [&mover, &sharer, &owndb] {
        let refused = eu1.query_as(role, "postgres", "SELECT 1").unwrap_err();
        assert!(
            refused.contains("not permitted to log in"),
            "{role}: {refused}"
        );
    }
    assert_eq!(counted(&eu1, "postgres", &projects), Ok(1001));
    // The catalog's epoch counts the move; the credentials name the new server.
    let placed =
        pg.query("SELECT slug, server, epoch FROM tenant_reconcile.placements ORDER BY slug");
    assert_eq!(
        placed,
        [
            serde_json::json!({"slug": "mover", "server": "eu-2", "epoch": 2}),
            serde_json::json!({"slug": "owndb", "server": "eu-2", "epoch": 2}),
            serde_json::json!({"slug": "sharer", "server": "eu-2", "epoch": 2}),
        ]
    );
    // The product hears where each now lives.
    let moved = pg.query(
        "SELECT payload->>'slug' AS slug, payload->'detail' AS detail FROM tenant_reconcile.outbox
         WHERE type = 'TenantMoved' ORDER BY 1",
    );
    assert_eq!(
        moved,
        ["mover", "owndb", "sharer"].map(|slug| {
            serde_json::json!({"slug": slug, "detail": {"from": "eu-1", "to": "eu-2"}})
        })
    );
    let creds = repo.run(&["credentials", "mover"]);
    assert!(
        text(&creds.stdout).contains(&format!("@127.0.0.1:{}/postgres?", eu2.port)),
        "{}",
        text(&creds.stdout)
    );
    // The old copies are kept for their plan's hold (30 days for growth): no plan removes
    // them before it ends.
    repo.assert_plan_empty();
    let shown = text(&repo.run(&["state", "show", "mover"]).stdout);
    assert!(
        shown.contains(&format!("schema {mover} and the role on eu-1")),
        "{shown}"
    );

    // Once it has passed, the plan removes each, and apply destroys it on the old server,
    // slice and role, with an audit row; the tenants on eu-2 are untouched.
    let growth = std::fs::read_to_string(repo.path().join("plans/growth.hcl")).unwrap();
    repo.write(
        "plans/growth.hcl",
        &growth.replace("retention_days = 30", "retention_days = 0"),
    );
    let plan = text(&repo.run(&["plan"]).stdout);
    for line in [
        format!("- mover/database/retired/schema-{mover}@eu-1  # schema {mover} and the role on eu-1: 2 tables, 1,003 rows, left by a move on "),
        format!("- owndb/database/retired/database-{owndb}@eu-1  # database {owndb} and the role on eu-1: "),
        "- sharer/database/retired/shared-tenants_shared@eu-1  # the tenant's rows in the shared schema tenants_shared and the role on eu-1: 2 tables, 4 rows, ".to_string(),
        "Plan: 0 to add, 0 to change, 3 to destroy.".to_string(),
    ] {
        assert!(plan.contains(&line), "{line}\nnot in\n{plan}");
    }
    // Not a purge of the tenants, which stay.
    assert!(!plan.contains("PURGE"), "{plan}");
    insta::with_settings!({filters => vec![
        (r"\d{4}-\d{2}-\d{2}", "[DATE]"),
        (r"t[0-9a-f]{10}_", "t_"),
    ]}, {
        insta::assert_snapshot!("moved_copies_removed_after_their_hold", plan);
    });
    repo.apply();
    // The tenants' roles are gone from eu-1 (the shared tables' own role stays).
    let left: Vec<String> = eu1
        .roles(&pg.prefix)
        .into_iter()
        .filter(|r| [&mover, &sharer, &owndb].contains(&r))
        .collect();
    assert_eq!(left, Vec::<String>::new());
    let on_eu1 = |sql: &str| eu1.query_as("postgres", "postgres", sql).unwrap()[0]["n"].clone();
    assert_eq!(
        on_eu1(&format!(
            "SELECT count(*) AS n FROM pg_namespace WHERE nspname = '{mover}'"
        )),
        0
    );
    assert_eq!(
        on_eu1(&format!(
            "SELECT count(*) AS n FROM pg_database WHERE datname = '{owndb}'"
        )),
        0
    );
    assert_eq!(
        on_eu1("SELECT count(*) AS n FROM tenants_shared.settings"),
        0
    );
    assert_eq!(counted(&eu2, &mover, &projects), Ok(1001));
    assert_eq!(counted(&eu2, &sharer, "tenants_shared.settings"), Ok(3));
    assert_eq!(in_own_db(&eu2, &owndb), Ok(501));
    let audit = repo.run(&["audit", "--json"]);
    let audit: Vec<serde_json::Value> = serde_json::from_slice(&audit.stdout).unwrap();
    let mut removed: Vec<(&str, bool)> = audit
        .iter()
        .filter(|e| e["address"].as_str().unwrap().ends_with("@eu-1"))
        .map(|e| (e["slug"].as_str().unwrap(), !e["purged_at"].is_null()))
        .collect();
    removed.sort();
    assert_eq!(
        removed,
        [("mover", true), ("owndb", true), ("sharer", true)],
        "{audit:?}"
    );
    // Each writes on where it moved: the rows moved kept their numbers, and the next one
    // drawn passes them (a shared table's too, numbering every tenant's rows there).
    for (role, db, table) in [
        (&mover, "postgres", projects.as_str()),
        (&sharer, "postgres", "tenants_shared.settings"),
        (&owndb, owndb.as_str(), "settings"),
    ] {
        let column = if table.ends_with("settings") {
            "key, value"
        } else {
            "name"
        };
        let values = if table.ends_with("settings") {
            "'after', 'move'"
        } else {
            "'after move'"
        };
        eu2.query_as(
            role,
            db,
            &format!("INSERT INTO {table} ({column}) VALUES ({values}) RETURNING 1"),
        )
        .unwrap_or_else(|e| panic!("{role} writes on eu-2: {e}"));
    }
    repo.assert_plan_empty();
}

#[test]
fn a_move_killed_anywhere_is_finished_by_the_next_apply_with_every_row_once() {
    killed_move("schema", false);
}

#[test]
fn a_shared_tenants_move_killed_anywhere_is_finished_with_every_row_once() {
    killed_move("shared", false);
}

#[test]
fn a_move_by_replication_killed_anywhere_is_finished_and_leaves_no_replication_behind() {
    killed_move("schema", true);
}

#[test]
fn a_database_tenants_move_by_replication_killed_anywhere_is_finished_with_every_row_once() {
    killed_move("database", true);
}

/// A move of a tenant of 100,000 rows in `isolation` mode, killed at eight points; by
/// replication when `replicated`.
fn killed_move(isolation: &str, replicated: bool) {
    let (eu1, eu2) = (OwnPg::start(), OwnPg::start());
    let pg = Pg::new();
    let repo = own_tenants_only(&pg);
    let pin = |to: &str| {
        repo.write(
            "tenants/mover.yaml",
            &tenant(
                "mover",
                "eu-west-1",
                &format!("isolation: {isolation}\nserver: {to}\n"),
            ),
        )
    };
    pin("eu-1");
    let servers = [
        server_block("eu-1", &eu1.url("postgres"), "eu-west-1", 10, ""),
        server_block("eu-2", &eu2.url("postgres"), "eu-west-1", 10, ""),
    ]
    .concat();
    let from_rows = if replicated { 1000 } else { 1_000_000_000 };
    if replicated {
        keyed_tables(&repo);
    }
    repo.write(
        "tenant-reconcile.hcl",
        &format!(
            "{}{servers}",
            pg.config(&format!("  replicate_moves_from_rows = {from_rows}\n"))
        ),
    );
    repo.apply();
    let mover = pg.name("mover");
    let projects = match isolation {
        "shared" => "tenants_shared.projects".to_string(),
        "database" => "projects".to_string(),
        _ => format!("{mover}.projects"),
    };
    // Its table's database: its own, or the servers' admin one.
    let db = match isolation {
        "database" => mover.clone(),
        _ => "postgres".to_string(),
    };
    // Written as the tenant itself (a shared tenant's rows then carry its id).
    eu1.query_as(
        &mover,
        &db,
        &format!("INSERT INTO {projects} (name) SELECT 'p' || g FROM generate_series(1, 100000) g RETURNING 1"),
    )
    .unwrap();
    let logs_in = |server: &OwnPg| server.logs_in(&mover);
    pin("eu-2");
    // Killed at points through the fence, the copy, the check and the flip: at no moment
    // may the tenant log in on both servers.
    let replicating = || {
        eu2.query_as(
            "postgres",
            "postgres",
            "SELECT count(*) AS n FROM pg_subscription",
        )
        .unwrap()[0]["n"]
            == 1
    };
    let on_eu1 = |table: &str| {
        eu1.query_as(
            "postgres",
            &db,
            &format!("SELECT count(*) AS n FROM {table}"),
        )
        .unwrap()[0]["n"]
            .clone()
    };
    if replicated {
        // Cut short while replicating, then not asked for any more: the plan stops the
        // replication, and the tenant stays on eu-1, writable.
        {
            use std::io::BufRead;
            let mut apply = repo
                .process()
                .env("TENANT_RECONCILE_LOG", "tenant_reconcile=info")
                .args(["apply", "--auto-approve"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let log = std::io::BufReader::new(apply.stderr.take().unwrap());
            for line in log.lines() {
                if line.unwrap().contains("the move's first copy began") {
                    break;
                }
            }
            apply.kill().unwrap();
            apply.wait().unwrap();
        }
        assert!(replicating(), "the move was cut short while replicating");
        pin("eu-1");
        let plan = text(&repo.run(&["plan"]).stdout);
        assert!(
            plan.contains("~ mover/placement") && plan.contains("replicating_to = \"eu-2\""),
            "{plan}"
        );
        repo.apply();
        assert!(!replicating());
        assert_eq!(
            (on_eu1("pg_replication_slots"), on_eu1("pg_publication")),
            (0.into(), 0.into())
        );
        assert!(logs_in(&eu1));
        repo.assert_plan_empty();
        pin("eu-2");
    }
    let mut seen_replicating = false;
    // A replicated move restarts its first copy after each kill: later points reach its
    // fence, catch-up and drops.
    let points: &[u64] = if replicated {
        &[30, 300, 800, 1500, 2200, 2800, 3100, 3400, 3700, 4000]
    } else {
        &[30, 150, 300, 500, 800, 1200, 1800, 2600]
    };
    for &ms in points {
        repo.kill_apply(10, 0, std::time::Duration::from_millis(ms));
        let (old, new) = (logs_in(&eu1), logs_in(&eu2));
        let copied = eu2.roles(&pg.prefix).len();
        let subscribed = replicating();
        seen_replicating |= subscribed;
        eprintln!("killed at {ms} ms: logins on eu-1 {old}, on eu-2 {new}; roles on eu-2 {copied}; replicating {subscribed}");
        assert!(
            !(old && new),
            "after a kill at {ms} ms both copies take logins"
        );
    }
    assert_eq!(
        seen_replicating, replicated,
        "replication is used when, and only when, asked"
    );
    let began = std::time::Instant::now();
    repo.apply();
    eprintln!("the last apply took {:?}", began.elapsed());
    // Nothing of the replication is left: no subscription, slot or publication.
    assert!(!replicating());
    for (what, table) in [
        ("slots", "pg_replication_slots"),
        ("publications", "pg_publication"),
    ] {
        assert_eq!(on_eu1(table), 0, "{what} left on eu-1");
    }
    let rows = eu2
        .query_as(
            &mover,
            &db,
            &format!("SELECT count(*) AS n, count(DISTINCT name) AS names FROM {projects}"),
        )
        .unwrap();
    assert_eq!(rows[0], serde_json::json!({"n": 100001, "names": 100001}));
    assert!(!logs_in(&eu1), "the old copy is fenced");
    repo.assert_plan_empty();

    // Its hold over, the removal of the old copy, killed at points through its audit rows
    // and drops, is finished by the next apply, audited once.
    let growth = std::fs::read_to_string(repo.path().join("plans/growth.hcl")).unwrap();
    repo.write(
        "plans/growth.hcl",
        &growth.replace("retention_days = 30", "retention_days = 0"),
    );
    for ms in [20, 60, 120, 250] {
        repo.kill_apply(10, 0, std::time::Duration::from_millis(ms));
        let left = eu1.roles(&pg.prefix).contains(&mover);
        eprintln!("removal killed at {ms} ms: the old role on eu-1 {left}");
    }
    repo.apply();
    assert!(
        !eu1.roles(&pg.prefix).contains(&mover),
        "the old role is gone"
    );
    let audit = repo.run(&["audit", "mover", "--json"]);
    let audit: Vec<serde_json::Value> = serde_json::from_slice(&audit.stdout).unwrap();
    let removals: Vec<_> = audit
        .iter()
        .filter(|e| e["address"].as_str().unwrap().ends_with("@eu-1"))
        .collect();
    assert_eq!(removals.len(), 1, "{audit:?}");
    assert!(!removals[0]["purged_at"].is_null(), "{audit:?}");
    let rows = eu2
        .query_as(
            &mover,
            &db,
            &format!("SELECT count(*) AS n FROM {projects}"),
        )
        .unwrap();
    assert_eq!(rows[0]["n"], 100001);
    repo.assert_plan_empty();
}

#[test]
fn a_large_tenant_moves_by_replication_and_its_writes_pause_only_at_the_end() {
    let (eu1, eu2) = (OwnPg::start(), OwnPg::start());
    let pg = Pg::new();
    let mut repo = own_tenants_only(&pg);
    let pin = |to: &str| {
        repo.write(
            "tenants/bigco.yaml",
            &tenant("bigco", "eu-west-1", &format!("server: {to}\n")),
        )
    };
    pin("eu-1");
    keyed_tables(&repo);
    let servers = [
        server_block("eu-1", &eu1.url("postgres"), "eu-west-1", 10, ""),
        server_block("eu-2", &eu2.url("postgres"), "eu-west-1", 10, ""),
    ]
    .concat();
    repo.write(
        "tenant-reconcile.hcl",
        &format!(
            "{}{servers}",
            pg.config("  replicate_moves_from_rows = 100000\n")
        ),
    );
    repo.apply();
    let bigco = pg.name("bigco");
    let projects = format!("{bigco}.projects");
    eu1.query_as(
        &bigco,
        "postgres",
        &format!("INSERT INTO {projects} (name) SELECT 'p' || g FROM generate_series(1, 400000) g RETURNING 1"),
    )
    .unwrap();
    // The product writes as the tenant throughout: on eu-1 while it takes the tenant's
    // login, then on eu-2. Each acknowledged write is a name of its own.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, bigco, projects) = (stop.clone(), bigco.clone(), projects.clone());
        let (url1, url2) = (eu1.port, eu2.port);
        std::thread::spawn(move || {
            let mut acknowledged = Vec::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                i += 1;
                let sql = format!("INSERT INTO {projects} (name) VALUES ('w{i}') RETURNING 1");
                for port in [url1, url2] {
                    if crate::own_pg::run_as(port, &bigco, &sql).is_ok() {
                        acknowledged.push((i, std::time::Instant::now()));
                        break;
                    }
                }
            }
            acknowledged
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    pin("eu-2");
    // The plan says what the move takes, and how it goes.
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains(
            "~ bigco/placement  # moves eu-1 → eu-2: eu-west-1, 1 of 10 tenants; 2 tables, 400,"
        ) && plan.contains(" rows, by replication, writable until the end"),
        "{plan}"
    );
    repo.env.push((
        "TENANT_RECONCILE_LOG".into(),
        "tenant_reconcile=info".into(),
    ));
    let apply = repo.apply();
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let acknowledged = writer.join().unwrap();
    let log = text(&apply.stderr);
    assert!(log.contains("replicated"), "{log}");
    // The fence came at the end: the pause is a small part of the move.
    let field = |name: &str| -> u64 {
        let at = log
            .find(&format!("{name}: "))
            .unwrap_or_else(|| panic!("{name} in {log}"));
        log[at + name.len() + 2..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (paused, took) = (field("paused ms"), field("took ms"));
    eprintln!("the move took {took} ms, writes paused {paused} ms");
    assert!(paused * 2 < took, "paused {paused} ms of {took} ms");
    // Every acknowledged write is on eu-2, none twice (one cut off by the fence after its
    // commit, before its answer, may be there unacknowledged).
    let names: Vec<String> = eu2
        .query_as(
            &bigco,
            "postgres",
            &format!("SELECT name FROM {projects} WHERE name LIKE 'w%'"),
        )
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    let unique: std::collections::BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "a write is there twice");
    let n = acknowledged.len();
    assert!(n > 10, "{n} writes");
    let lost: Vec<u64> = acknowledged
        .iter()
        .map(|(i, _)| *i)
        .filter(|i| !unique.contains(&format!("w{i}")))
        .collect();
    assert_eq!(lost, Vec::<u64>::new(), "acknowledged writes lost");
    assert!(names.len() <= n + 1, "{} rows for {n} writes", names.len());
    let longest = acknowledged
        .windows(2)
        .map(|w| w[1].1 - w[0].1)
        .max()
        .unwrap();
    eprintln!("{n} writes, the longest gap {longest:?}");
    assert!(longest < std::time::Duration::from_secs(5), "{longest:?}");
    repo.assert_plan_empty();
}

#[test]
fn a_draining_server_takes_no_one_and_its_tenants_move_to_the_others() {
    let (eu1, eu2) = (OwnPg::start(), OwnPg::start());
    let pg = Pg::new();
    let repo = own_tenants_only(&pg);
    for slug in ["dra", "drb", "drc"] {
        repo.write(
            &format!("tenants/{slug}.yaml"),
            &tenant(slug, "eu-west-1", ""),
        );
    }
    let config = |draining: &str| {
        format!(
            "{}{}{}",
            pg.config(""),
            server_block("eu-1", &eu1.url("postgres"), "eu-west-1", 10, draining),
            server_block("eu-2", &eu2.url("postgres"), "eu-west-1", 10, "")
        )
    };
    repo.write("tenant-reconcile.hcl", &config(""));
    repo.apply();
    let role = |slug: &str| pg.name(slug);
    let on_eu1 = eu1.roles(&pg.prefix);
    assert!(!on_eu1.is_empty(), "the spread put someone on eu-1");

    // Drained: each of its tenants moves to eu-2, and a new tenant goes there too.
    repo.write("tenant-reconcile.hcl", &config("  draining = true\n"));
    repo.write("tenants/drd.yaml", &tenant("drd", "eu-west-1", ""));
    let plan = repo.run(&["plan"]);
    let out = text(&plan.stdout);
    for moving in &on_eu1 {
        let slug = moving.strip_prefix(&pg.prefix).unwrap();
        assert!(
            out.contains(&format!("~ {slug}/placement  # moves eu-1 → eu-2")),
            "{slug}: {out}"
        );
    }
    repo.apply();
    let logs_in = |server: &OwnPg, slug: &str| server.logs_in(&role(slug));
    for slug in ["dra", "drb", "drc", "drd"] {
        assert!(logs_in(&eu2, slug), "{slug} on eu-2");
        assert!(!logs_in(&eu1, slug), "{slug} not on eu-1");
    }
    repo.assert_plan_empty();
}

#[test]
fn tenants_beyond_a_lowered_cap_move_off_and_the_rest_stay() {
    let (eu1, eu2) = (OwnPg::start(), OwnPg::start());
    let pg = Pg::new();
    let repo = own_tenants_only(&pg);
    for slug in ["caa", "cab", "cac"] {
        repo.write(
            &format!("tenants/{slug}.yaml"),
            &tenant(slug, "eu-west-1", ""),
        );
    }
    let config = |cap: u32| {
        format!(
            "{}{}{}",
            pg.config(""),
            server_block("eu-1", &eu1.url("postgres"), "eu-west-1", cap, ""),
            server_block("eu-2", &eu2.url("postgres"), "eu-west-1", 10, "")
        )
    };
    repo.write("tenant-reconcile.hcl", &config(10));
    repo.apply();
    let role = |slug: &str| pg.name(slug);
    // Even shares: caa and cac on eu-1, cab on eu-2.
    assert_eq!(eu1.roles(&pg.prefix), ["caa", "cac"].map(role));
    repo.write("tenant-reconcile.hcl", &config(1));
    let plan = repo.run(&["plan"]);
    let out = text(&plan.stdout);
    assert!(
        out.contains("~ caa/placement  # moves eu-1 → eu-2"),
        "{out}"
    );
    assert!(!out.contains("cac/placement"), "{out}");
    repo.apply();
    let logs_in = |server: &OwnPg, slug: &str| server.logs_in(&role(slug));
    assert!(logs_in(&eu2, "caa") && !logs_in(&eu1, "caa"));
    assert!(logs_in(&eu1, "cac"));
    repo.assert_plan_empty();
}

#[test]
fn a_rollout_wave_takes_the_tenants_on_the_servers_it_names() {
    let eu1 = OwnPg::start();
    let pg = Pg::new();
    let repo = own_tenants_only(&pg);
    for (slug, server) in [
        ("sa1", "eu-1"),
        ("sa2", "eu-1"),
        ("sb1", "eu-2"),
        ("sb2", "eu-2"),
    ] {
        repo.write(
            &format!("tenants/{slug}.yaml"),
            &tenant(slug, "eu-west-1", &format!("server: {server}\n")),
        );
    }
    let servers = [
        server_block("eu-1", &eu1.url("postgres"), "eu-west-1", 10, ""),
        server_block("eu-2", &pg.url(), "eu-west-1", 10, ""),
    ]
    .concat();
    let waves = "rollout {\n  wave \"eu-2-first\" {\n    servers = [\"eu-2\"]\n  }\n  wave \"rest\" {}\n}\n";
    on_servers(&repo, &pg, &format!("{servers}{waves}"));
    crate::git::init_committed(&repo, "four tenants on two servers, in waves");
    repo.apply();
    let template = repo.path().join("templates/files/namespace.yaml.tera");
    let mut changed = std::fs::read_to_string(&template).unwrap();
    changed.push_str("# managed by the platform team\n");
    repo.write("templates/files/namespace.yaml.tera", &changed);
    crate::git::commit(&repo, "namespaces say who manages them");
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("eu-2-first (2 tenants) · then rest (2)"),
        "{plan}"
    );
    for slug in ["sb1", "sb2"] {
        assert!(
            plan.contains(&format!("# {slug} will be updated in place")),
            "{plan}"
        );
    }
    assert_eq!(
        plan.matches("will be updated in place").count(),
        2,
        "{plan}"
    );
    repo.apply();
    repo.apply_saying("rollout r1 completed");
    repo.assert_plan_empty();
}

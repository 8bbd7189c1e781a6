//! Offboarding's end: after the hold (here `retention_days = 0`, or an erasure request)
//! the next apply purges every resource the tenant has, records each in the deletion audit,
//! and leaves the registry row as a tombstone without personal data. Checked from outside:
//! the SQLite files and folders, psql, the S3 API.

use std::time::Duration;

use serde_json::{json, Value};

use crate::offboarding::{call_back, offboard, verified};
use crate::pg::Pg;
use crate::support::{text, Repo};

/// Every plan of the repo holds an export for no time: the purge is due at once.
pub fn no_hold(repo: &Repo) {
    for plan in ["starter", "growth", "enterprise"] {
        set_plan(repo, plan, "retention_days", "0");
    }
}

/// Sets a top-level setting that `plans/<plan>.hcl` has on a line of its own.
fn set_plan(repo: &Repo, plan: &str, setting: &str, value: &str) {
    let path = repo.path().join(format!("plans/{plan}.hcl"));
    let text = std::fs::read_to_string(&path).unwrap();
    let changed: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(setting) {
                format!("{setting} = {value}")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&path, changed.join("\n") + "\n").unwrap();
}

fn audit(repo: &Repo, slug: &str) -> Vec<Value> {
    let out = repo.run(&["audit", slug, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// How many of the tenant's audit rows say their resource was purged.
fn completed_audit_rows(repo: &Repo, slug: &str) -> usize {
    audit(repo, slug)
        .iter()
        .filter(|e| !e["purged_at"].is_null())
        .count()
}

fn addresses(entries: &[Value]) -> Vec<String> {
    let mut a: Vec<String> = entries
        .iter()
        .map(|e| e["address"].as_str().unwrap().to_string())
        .collect();
    a.sort();
    a
}

fn tenant_id(repo: &Repo, slug: &str) -> String {
    repo.query(
        "control.sqlite",
        &format!("SELECT tenant_id FROM tenants WHERE slug = '{slug}'"),
    )[0][0]
        .clone()
}

#[test]
fn after_its_hold_a_tenant_is_purged_audited_and_left_as_a_tombstone() {
    let repo = Repo::example();
    no_hold(&repo);
    repo.apply();
    repo.write(".tenant-reconcile/buckets/acme/reports/q1.txt", "numbers\n");
    let id = tenant_id(&repo, "acme");
    offboard(&repo, "acme");
    repo.apply();

    // Held: revoked and exported, nothing deleted yet.
    assert_eq!(
        repo.count("data/acme.sqlite", "SELECT count(*) FROM projects"),
        1
    );
    assert_eq!(
        repo.query(
            "catalog.sqlite",
            "SELECT login FROM roles WHERE slug = 'acme'"
        ),
        [["0"]]
    );
    let out = repo.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2));
    let plan = text(&out.stdout);
    for expected in [
        "# acme will be purged: its data destroyed for good, a tombstone kept (deprovisioning → deprovisioned)",
        "- acme/file/namespace.yaml  # file acme/namespace.yaml",
        "- acme/bucket  # bucket acme: 1 object, 8 bytes",
        "- acme/database  # database file data/acme.sqlite: 2 tables, 3 rows",
        "- acme/role  # role tenant_acme",
        "- acme/quotas  # quotas: 3 quotas",
        "- acme/features  # feature flags: 4 flags",
        "- acme/owner  # owner membership: 1 member",
        "~ acme/registry  # kept as a tombstone: id, slug, plan and dates\n      ~ name = \"Acme Corporation\" → \"\"",
        "PURGE: its data destroyed for good (1 tenant)",
        "Plan: 0 to add, 1 to change, 7 to destroy.",
    ] {
        assert!(plan.contains(expected), "missing {expected:?} in:\n{plan}");
    }
    assert!(
        !plan.contains("ops@acme.example"),
        "no email in a purge:\n{plan}"
    );

    let out = repo.apply();
    assert!(text(&out.stdout).contains("acme"), "{}", text(&out.stdout));
    repo.assert_plan_empty();

    // Gone, from outside: the database file, the bucket folder, the rendered files, the
    // login and every control-plane row but the tombstone.
    let local = repo.state_dir();
    assert!(!local.join("data/acme.sqlite").exists());
    assert!(!local.join("buckets/acme").exists());
    assert!(!repo.path().join("rendered/acme").exists() && !local.join("rendered/acme").exists());
    assert!(repo
        .query(
            "catalog.sqlite",
            "SELECT name FROM roles WHERE slug = 'acme'"
        )
        .is_empty());
    for table in ["memberships", "feature_flags", "quotas"] {
        assert_eq!(
            repo.count(
                "control.sqlite",
                &format!("SELECT count(*) FROM {table} WHERE tenant_id = '{id}'")
            ),
            0,
            "{table}"
        );
    }
    assert_eq!(
        repo.query(
            "control.sqlite",
            "SELECT name, plan, lifecycle, deprovisioned_at IS NOT NULL FROM tenants WHERE slug = 'acme'"
        ),
        [["", "growth", "deprovisioned", "1"]]
    );
    assert_eq!(
        repo.query(
            "control.sqlite",
            &format!("SELECT type FROM outbox WHERE tenant_id = '{id}' ORDER BY id")
        ),
        [
            ["TenantProvisioned"],
            ["TenantOffboardingStarted"],
            ["TenantDeprovisioned"]
        ]
    );
    assert_eq!(
        repo.count(
            "control.sqlite",
            &format!("SELECT count(*) FROM outbox WHERE tenant_id = '{id}' AND payload LIKE '%acme.example%'")
        ),
        0,
        "the owner's email is erased from the events kept"
    );
    // The other tenants are untouched.
    assert_eq!(
        repo.count("data/globex.sqlite", "SELECT count(*) FROM projects"),
        1
    );

    // The audit: each purged resource once, after the export, which is kept and whole.
    let entries = audit(&repo, "acme");
    assert_eq!(
        addresses(&entries),
        [
            "acme/bucket",
            "acme/database",
            "acme/features",
            "acme/file/namespace.yaml",
            "acme/owner",
            "acme/quotas",
            "acme/role"
        ]
    );
    let dir = repo.path().join(".tenant-reconcile/exports/acme");
    let manifest_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(dir.join("manifest.json")).unwrap(),
    ));
    for e in &entries {
        assert!(e["purged_at"].is_string(), "{e}");
        assert_eq!(e["export"], json!(".tenant-reconcile/exports/acme"));
        assert_eq!(e["export_sha256"], json!(manifest_sha));
        assert_eq!(e["erasure"], json!(false));
        assert!(!e.to_string().contains("acme.example"), "{e}");
    }
    let manifest = verified(&dir);
    assert_eq!(manifest["tables"][0]["rows"], json!(1));
    let table = text(&repo.run(&["audit"]).stdout);
    assert!(
        table.starts_with("PURGED")
            && table.contains("acme/database")
            && table.contains("database file data/acme.sqlite: 2 tables, 3 rows"),
        "{table}"
    );
    let show = text(&repo.run(&["show"]).stdout);
    assert!(show.contains("acme deprovisioned on "), "{show}");

    // A tombstoned slug is never given to a new tenant.
    let before = repo.fingerprint();
    repo.write(
        "tenants/acme.yaml",
        "slug: acme\nname: Another Acme\nplan: growth\nowner:\n  email: new@acme.example\nregion: eu-west-1\n",
    );
    let out = repo.run(&["plan"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("tenants/acme.yaml")
            && err.contains("the slug acme belonged to a tenant that was deprovisioned on 20")
            && err.contains("a slug is never reused"),
        "{err}"
    );
    assert_eq!(
        repo.run(&["apply", "--auto-approve"]).status.code(),
        Some(1)
    );
    assert_eq!(repo.fingerprint(), before, "nothing changed");
    // Its file removed, a tombstone is not an orphan.
    repo.remove("tenants/acme.yaml");
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("No changes.") && !plan.contains("orphaned"),
        "{plan}"
    );
}

#[test]
fn a_held_tenant_says_until_when_and_is_not_touched_before() {
    let repo = Repo::example();
    repo.apply();
    offboard(&repo, "acme");
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("it is then held 30 days (its plan's retention_days), until 20"),
        "{plan}"
    );
    repo.apply();
    let out = repo.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let plan = text(&out.stdout);
    let until = tenant_reconcile::offboarding::day(
        std::time::SystemTime::now() + Duration::from_secs(30 * 86_400),
    );
    assert!(
        plan.contains(&format!(
            "# acme is held until {until}, then purged by the first apply after that (its export: .tenant-reconcile/exports/acme)"
        )),
        "{plan}"
    );
    let markdown = text(&repo.run(&["plan", "--format", "markdown"]).stdout);
    assert!(
        markdown.contains(&format!("> ⏳ acme is held until {until}, then purged")),
        "{markdown}"
    );
    let show = text(&repo.run(&["show"]).stdout);
    assert!(
        show.contains(&format!("acme held until {until}, then purged")),
        "{show}"
    );
    repo.apply();
    assert_eq!(
        repo.count("data/acme.sqlite", "SELECT count(*) FROM projects"),
        1,
        "nothing is deleted during the hold"
    );
    assert!(audit(&repo, "acme").is_empty());
    call_back(&repo, "acme");
    repo.apply();
    repo.assert_plan_empty();
}

#[test]
fn an_erasure_request_skips_the_hold_and_may_waive_the_export() {
    let repo = Repo::example();
    repo.apply();
    crate::offboarding::erase(&repo, "globex", false);
    let plan = text(&repo.run(&["plan"]).stdout);
    for expected in [
        "# globex will be purged: its data destroyed for good, a tombstone kept (ERASURE request, no hold) (active → deprovisioned)",
        "~ globex/role\n      ~ login = true → false",
        "- globex/database  # database file data/globex.sqlite: 2 tables, 3 rows",
        "PURGE (ERASURE request): its data destroyed for good (1 tenant)",
    ] {
        assert!(plan.contains(expected), "missing {expected:?} in:\n{plan}");
    }
    assert!(
        !plan.contains("globex/export"),
        "the export is waived:\n{plan}"
    );
    repo.apply();
    repo.assert_plan_empty();
    assert!(!repo.state_dir().join("data/globex.sqlite").exists());
    assert!(!repo
        .path()
        .join(".tenant-reconcile/exports/globex")
        .exists());
    let entries = audit(&repo, "globex");
    assert_eq!(entries.len(), 7, "{entries:#?}");
    for e in &entries {
        assert_eq!(e["erasure"], json!(true));
        assert_eq!(e["export"], Value::Null);
    }
    assert!(text(&repo.run(&["audit", "globex"]).stdout).contains("ERASURE, export waived"));
    let id = tenant_id(&repo, "globex");
    assert_eq!(
        repo.query(
            "control.sqlite",
            &format!("SELECT type FROM outbox WHERE tenant_id = '{id}' ORDER BY id")
        ),
        [
            ["TenantProvisioned"],
            ["TenantOffboardingStarted"],
            ["TenantDeprovisioned"]
        ]
    );
    // A file asking for what only a leaving tenant can ask is refused, naming the field.
    repo.write(
        "tenants/initech.yaml",
        "slug: initech\nname: Initech\nplan: starter\nowner:\n  email: bill@initech.example\nregion: us-west-2\noffboarding:\n  erase: true\n",
    );
    let out = repo.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("tenants/initech.yaml:7")
            && err.contains("offboarding applies only to a tenant whose status is deprovisioned"),
        "{err}"
    );
}

#[test]
fn an_orphan_is_never_purged_and_an_export_that_does_not_verify_stops_the_purge() {
    let repo = Repo::example();
    no_hold(&repo);
    repo.apply();
    offboard(&repo, "acme");
    repo.apply();
    // The file goes: an orphan, left as it is with its data, whatever its hold says.
    let acme = std::fs::read_to_string(repo.path().join("tenants/acme.yaml")).unwrap();
    repo.remove("tenants/acme.yaml");
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("acme is orphaned") && !plan.contains("- acme/"),
        "{plan}"
    );
    repo.apply();
    assert!(repo.state_dir().join("data/acme.sqlite").exists());
    repo.write("tenants/acme.yaml", &acme);

    // An export edited since it was made is not one to purge after.
    let csv = repo
        .path()
        .join(".tenant-reconcile/exports/acme/tables/projects.csv");
    let original = std::fs::read_to_string(&csv).unwrap();
    std::fs::write(&csv, format!("{original}tampered,row\n")).unwrap();
    let out = repo.run(&["plan", "--detailed-exitcode"]);
    let plan = text(&out.stdout);
    assert!(
        plan.contains("acme: its hold is over, but its export cannot be relied on")
            && plan.contains("tables/projects.csv: sha256")
            && !plan.contains("- acme/"),
        "{plan}"
    );
    repo.apply();
    assert!(repo.state_dir().join("data/acme.sqlite").exists());
    std::fs::write(&csv, original).unwrap();
    repo.apply();
    repo.assert_plan_empty();
    assert!(!repo.state_dir().join("data/acme.sqlite").exists());
    assert_eq!(audit(&repo, "acme").len(), 7);
}

#[test]
fn more_purges_than_the_breaker_allows_are_refused_unless_asked_for() {
    let repo = Repo::example();
    no_hold(&repo);
    repo.write(
        "tenant-reconcile.hcl",
        "safety {\n  max_purges_per_run = 1\n}\n",
    );
    repo.apply();
    for slug in ["acme", "globex", "initech"] {
        offboard(&repo, slug);
    }
    repo.apply();
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("this plan purges 3 tenants, more than safety.max_purges_per_run (1): apply refuses it unless given --allow-mass-purge"),
        "{plan}"
    );
    let before = repo.fingerprint();
    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("the plan purges 3 tenants (acme, globex, initech), more than safety.max_purges_per_run (1); nothing was applied"),
        "{err}"
    );
    assert_eq!(repo.fingerprint(), before, "nothing was purged");
    let out = repo.run(&["apply", "--auto-approve", "--allow-mass-purge"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    repo.assert_plan_empty();
    for slug in ["acme", "globex", "initech"] {
        assert_eq!(audit(&repo, slug).len(), 7, "{slug}");
    }
}

#[test]
fn killed_mid_export_and_mid_purge_a_rerun_purges_and_audits_each_resource_once() {
    let repo = Repo::example();
    no_hold(&repo);
    repo.write(
        "tenant-reconcile.hcl",
        "safety {\n  max_purges_per_run = 100\n}\n",
    );
    let n = 16;
    for i in 0..n {
        repo.write(
            &format!("tenants/bulk-{i:03}.yaml"),
            &format!("slug: bulk-{i:03}\nname: Bulk {i}\nplan: growth\nowner:\n  email: o{i}@bulk.example\nregion: eu-west-1\n"),
        );
        repo.write(
            &format!(".tenant-reconcile/buckets/bulk-{i:03}/data/{i}.txt"),
            "x\n",
        );
    }
    repo.apply();
    for i in 0..n {
        offboard(&repo, &format!("bulk-{i:03}"));
    }
    // Exports, killed a few times.
    for (after_lines, delay_ms) in [(2, 0), (0, 25), (5, 3)] {
        repo.kill_apply(3, after_lines, Duration::from_millis(delay_ms));
    }
    // Then the purges, killed too.
    for (after_lines, delay_ms) in [(1, 0), (0, 40), (4, 2), (0, 10)] {
        repo.kill_apply(3, after_lines, Duration::from_millis(delay_ms));
    }
    repo.apply();
    repo.apply();
    repo.assert_plan_empty();
    let entries: Vec<Value> =
        serde_json::from_slice(&repo.run(&["audit", "--json"]).stdout).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for e in &entries {
        assert!(e["purged_at"].is_string(), "every purge finished: {e}");
        assert!(
            seen.insert(e["address"].as_str().unwrap().to_string()),
            "audited twice: {e}"
        );
    }
    assert_eq!(seen.len(), n * 7, "{seen:#?}");
    for i in 0..n {
        let slug = format!("bulk-{i:03}");
        assert!(!repo
            .state_dir()
            .join(format!("data/{slug}.sqlite"))
            .exists());
        assert!(!repo.state_dir().join(format!("buckets/{slug}")).exists());
        let manifest = verified(
            &repo
                .path()
                .join(format!(".tenant-reconcile/exports/{slug}")),
        );
        assert_eq!(manifest["objects"][0]["size"], json!(2), "{slug}");
    }
    for (event, count) in [("TenantOffboardingStarted", n), ("TenantDeprovisioned", n)] {
        assert_eq!(
            repo.count(
                "control.sqlite",
                &format!("SELECT count(*) FROM outbox WHERE type = '{event}'")
            ),
            count as i64,
            "{event} exactly once per tenant"
        );
    }
}

#[test]
fn on_postgres_each_isolation_mode_is_purged_and_its_export_loads_back() {
    let pg = Pg::new();
    let repo = pg.repo();
    no_hold(&repo);
    // A second shared tenant, whose rows must stay.
    repo.write(
        "tenants/hooli.yaml",
        "slug: hooli\nname: Hooli\nplan: starter\nowner:\n  email: o@hooli.example\nregion: eu-west-1\n",
    );
    repo.apply();
    let (acme, globex, initech) = (pg.name("acme"), pg.name("globex"), pg.name("initech"));
    pg.exec(&format!(
        "INSERT INTO \"{acme}\".projects (name) SELECT 'p' || g FROM generate_series(1, 1203) g"
    ));
    let initech_id = pg
        .query("SELECT tenant_id FROM tenant_reconcile.tenants WHERE slug = 'initech'")[0]
        ["tenant_id"]
        .as_str()
        .unwrap()
        .to_string();
    for slug in ["acme", "globex", "initech"] {
        offboard(&repo, slug);
    }
    repo.apply();
    // Held: the data is all there, and the tenants' own logins are refused.
    assert_eq!(
        pg.count(&format!("SELECT count(*) FROM \"{acme}\".projects")),
        1204
    );
    for role in [&acme, &globex, &initech] {
        let e = pg.query_as(role, &pg.db, "SELECT 1").unwrap_err();
        assert!(e.contains("not permitted to log in"), "{role}: {e}");
    }
    let plan = text(&repo.run(&["plan"]).stdout);
    for expected in [
        format!("- acme/database  # schema {acme}: 2 tables, 1,206 rows"),
        format!("- globex/database  # database {globex}: 2 tables, 3 rows"),
        "- initech/database  # the tenant's rows in the shared schema tenants_shared: 2 tables, 3 rows".to_string(),
        format!("- initech/role  # role {initech}"),
    ] {
        assert!(plan.contains(&expected), "missing {expected:?} in:\n{plan}");
    }
    // A session left open in globex's database does not stop its drop.
    let hold = std::process::Command::new("psql")
        .arg(format!("{}/{globex}", crate::pg::SERVER))
        .args(["-X", "-q", "-c", "SELECT pg_sleep(30)"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    repo.apply();
    let mut hold = hold;
    let _ = hold.kill();
    let _ = hold.wait();
    repo.assert_plan_empty();

    let gone = |sql: &str| assert_eq!(pg.count(sql), 0, "{sql}");
    gone(&format!(
        "SELECT count(*) FROM pg_namespace WHERE nspname = '{acme}'"
    ));
    gone(&format!(
        "SELECT count(*) FROM pg_database WHERE datname = '{globex}'"
    ));
    gone(&format!(
        "SELECT count(*) FROM pg_roles WHERE rolname IN ('{acme}', '{globex}', '{initech}')"
    ));
    gone(&format!(
        "SELECT count(*) FROM tenants_shared.projects WHERE tenant_id = '{initech_id}'"
    ));
    gone(&format!(
        "SELECT count(*) FROM tenant_reconcile.memberships WHERE tenant_id = '{initech_id}'"
    ));
    assert!(
        pg.count("SELECT count(*) FROM tenants_shared.projects") >= 1,
        "hooli's shared rows stay"
    );
    assert_eq!(
        pg.query("SELECT name, lifecycle FROM tenant_reconcile.tenants WHERE slug = 'acme'"),
        vec![json!({"name": "", "lifecycle": "deprovisioned"})]
    );
    let entries: Vec<Value> =
        serde_json::from_slice(&repo.run(&["audit", "--json"]).stdout).unwrap();
    assert_eq!(
        entries.len(),
        3 * 7,
        "file, bucket, slice, role, quotas, flags, owner each: {entries:#?}"
    );
    assert_eq!(
        pg.count(
            "SELECT count(*) FROM tenant_reconcile.deletion_audit WHERE purged_at IS NOT NULL"
        ),
        21
    );

    // acme's export loads back into a fresh database with its rows.
    let dir = repo.path().join(".tenant-reconcile/exports/acme");
    let manifest = verified(&dir);
    let fresh = format!("{}reload", pg.prefix);
    pg.exec_on("postgres", &format!("CREATE DATABASE \"{fresh}\""));
    for m in ["0001_create_projects.sql", "0002_create_settings.sql"] {
        pg.exec_on(
            &fresh,
            &std::fs::read_to_string(repo.path().join("migrations").join(m)).unwrap(),
        );
    }
    let projects = dir.join("tables/projects.csv");
    let out = std::process::Command::new("psql")
        .arg(format!("{}/{fresh}", crate::pg::SERVER))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!(
            "\\copy projects FROM '{}' WITH (FORMAT csv, HEADER)",
            projects.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let loaded = pg
        .query_as("postgres", &fresh, "SELECT count(*) AS n FROM projects")
        .unwrap();
    assert_eq!(loaded[0]["n"], manifest["tables"][0]["rows"]);
    assert_eq!(loaded[0]["n"], json!(1204));
    // Written out again from the fresh database, the table is the same bytes.
    let again = repo.path().join("projects.again.csv");
    let out = std::process::Command::new("psql")
        .arg(format!("{}/{fresh}", crate::pg::SERVER))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!(
            "\\copy projects TO '{}' WITH (FORMAT csv, HEADER)",
            again.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(&again).unwrap(),
    ));
    assert_eq!(json!(sha), manifest["tables"][0]["sha256"]);
}

#[test]
fn on_s3_every_version_and_delete_marker_goes_with_the_bucket_versioned_or_not() {
    let s3 = crate::moto::S3::new();
    let repo = s3.repo("");
    no_hold(&repo);
    repo.apply();
    let bucket = s3.bucket("acme", "eu-west-1");
    for body in ["one", "two", "three"] {
        s3.block_on(
            s3.client
                .put_object()
                .bucket(&bucket)
                .key("reports/q1.txt")
                .body(aws_sdk_s3::primitives::ByteStream::from(
                    body.as_bytes().to_vec(),
                ))
                .send(),
        )
        .unwrap();
    }
    s3.block_on(
        s3.client
            .put_object()
            .bucket(&bucket)
            .key("gone.txt")
            .send(),
    )
    .unwrap();
    s3.block_on(
        s3.client
            .delete_object()
            .bucket(&bucket)
            .key("gone.txt")
            .send(),
    )
    .unwrap();
    // initech's plan asks for no versioning: its bucket holds plain objects.
    let unversioned = s3.bucket("initech", "us-west-2");
    s3.block_on(
        s3.client
            .put_object()
            .bucket(&unversioned)
            .key("notes.txt")
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"plain"))
            .send(),
    )
    .unwrap();
    offboard(&repo, "acme");
    offboard(&repo, "initech");
    repo.apply();
    let manifest = verified(&repo.path().join(".tenant-reconcile/exports/acme"));
    assert_eq!(
        manifest["objects"].as_array().unwrap().len(),
        1,
        "current versions only"
    );
    // The deny for everyone binds this tool too: lifted for the export, and put back.
    let policy = s3
        .block_on(s3.client.get_bucket_policy().bucket(&bucket).send())
        .unwrap();
    assert!(
        policy.policy().unwrap_or_default().contains("\"Deny\""),
        "{policy:?}"
    );
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains(&format!(
            "- acme/bucket  # bucket {bucket}: 1 object, 5 bytes (and 3 older versions, 1 delete marker)"
        )),
        "{plan}"
    );
    repo.apply();
    repo.assert_plan_empty();
    for gone in [&bucket, &unversioned] {
        let head = s3.block_on(s3.client.head_bucket().bucket(gone).send());
        assert!(head.is_err(), "{gone} is gone");
    }
    let manifest = verified(&repo.path().join(".tenant-reconcile/exports/initech"));
    assert_eq!(manifest["objects"][0]["key"], json!("notes.txt"));
    // Another tenant's bucket and its objects stay.
    let globex = s3.bucket("globex", "us-east-1");
    assert!(s3
        .block_on(s3.client.head_bucket().bucket(&globex).send())
        .is_ok());
}

#[test]
fn an_export_kept_in_s3_is_uploaded_whole_handed_out_by_link_and_checked_before_the_purge() {
    let s3 = crate::moto::S3::new();
    let exports = format!("{}-exports", s3.prefix);
    s3.block_on(s3.client.create_bucket().bucket(&exports).send())
        .unwrap();
    let repo = s3.repo("");
    repo.write(
        "tenant-reconcile.hcl",
        &format!(
            "{}offboarding {{\n  export_to = \"s3://{exports}/offboarded\"\n}}\n",
            s3.config("")
        ),
    );
    no_hold(&repo);
    repo.apply();
    let bucket = s3.bucket("acme", "eu-west-1");
    s3.block_on(
        s3.client
            .put_object()
            .bucket(&bucket)
            .key("reports/q1.txt")
            .body(aws_sdk_s3::primitives::ByteStream::from_static(
                b"numbers\n",
            ))
            .send(),
    )
    .unwrap();
    offboard(&repo, "acme");
    repo.apply();
    let keys = |prefix: &str| s3.keys_under(&exports, prefix);
    assert_eq!(
        keys("offboarded/acme/"),
        [
            "offboarded/acme/.tenant-reconcile-export",
            "offboarded/acme/manifest.json",
            "offboarded/acme/objects/reports/q1.txt",
            "offboarded/acme/tables/projects.csv",
            "offboarded/acme/tables/settings.csv",
        ]
    );
    assert!(
        !repo
            .path()
            .join(".tenant-reconcile/exports/.staging/acme")
            .exists(),
        "nothing is left staged"
    );

    // The owner's links: each file downloads as it was written; a link is a secret, so it
    // is in no state, log or event.
    let out = repo.run(&["export-url", "acme", "--expires-in", "1h"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let links = text(&out.stdout);
    let manifest_link = links
        .lines()
        .find_map(|l| l.strip_prefix("manifest.json\t"))
        .unwrap_or_else(|| panic!("{links}"));
    assert!(
        manifest_link.contains("X-Amz-Signature="),
        "{manifest_link}"
    );
    let fetched = std::process::Command::new("curl")
        .args(["-sf", manifest_link])
        .output()
        .unwrap();
    assert!(fetched.status.success(), "{}", text(&fetched.stderr));
    let manifest: Value = serde_json::from_slice(&fetched.stdout).unwrap();
    assert_eq!(manifest["slug"], json!("acme"));
    assert!(!text(&out.stderr).contains("X-Amz-Signature"));
    assert!(!repo.state_text().contains("X-Amz-Signature"));
    let out = repo.run(&["export-url", "acme", "--expires-in", "8d"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("up to 7 days"),
        "{}",
        text(&out.stderr)
    );

    // An export changed in the bucket since it was written is not one to purge after.
    let put = |body: &'static [u8]| {
        s3.block_on(
            s3.client
                .put_object()
                .bucket(&exports)
                .key("offboarded/acme/tables/projects.csv")
                .body(aws_sdk_s3::primitives::ByteStream::from_static(body))
                .send(),
        )
        .unwrap();
    };
    let original = s3
        .block_on(
            s3.client
                .get_object()
                .bucket(&exports)
                .key("offboarded/acme/tables/projects.csv")
                .send(),
        )
        .unwrap();
    let original: &'static [u8] = Box::leak(
        s3.block_on(original.body.collect())
            .unwrap()
            .into_bytes()
            .to_vec()
            .into_boxed_slice(),
    );
    put(b"tampered\n");
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("its export cannot be relied on") && !plan.contains("- acme/"),
        "{plan}"
    );
    put(original);
    repo.apply();
    repo.assert_plan_empty();
    let entries = audit(&repo, "acme");
    assert_eq!(entries.len(), 7, "{entries:#?}");
    assert_eq!(
        entries[0]["export"],
        json!(format!("s3://{exports}/offboarded/acme"))
    );
    assert!(s3
        .block_on(s3.client.head_bucket().bucket(&bucket).send())
        .is_err());
    assert_eq!(keys("offboarded/acme/").len(), 5, "the export stays");
}

#[test]
fn killed_mid_purge_on_postgres_a_rerun_purges_every_mode_and_audits_each_resource_once() {
    let pg = Pg::new();
    let repo = pg.repo();
    no_hold(&repo);
    repo.write(
        "tenant-reconcile.hcl",
        &(pg.config("") + "safety {\n  max_purges_per_run = 100\n}\n"),
    );
    let n = 12;
    for i in 0..n {
        let isolation = ["schema", "database", "shared"][i % 3];
        repo.write(
            &format!("tenants/bulk-{i:03}.yaml"),
            &format!("slug: bulk-{i:03}\nname: Bulk {i}\nplan: growth\nisolation: {isolation}\nowner:\n  email: o{i}@bulk.example\nregion: eu-west-1\n"),
        );
    }
    repo.apply();
    for i in 0..n {
        offboard(&repo, &format!("bulk-{i:03}"));
    }
    for (after_lines, delay_ms) in [(1, 0), (0, 150), (3, 20)] {
        repo.kill_apply(4, after_lines, Duration::from_millis(delay_ms));
    }
    for (after_lines, delay_ms) in [(0, 120), (2, 0), (0, 300), (1, 30)] {
        repo.kill_apply(4, after_lines, Duration::from_millis(delay_ms));
    }
    repo.apply();
    repo.apply();
    repo.assert_plan_empty();
    let audited = pg.query(
        "SELECT address, count(*) AS n, bool_and(purged_at IS NOT NULL) AS done
         FROM tenant_reconcile.deletion_audit GROUP BY address",
    );
    assert_eq!(audited.len(), n * 7, "{audited:#?}");
    for row in &audited {
        assert_eq!(row["n"], json!(1), "audited once: {row}");
        assert_eq!(row["done"], json!(true), "finished: {row}");
    }
    let prefix = pg.prefix.replace('_', "\\_");
    for sql in [
        format!("SELECT count(*) FROM pg_roles WHERE rolname LIKE '{prefix}bulk%'"),
        format!("SELECT count(*) FROM pg_namespace WHERE nspname LIKE '{prefix}bulk%'"),
        format!("SELECT count(*) FROM pg_database WHERE datname LIKE '{prefix}bulk%'"),
        "SELECT count(*) FROM tenants_shared.projects p JOIN tenant_reconcile.tenants t
           ON t.tenant_id = p.tenant_id WHERE t.slug LIKE 'bulk-%'"
            .to_string(),
    ] {
        assert_eq!(pg.count(&sql), 0, "{sql}");
    }
    assert_eq!(
        pg.count("SELECT count(*) FROM tenant_reconcile.outbox WHERE type = 'TenantDeprovisioned'"),
        n as i64,
        "each tenant deprovisioned exactly once"
    );
}

/// The control plane's part of a purge (its rows, the audit's completion, the tombstone and
/// the move to `deprovisioned`) is one transaction, recorded in the state only by the tenant's
/// last checkpoint. Killed right before that checkpoint, with the registry already a
/// tombstone and the state still recording every resource, a rerun finds each done: it
/// audits each resource once, announces the tenant's end once, and its plan is then empty.
#[test]
fn killed_after_the_tombstone_before_the_state_records_it_a_rerun_purges_nothing_twice() {
    let pg = Pg::new();
    let repo = pg.repo();
    no_hold(&repo);
    repo.write("tenant-reconcile.hcl", &pg.config(""));
    repo.write(
        "tenants/last-one.yaml",
        "slug: last-one\nname: Last One\nplan: growth\nisolation: schema\nowner:\n  email: o@last.example\nregion: eu-west-1\n",
    );
    repo.apply();
    offboard(&repo, "last-one");
    // Revoked and exported; the next apply purges it.
    repo.apply();
    // The state's checkpoint that ends the purge waits, as a process stopped there would.
    pg.exec(
        "CREATE FUNCTION public.hold_the_end() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.body LIKE '%\"finished_at\"%' THEN PERFORM pg_sleep(600); END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER hold_the_end BEFORE INSERT OR UPDATE ON tenant_reconcile.state_tenants
           FOR EACH ROW EXECUTE FUNCTION public.hold_the_end()",
    );
    let mut child = repo.spawn_apply(1);
    let held = "SELECT count(*) FROM pg_stat_activity
                WHERE datname = current_database() AND wait_event = 'PgSleep'";
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while pg.count(held) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the purge never reached its last checkpoint"
        );
        assert!(child.try_wait().unwrap().is_none(), "the apply ended first");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    pg.exec(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event = 'PgSleep'",
    );
    pg.exec("DROP TRIGGER hold_the_end ON tenant_reconcile.state_tenants; DROP FUNCTION public.hold_the_end()");
    // Killed where this test means: the control plane's part is done, the state's is not.
    let registry =
        pg.query("SELECT name, lifecycle FROM tenant_reconcile.tenants WHERE slug = 'last-one'");
    assert_eq!(
        registry,
        vec![json!({"name": "", "lifecycle": "deprovisioned"})]
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM tenant_reconcile.deletion_audit WHERE purged_at IS NULL"),
        0
    );
    let recorded = text(&repo.run(&["state", "show", "last-one"]).stdout);
    assert!(
        recorded.contains("quotas") && recorded.contains("deprovisioning"),
        "{recorded}"
    );

    repo.apply();
    repo.assert_plan_empty();
    let audited = pg.query(
        "SELECT address, count(*) AS n, bool_and(purged_at IS NOT NULL) AS done
         FROM tenant_reconcile.deletion_audit GROUP BY address",
    );
    assert_eq!(audited.len(), 7, "{audited:#?}");
    for row in &audited {
        assert_eq!(row["n"], json!(1), "audited once: {row}");
        assert_eq!(row["done"], json!(true), "finished: {row}");
    }
    assert_eq!(
        pg.count("SELECT count(*) FROM tenant_reconcile.outbox WHERE type = 'TenantDeprovisioned'"),
        1,
        "the tenant's end is announced once"
    );
    let role = pg.name("last-one");
    for sql in [
        format!("SELECT count(*) FROM pg_roles WHERE rolname = '{role}'"),
        format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{role}'"),
        "SELECT count(*) FROM tenant_reconcile.quotas q JOIN tenant_reconcile.tenants t
           ON t.tenant_id = q.tenant_id WHERE t.slug = 'last-one'"
            .to_string(),
    ] {
        assert_eq!(pg.count(&sql), 0, "{sql}");
    }
}

/// An erasure keeps one copy of the tenant's data, its export, for the customer to collect:
/// the plan, the audit and `show` say until when (the plan's `erasure_export_days`), and the
/// first apply after that removes it, and every copy of it set aside, audited as a purge.
#[test]
fn an_erasure_export_states_its_end_and_is_removed_after_it() {
    let repo = Repo::example();
    repo.apply();
    crate::offboarding::erase(&repo, "globex", true);
    let out = repo.run(&["plan"]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        said.contains("its export is kept 30 days (its plan's erasure_export_days), until ")
            && said.contains("the first apply after that removes it"),
        "{said}"
    );
    repo.apply();
    repo.assert_plan_empty();
    let exports = repo.path().join(".tenant-reconcile/exports");
    assert!(exports.join("globex/manifest.json").exists());
    let id = tenant_id(&repo, "globex");
    let entries = audit(&repo, "globex");
    assert!(!entries.is_empty());
    let until = entries[0]["export_until"].as_str().unwrap().to_string();
    for e in &entries {
        assert_eq!(e["export_until"].as_str(), Some(until.as_str()), "{e}");
    }
    assert!(
        text(&repo.run(&["audit", "globex"]).stdout)
            .contains(&format!("kept until {}", &until[..10])),
        "the audit table says the export's end"
    );
    let show = text(&repo.run(&["show"]).stdout);
    assert!(
        show.contains(&format!(
            "its erasure export .tenant-reconcile/exports/globex is kept until {}, then removed",
            &until[..10]
        )),
        "{show}"
    );

    // Its end comes (the plan now keeps such exports for no time): a copy set aside by an
    // earlier offboarding goes too, a folder claimed by no one stays.
    set_plan(&repo, "enterprise", "erasure_export_days", "0");
    // The state's record of the end is moved back, as time passing would.
    repo.edit_state(|state| {
        let purge = &mut state["tenants"]["globex"]["purge"];
        assert_eq!(purge["export_until"], json!(until));
        purge["export_until"] = json!("2020-01-01T00:00:00Z");
    });
    let aside = exports.join("globex.20250101T000000Z");
    std::fs::create_dir_all(&aside).unwrap();
    std::fs::write(aside.join(".tenant-reconcile-export"), format!("{id}\n")).unwrap();
    std::fs::write(aside.join("manifest.json"), "{}").unwrap();
    let notes = exports.join("globex.notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("readme.txt"), "not an export\n").unwrap();

    let out = repo.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    for expected in [
        "# globex has an erasure export past its end: the export, the last copy of its data, will be removed",
        "- globex/export  # erasure export .tenant-reconcile/exports/globex: kept until 2020-01-01",
    ] {
        assert!(plan.contains(expected), "missing {expected:?} in:\n{plan}");
    }
    repo.apply();
    repo.assert_plan_empty();
    assert!(!exports.join("globex").exists());
    assert!(!aside.exists(), "a copy set aside is the tenant's data too");
    assert!(
        notes.join("readme.txt").exists(),
        "what is not its export stays"
    );
    let entries = audit(&repo, "globex");
    let removal: Vec<&Value> = entries
        .iter()
        .filter(|e| e["address"] == "globex/export")
        .collect();
    assert_eq!(removal.len(), 1, "{entries:#?}");
    assert!(removal[0]["purged_at"].is_string());
    let show = text(&repo.run(&["show"]).stdout);
    assert!(show.contains("its erasure export was removed on"), "{show}");
    // Nothing moves the tombstone's dates.
    assert_eq!(
        repo.query(
            "control.sqlite",
            "SELECT lifecycle FROM tenants WHERE slug = 'globex'"
        ),
        [["deprovisioned"]]
    );
}

/// An erasure export kept in S3 is removed at its end the same way: the tenant's prefix and
/// every prefix set aside beside it that its claim names, and nothing else of the bucket.
#[test]
fn an_erasure_export_in_s3_is_removed_at_its_end_with_every_copy_set_aside() {
    let s3 = crate::moto::S3::new();
    let exports = format!("{}-exports", s3.prefix);
    s3.block_on(s3.client.create_bucket().bucket(&exports).send())
        .unwrap();
    let repo = s3.repo("");
    repo.write(
        "tenant-reconcile.hcl",
        &format!(
            "{}offboarding {{\n  export_to = \"s3://{exports}/offboarded\"\n}}\n",
            s3.config("")
        ),
    );
    set_plan(&repo, "enterprise", "erasure_export_days", "0");
    repo.apply();
    let id = tenant_id(&repo, "globex");
    crate::offboarding::erase(&repo, "globex", true);
    repo.apply();
    let put = |key: &str, body: String| {
        s3.block_on(
            s3.client
                .put_object()
                .bucket(&exports)
                .key(key)
                .body(aws_sdk_s3::primitives::ByteStream::from(body.into_bytes()))
                .send(),
        )
        .unwrap();
    };
    put(
        "offboarded/globex.20250101T000000Z/.tenant-reconcile-export",
        format!("{id}\n"),
    );
    put(
        "offboarded/globex.20250101T000000Z/manifest.json",
        "{}".into(),
    );
    put(
        "offboarded/globex.notes/readme.txt",
        "not an export\n".into(),
    );
    let keys = || s3.keys_under(&exports, "offboarded/");
    assert!(keys().contains(&"offboarded/globex/manifest.json".to_string()));

    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains(&format!(
            "- globex/export  # erasure export s3://{exports}/offboarded/globex: kept until "
        )),
        "{plan}"
    );
    repo.apply();
    repo.assert_plan_empty();
    assert_eq!(keys(), ["offboarded/globex.notes/readme.txt"]);
    let entries = audit(&repo, "globex");
    assert_eq!(
        entries
            .iter()
            .filter(|e| e["address"] == "globex/export" && e["purged_at"].is_string())
            .count(),
        1,
        "{entries:#?}"
    );
}

/// The tenants of the purges that go together.
const SIX: [&str; 6] = ["acme", "bravo", "charlie", "delta", "echo", "foxtrot"];

/// The six on Postgres, provisioned and offboarded with no hold, and the saved plan that
/// purges them all.
fn six_offboarded_with_their_purge_saved(pg: &Pg) -> (Repo, std::path::PathBuf) {
    let repo = pg.repo();
    no_hold(&repo);
    for slug in &SIX[1..] {
        repo.write_tenant(slug);
    }
    repo.apply();
    for slug in SIX {
        offboard(&repo, slug);
    }
    repo.apply();
    let saved = repo.path().join("purge.plan");
    let out = repo.run(&["plan", "--out", saved.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    (repo, saved)
}

/// Applies `saved` with every tenant at once, so their purges can go together.
fn apply_all_at_once(repo: &Repo, saved: &std::path::Path) -> std::process::Output {
    repo.run(&[
        "apply",
        saved.to_str().unwrap(),
        "--parallelism",
        "6",
        "--allow-mass-purge",
    ])
}

/// Seventy tenants purged by one apply go in three waves of at most 32, and the drops of two
/// waves go to the server at once: every schema and role goes, every resource is audited
/// once, and nothing is left to plan. (That two batches go at once is the group commit's own
/// unit test; here, that nothing is lost or done twice when they do.)
#[test]
fn a_mass_purge_drops_two_waves_at_once_and_audits_each_resource_once() {
    let pg = Pg::new();
    let mut repo = pg.repo();
    no_hold(&repo);
    let mut slugs = vec!["acme".to_string()];
    slugs.extend((1..70).map(|i| format!("wave-{i:02}")));
    for slug in &slugs[1..] {
        repo.write_tenant(slug);
    }
    repo.apply();
    for slug in &slugs {
        offboard(&repo, slug);
    }
    repo.apply();
    repo.env.push((
        "TENANT_RECONCILE_LOG".into(),
        "tenant_reconcile=debug".into(),
    ));
    let out = repo.run(&["apply", "--auto-approve", "--allow-mass-purge"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Each tenant's drops went in a batch, counted once; how the 70 split into batches
    // depends on when each reached its drops, but they went together, not one by one.
    let batches: Vec<usize> = err
        .lines()
        .filter_map(|l| {
            l.split("purging schemas and roles together (items: ")
                .nth(1)
        })
        .map(|n| n.trim_end_matches(')').parse().unwrap())
        .collect();
    assert_eq!(batches.iter().sum::<usize>(), 70, "{batches:?}");
    assert!(
        batches.len() <= 35,
        "batches of fewer than two: {batches:?}"
    );
    let names: Vec<String> = slugs.iter().map(|s| format!("'{}'", pg.name(s))).collect();
    let left = pg.count(&format!(
        "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname IN ({n}))
              + (SELECT count(*) FROM pg_roles WHERE rolname IN ({n})) AS n",
        n = names.join(", ")
    ));
    assert_eq!(left, 0, "schemas and roles left after the purge");
    let out = repo.run(&["audit", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    for slug in &slugs {
        let purged: Vec<&Value> = rows
            .iter()
            .filter(|r| r["slug"] == slug.as_str() && !r["purged_at"].is_null())
            .collect();
        assert_eq!(purged.len(), 7, "{slug}'s completed audit rows");
    }
    let mut addresses = addresses(&rows);
    let all = addresses.len();
    addresses.dedup();
    assert_eq!(addresses.len(), all, "a resource audited twice");
    repo.assert_plan_empty();
}

#[test]
fn schemas_purged_together_are_each_checked_and_one_not_ours_is_left_alone() {
    let pg = Pg::new();
    let (repo, saved) = six_offboarded_with_their_purge_saved(&pg);
    let slugs = SIX;
    // After the plan: delta's schema now carries bravo's mark, as if made for bravo. The
    // purge, however many tenants go with it, must not drop what is not delta's.
    let mark_of = |slug: &str| {
        pg.query(&format!(
            "SELECT obj_description(oid, 'pg_namespace') AS d FROM pg_namespace WHERE nspname = '{}'",
            pg.name(slug)
        ))[0]["d"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (delta, delta_mark) = (pg.name("delta"), mark_of("delta"));
    pg.exec(&format!(
        "COMMENT ON SCHEMA \"{delta}\" IS '{}'",
        mark_of("bravo")
    ));
    let out = apply_all_at_once(&repo, &saved);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "the schema {delta} was made by this state for another tenant"
        )),
        "{err}"
    );
    let exists = |slug: &str| {
        pg.count(&format!(
            "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = '{n}') + (SELECT count(*) FROM pg_roles WHERE rolname = '{n}') AS n",
            n = pg.name(slug)
        ))
    };
    for slug in slugs {
        let expected = if slug == "delta" { 2 } else { 0 };
        assert_eq!(exists(slug), expected, "{slug}'s schema and role");
    }
    let purged = |slug: &str| completed_audit_rows(&repo, slug);
    for slug in slugs {
        let expected = if slug == "delta" { 0 } else { 7 };
        assert_eq!(purged(slug), expected, "{slug}'s completed audit rows");
    }

    // Its own mark back, delta is purged by the next apply, and audited once.
    pg.exec(&format!("COMMENT ON SCHEMA \"{delta}\" IS '{delta_mark}'"));
    let out = repo.run(&["apply", "--auto-approve", "--allow-mass-purge"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(exists("delta"), 0);
    assert_eq!(audit(&repo, "delta").len(), 7);
    assert_eq!(purged("delta"), 7);
    repo.assert_plan_empty();
}

#[test]
fn purges_ending_together_each_leave_one_tombstone_and_a_tenant_not_where_its_plan_says_ends_alone()
{
    let pg = Pg::new();
    let (repo, saved) = six_offboarded_with_their_purge_saved(&pg);
    let slugs = SIX;
    // After the plan, delta's registry row is moved back to active by hand: its purge's
    // end must not move it on from there, whichever tenants' ends it was written with.
    pg.exec("UPDATE tenant_reconcile.tenants SET lifecycle = 'active' WHERE slug = 'delta'");
    let out = apply_all_at_once(&repo, &saved);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot move a tenant from active to deprovisioned"),
        "{err}"
    );
    let registry = |slug: &str| {
        pg.query(&format!(
            "SELECT lifecycle, name, deprovisioned_at IS NOT NULL AS at,
               (SELECT count(*) FROM tenant_reconcile.outbox o WHERE o.tenant_id = t.tenant_id
                  AND o.type = 'TenantDeprovisioned') AS events,
               (SELECT count(*) FROM tenant_reconcile.outbox o WHERE o.tenant_id = t.tenant_id
                  AND o.payload->>'owner_email' IS NOT NULL) AS emails,
               (SELECT count(*) FROM tenant_reconcile.memberships m WHERE m.tenant_id = t.tenant_id)
                 + (SELECT count(*) FROM tenant_reconcile.quotas q WHERE q.tenant_id = t.tenant_id)
                 + (SELECT count(*) FROM tenant_reconcile.feature_flags f WHERE f.tenant_id = t.tenant_id) AS rows
             FROM tenant_reconcile.tenants t WHERE slug = '{slug}'"
        ))[0]
            .clone()
    };
    let purged = |slug: &str| completed_audit_rows(&repo, slug);
    for slug in slugs.iter().filter(|s| **s != "delta") {
        let row = registry(slug);
        assert_eq!(row["lifecycle"], "deprovisioned", "{slug}: {row}");
        assert_eq!(row["name"], "", "{slug}'s tombstone keeps no name: {row}");
        assert_eq!(row["at"], true, "{slug}: {row}");
        assert_eq!(
            row["events"], 1,
            "{slug}'s TenantDeprovisioned events: {row}"
        );
        assert_eq!(row["emails"], 0, "{slug}'s events keep no email: {row}");
        assert_eq!(row["rows"], 0, "{slug}'s control-plane rows: {row}");
        assert_eq!(purged(slug), 7, "{slug}'s completed audit rows");
    }
    // delta's end changed nothing: its rows are there, its audit not completed.
    let row = registry("delta");
    assert_eq!(row["lifecycle"], "active", "{row}");
    assert_eq!(row["events"], 0, "{row}");
    assert_ne!(row["rows"], 0, "{row}");
    assert_eq!(purged("delta"), 0);

    // Back where its plan has it, delta's purge is ended by the next apply, once.
    pg.exec(
        "UPDATE tenant_reconcile.tenants SET lifecycle = 'deprovisioning' WHERE slug = 'delta'",
    );
    let out = repo.run(&["apply", "--auto-approve", "--allow-mass-purge"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let row = registry("delta");
    assert_eq!(row["lifecycle"], "deprovisioned", "{row}");
    assert_eq!(row["events"], 1, "{row}");
    assert_eq!(row["emails"], 0, "{row}");
    assert_eq!(row["rows"], 0, "{row}");
    assert_eq!(purged("delta"), 7);
    repo.assert_plan_empty();
}

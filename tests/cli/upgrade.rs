//! A state an earlier tenant-reconcile wrote, as one document with checkpoints beside it, met
//! by this one: a plan reads it as it is and writes nothing; the first run that takes the
//! lock converts it to a record per tenant, keeping the document as a backup and leaving a
//! stub that an earlier tenant-reconcile refuses as a newer format; a conversion cut short
//! is done again; a plan saved before it is stale after it.
//!
//! `tests/fixtures/state-v1/` was made by the build before records (commit a9aab03): the
//! example tenants applied to the local targets with the state on Postgres, then `check`,
//! which leaves its health records as checkpoints. `repo/` is the tenant repo with what the
//! local targets hold; `state.json` the state's document as that build stored it, and
//! `checkpoints.jsonl` the checkpoints written after it (a local state's journal holds the
//! same lines; the s3 backend kept each tenant's latest as an object of its own).

use serde_json::{json, Value};

use crate::moto::S3;
use crate::pg::Pg;
use crate::support::{project_root, text, Repo};

const FIXTURE: &str = "tests/fixtures/state-v1";

fn fixture(file: &str) -> String {
    std::fs::read_to_string(project_root().join(FIXTURE).join(file)).unwrap()
}

/// The fixture's tenant repo, its state in the local backend as that build kept it.
fn local_v1() -> Repo {
    let repo = Repo::fixture(&format!("{FIXTURE}/repo"));
    repo.write(".tenant-reconcile/state.json", &fixture("state.json"));
    repo.write(
        ".tenant-reconcile/state.json.journal",
        &fixture("checkpoints.jsonl"),
    );
    repo
}

fn document_version(repo: &Repo, file: &str) -> Value {
    let document: Value =
        serde_json::from_str(&std::fs::read_to_string(repo.state_dir().join(file)).unwrap())
            .unwrap();
    document["format_version"].clone()
}

/// A conversion kept the document whole in its backup, and the state as it was.
fn assert_converted(before: &Value, backup: &Value, after: &Value) {
    assert_eq!(
        backup["tenants"], before["tenants"],
        "the backup holds it all"
    );
    assert_eq!(after["tenants"], before["tenants"], "converted as it was");
    assert_eq!(after["lineage"], before["lineage"]);
}

/// A plan saved before the conversion is refused as stale after it.
fn assert_stale(repo: &Repo, saved: &str) {
    let out = repo.run(&["apply", saved]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("stale"), "{}", text(&out.stderr));
}

/// acme takes five seats more (80 to 85).
fn raise_acme_seats(repo: &Repo) {
    let acme = repo.path().join("tenants/acme.yaml");
    let file = std::fs::read_to_string(&acme).unwrap();
    std::fs::write(&acme, file.replace("seats: 80", "seats: 85")).unwrap();
}

#[test]
fn a_local_state_in_the_one_document_format_is_read_then_converted_with_a_backup() {
    let repo = local_v1();
    let untouched = repo.fingerprint();
    let out = repo.run(&["plan", "--detailed-exitcode", "--out", "before.plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("No changes"),
        "{}",
        text(&out.stdout)
    );
    let before = repo.state_json();
    // The checkpoints after the document are read too: check's health records.
    assert!(before["tenants"]["acme"]["health"].is_object(), "{before}");
    assert_eq!(untouched, repo.fingerprint(), "a plan converted the state");

    repo.apply();
    assert_eq!(document_version(&repo, "state.json"), json!(2));
    assert_eq!(document_version(&repo, "state.json.v1-backup"), json!(1));
    assert!(!repo.state_dir().join("state.json.journal").exists());
    let backup: Value = serde_json::from_str(
        &std::fs::read_to_string(repo.state_dir().join("state.json.v1-backup")).unwrap(),
    )
    .unwrap();
    assert_converted(&before, &backup, &repo.state_json());
    assert_eq!(
        repo.count("state.db", "SELECT count(*) FROM state_tenants"),
        4
    );

    assert_stale(&repo, "before.plan");

    // Records carry on as the document did.
    raise_acme_seats(&repo);
    repo.apply();
    let seats = &repo.state_json()["tenants"]["acme"]["resources"]["quotas"]["seats"];
    assert_eq!(seats, &json!(85));
    repo.assert_plan_empty();
}

#[test]
fn a_local_conversion_cut_short_is_finished_and_a_document_written_beside_records_refused() {
    let repo = local_v1();
    repo.apply();
    let seats =
        |repo: &Repo| repo.state_json()["tenants"]["acme"]["resources"]["quotas"]["seats"].clone();
    raise_acme_seats(&repo);
    repo.apply();
    assert_eq!(seats(&repo), json!(85));
    // As a kill after the records were written and before the stub replaced the document
    // leaves it: the document it was made from in place, and the records beside it. The
    // next run finishes it, and the records stand: the document is not converted again.
    std::fs::copy(
        repo.state_dir().join("state.json.v1-backup"),
        repo.state_dir().join("state.json"),
    )
    .unwrap();
    repo.apply();
    assert_eq!(document_version(&repo, "state.json"), json!(2));
    assert_eq!(seats(&repo), json!(85), "the records stood");
    assert_eq!(
        repo.count("state.db", "SELECT count(*) FROM state_tenants"),
        4
    );
    repo.assert_plan_empty();

    // A document an earlier tenant-reconcile wrote beside the records (it found no stub):
    // refused, nothing changed.
    let mut other: Value = serde_json::from_str(&fixture("state.json")).unwrap();
    other["serial"] = json!(other["serial"].as_u64().unwrap() + 7);
    repo.write(".tenant-reconcile/state.json", &other.to_string());
    let before = repo.fingerprint();
    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("written by an earlier tenant-reconcile after this state became records"),
        "{err}"
    );
    assert_eq!(
        before,
        repo.fingerprint(),
        "a refused conversion changed something"
    );
}

/// The one-document tables as the earlier build made them, holding the fixture's state.
fn postgres_v1(pg: &Pg) -> Repo {
    let mut repo = Repo::fixture(&format!("{FIXTURE}/repo"));
    repo.env = vec![("DATABASE_URL".into(), pg.url())];
    repo.write(
        "tenant-reconcile.hcl",
        "state {\n  backend = \"postgres\"\n}\n",
    );
    pg.exec(
        "CREATE SCHEMA tenant_reconcile;
         CREATE TABLE tenant_reconcile.states (name text PRIMARY KEY, serial bigint NOT NULL,
             body text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE tenant_reconcile.state_checkpoints (name text NOT NULL, seq bigserial,
             entry text NOT NULL, PRIMARY KEY (name, seq));
         CREATE TABLE tenant_reconcile.state_locks (name text PRIMARY KEY, info text NOT NULL)",
    );
    let body = fixture("state.json");
    let document: Value = serde_json::from_str(&body).unwrap();
    pg.exec(&format!(
        "INSERT INTO tenant_reconcile.states (name, serial, body) VALUES ('default', {}, {})",
        document["serial"],
        literal(body.trim_end())
    ));
    for entry in fixture("checkpoints.jsonl").lines() {
        pg.exec(&format!(
            "INSERT INTO tenant_reconcile.state_checkpoints (name, entry) VALUES ('default', {})",
            literal(entry)
        ));
    }
    repo
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[test]
fn a_postgres_state_in_the_one_document_format_is_converted_in_one_transaction() {
    let pg = Pg::new();
    let repo = postgres_v1(&pg);
    let out = repo.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let before = repo.state_json();
    assert!(before["tenants"]["acme"]["health"].is_object(), "{before}");

    // Killed in the middle of its conversion: held on the header's insert, the last write.
    pg.exec(
        "CREATE TABLE tenant_reconcile.state_header (name text PRIMARY KEY,
             generation bigint NOT NULL, body text NOT NULL);
         CREATE FUNCTION public.hold_the_header() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(600); RETURN NEW; END $$;
         CREATE TRIGGER hold_the_header BEFORE INSERT ON tenant_reconcile.state_header
           FOR EACH ROW EXECUTE FUNCTION public.hold_the_header()",
    );
    let mut child = repo.spawn_apply(1);
    let held = "SELECT count(*) FROM pg_stat_activity
                WHERE datname = current_database() AND wait_event = 'PgSleep'";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while pg.count(held) == 0 {
        assert!(std::time::Instant::now() < deadline, "never converted");
        assert!(child.try_wait().unwrap().is_none(), "the apply ended first");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    pg.exec(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event = 'PgSleep'",
    );
    pg.exec("DROP TRIGGER hold_the_header ON tenant_reconcile.state_header; DROP FUNCTION public.hold_the_header()");
    // Nothing of it was kept: the document and its checkpoints are as they were.
    assert_eq!(
        pg.query("SELECT body::jsonb->>'format_version' AS v FROM tenant_reconcile.states"),
        vec![json!({"v": "1"})]
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM tenant_reconcile.state_checkpoints"),
        fixture("checkpoints.jsonl").lines().count() as i64
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM tenant_reconcile.state_tenants"),
        0
    );

    repo.apply();
    let rows = pg.query(
        "SELECT (SELECT body::jsonb->>'format_version' FROM tenant_reconcile.states) AS stub,
                (SELECT body::jsonb->>'format_version' FROM tenant_reconcile.state_v1_backups) AS backup,
                (SELECT count(*) FROM tenant_reconcile.state_checkpoints) AS checkpoints,
                (SELECT count(*) FROM tenant_reconcile.state_tenants) AS records",
    );
    assert_eq!(
        rows,
        vec![json!({"stub": "2", "backup": "1", "checkpoints": 0, "records": 4})]
    );
    let after = repo.state_json();
    assert_eq!(after["tenants"], before["tenants"], "converted as it was");
    repo.assert_plan_empty();
}

/// The fixture's tenant repo, its state in a bucket of the test's own as the earlier build
/// kept it there: the document at the key, and an object per tenant holding its latest
/// checkpoint.
fn s3_v1(s3: &S3) -> (Repo, String) {
    let bucket = format!("{}-state", s3.prefix);
    s3.block_on(s3.client.create_bucket().bucket(&bucket).send())
        .unwrap();
    let mut repo = Repo::fixture(&format!("{FIXTURE}/repo"));
    repo.write(
        "tenant-reconcile.hcl",
        &format!(
            "state {{\n  backend = \"s3\"\n  bucket = \"{bucket}\"\n  key = \"env/prod.json\"\n}}\ns3 {{\n  force_path_style = true\n}}\n"
        ),
    );
    // The fixture's master key, the server's address and credentials.
    repo.env.extend(
        s3.env()
            .into_iter()
            .filter(|(k, _)| k != "TENANT_RECONCILE_MASTER_KEY"),
    );
    s3.put(&bucket, "env/prod.json", &fixture("state.json"));
    for entry in fixture("checkpoints.jsonl").lines() {
        let slug = serde_json::from_str::<Value>(entry).unwrap()["slug"]
            .as_str()
            .unwrap()
            .to_string();
        s3.put(&bucket, &format!("env/prod.json.checkpoints/{slug}"), entry);
    }
    (repo, bucket)
}

#[test]
fn an_s3_state_in_the_one_document_format_is_read_then_converted_with_a_backup() {
    let s3 = S3::new();
    let (repo, bucket) = s3_v1(&s3);
    let stored = s3.keys(&bucket);
    let out = repo.run(&["plan", "--detailed-exitcode", "--out", "before.plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let before = repo.state_json();
    assert!(before["tenants"]["acme"]["health"].is_object(), "{before}");
    assert_eq!(s3.keys(&bucket), stored, "a plan converted the state");
    assert_eq!(
        s3.get_json(&bucket, "env/prod.json")["format_version"],
        json!(1)
    );

    repo.apply();
    let records = |extra: &[&str]| {
        let mut keys: Vec<String> = ["acme", "globex", "initech", "umbrella-labs"]
            .iter()
            .map(|s| format!("env/prod.json.tenants/{s}"))
            .chain(["env/prod.json", "env/prod.json.v1-backup"].map(String::from))
            .chain(extra.iter().map(|s| s.to_string()))
            .collect();
        keys.sort();
        keys
    };
    // The header over the document, a record per tenant, the backup; no checkpoints.
    assert_eq!(s3.keys(&bucket), records(&[]));
    let header = s3.get_json(&bucket, "env/prod.json");
    assert_eq!(header["format_version"], json!(2), "{header}");
    assert_eq!(header["live"], json!(4), "{header}");
    let backup = s3.get_json(&bucket, "env/prod.json.v1-backup");
    assert_eq!(backup["format_version"], json!(1));
    assert_converted(&before, &backup, &repo.state_json());

    assert_stale(&repo, "before.plan");

    // As a conversion cut short leaves it: the document still at the key (its header is
    // written last), and records beside it, one of a tenant the document does not hold.
    // The next run converts it again from the document, and the stray record goes.
    s3.put(&bucket, "env/prod.json", &backup.to_string());
    s3.put(
        &bucket,
        "env/prod.json.tenants/ghost",
        r#"{"generation": 1, "tenant": {"lifecycle": "active"}}"#,
    );
    raise_acme_seats(&repo);
    repo.apply();
    assert_eq!(s3.keys(&bucket), records(&[]));
    assert_eq!(
        s3.get_json(&bucket, "env/prod.json")["format_version"],
        json!(2)
    );
    let seats = &repo.state_json()["tenants"]["acme"]["resources"]["quotas"]["seats"];
    assert_eq!(seats, &json!(85));
    repo.assert_plan_empty();
}

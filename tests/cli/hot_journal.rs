//! A writer killed mid-transaction leaves a hot rollback journal beside a local-target
//! SQLite file, with pages of its transaction already in the file. Every reader must read
//! what was committed: the next plan sees through it, and rolls it back, since only a
//! connection that may write can. The writer here is a child process that holds a big
//! uncommitted transaction and is killed with SIGKILL.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::offboarding::offboard;
use crate::purge::no_hold;
use crate::support::{text, Repo};

const WRITER_DB: &str = "TENANT_RECONCILE_TEST_WRITER_DB";
const WRITER_SQL: &str = "TENANT_RECONCILE_TEST_WRITER_SQL";

/// So many rows of half a kilobyte that SQLite, with a cache of a few pages, writes pages of
/// the transaction into the database file before any commit.
const SPILL: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000) SELECT hex(randomblob(256)) FROM n";

/// The child process of the tests below (this test binary, started again on this test
/// alone): runs the statements of `WRITER_SQL` on the SQLite file `WRITER_DB` in one
/// transaction that it never commits, says `ready`, and waits to be killed.
#[test]
#[ignore = "the killed writer of the hot-journal tests, started by them"]
fn killed_writer() {
    let (Ok(db), Ok(sql)) = (std::env::var(WRITER_DB), std::env::var(WRITER_SQL)) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use sqlx::Connection;
        let url = format!("sqlite://{db}?mode=rwc");
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::raw_sql("PRAGMA cache_size = 8; BEGIN IMMEDIATE;")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::raw_sql(&sql).execute(&mut conn).await.unwrap();
        println!("ready");
        tokio::time::sleep(std::time::Duration::from_secs(600)).await;
    });
}

/// Runs `sql` on `db` in a transaction and kills the writer with SIGKILL before it commits;
/// asserts the kill left a hot journal.
fn kill_writer_mid_transaction(db: &Path, sql: &str) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "hot_journal::killed_writer",
            "--ignored",
            "--nocapture",
        ])
        .env(WRITER_DB, db)
        .env(WRITER_SQL, sql)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.map_while(Result::ok) {
        if line == "ready" {
            break;
        }
        seen.push(line);
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the writer ended early: {seen:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let mut journal = db.as_os_str().to_owned();
    journal.push("-journal");
    let size = std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0);
    assert!(size > 0, "no hot journal beside {}", db.display());
}

#[test]
fn a_writer_killed_on_a_tenant_database_leaves_the_next_plan_reading_what_was_committed() {
    let repo = Repo::example();
    no_hold(&repo);
    repo.apply();
    offboard(&repo, "acme");
    repo.apply();
    // Rows that were never committed, pages of them already in acme's database file.
    kill_writer_mid_transaction(
        &repo.state_dir().join("data/acme.sqlite"),
        &format!("INSERT INTO projects (name) {SPILL}"),
    );
    // And the control plane (write-ahead log) killed mid-transaction too.
    kill_writer_mid_transaction_wal(&repo.state_dir().join("control.sqlite"));
    let out = repo.run(&["plan", "--detailed-exitcode"]);
    let plan = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{plan}\n{}", text(&out.stderr));
    assert!(
        plan.contains("- acme/database  # database file data/acme.sqlite: 2 tables, 3 rows"),
        "{plan}"
    );
    assert!(
        plan.contains("Plan: 0 to add, 1 to change, 7 to destroy."),
        "{plan}"
    );
    // The journal was rolled back; with none left, a plan changes no file.
    assert!(!repo.state_dir().join("data/acme.sqlite-journal").exists());
    let before = repo.fingerprint();
    assert_eq!(repo.run(&["plan"]).status.code(), Some(0));
    assert_eq!(
        before,
        repo.fingerprint(),
        "a plan wrote to the local target"
    );
    assert_eq!(
        repo.count("data/acme.sqlite", "SELECT count(*) FROM projects"),
        1
    );
    repo.apply();
    assert!(!repo.state_dir().join("data/acme.sqlite").exists());
    repo.assert_plan_empty();
}

/// A writer of the control plane (in write-ahead-log mode, as the tool keeps it) killed
/// mid-transaction: what it did is in the log, uncommitted.
fn kill_writer_mid_transaction_wal(db: &Path) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "hot_journal::killed_writer",
            "--ignored",
            "--nocapture",
        ])
        .env(WRITER_DB, db)
        .env(
            WRITER_SQL,
            format!("UPDATE tenants SET name = 'Changed'; CREATE TABLE filler AS {SPILL}"),
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .any(|l| l == "ready");
    assert!(ready, "the writer ended early");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_writer_killed_creating_the_control_plane_and_catalog_leaves_the_next_plan_working() {
    let repo = Repo::example();
    std::fs::create_dir_all(repo.state_dir()).unwrap();
    // As a run killed while it made these files leaves them: a file, and a hot journal
    // whose transaction made it.
    for db in ["control.sqlite", "catalog.sqlite"] {
        kill_writer_mid_transaction(
            &repo.state_dir().join(db),
            &format!("CREATE TABLE tenants (name TEXT); INSERT INTO tenants {SPILL}"),
        );
    }
    let out = repo.run(&["plan", "--detailed-exitcode"]);
    let plan = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{plan}\n{}", text(&out.stderr));
    assert!(plan.contains("+ acme/registry"), "{plan}");
    assert!(plan.contains("+ acme/role"), "{plan}");
    repo.apply();
    assert_eq!(
        repo.count("control.sqlite", "SELECT count(*) FROM tenants"),
        4
    );
    repo.assert_plan_empty();
}

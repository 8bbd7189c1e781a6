//! The outbox relay to webhooks, against a receiver that verifies every signature with the
//! Standard Webhooks library (`tests/peers/webhook_receiver.py`, run from the test
//! virtualenv `./scripts/test` makes).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::support::{project_root, text, Repo};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

struct Receiver {
    child: Child,
    port: u16,
    log: PathBuf,
    script: PathBuf,
    _dir: tempfile::TempDir,
}

impl Receiver {
    fn start() -> Receiver {
        let python = std::env::var("TENANT_RECONCILE_TEST_PYTHON").unwrap_or_else(|_| {
            panic!(
                "these tests need the test virtualenv with the standardwebhooks library: run ./scripts/test, \
                 or set TENANT_RECONCILE_TEST_PYTHON to a python that has it (pip install standardwebhooks)"
            )
        });
        let dir = tempfile::TempDir::new().unwrap();
        let (log, script) = (dir.path().join("log.jsonl"), dir.path().join("script.json"));
        let mut child = Command::new(python)
            .arg(project_root().join("tests/peers/webhook_receiver.py"))
            .args([SECRET, log.to_str().unwrap(), script.to_str().unwrap()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the webhook receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the receiver did not start: {line:?}"));
        Receiver {
            child,
            port,
            log,
            script,
            _dir: dir,
        }
    }

    fn answer(&self, script: Value) {
        std::fs::write(&self.script, script.to_string()).unwrap();
    }

    /// The webhook-id of every request, in the order they came.
    fn ids(&self) -> Vec<String> {
        let requests = self.requests();
        requests
            .iter()
            .map(|g| g["id"].as_str().unwrap().to_string())
            .collect()
    }

    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example with a webhook to `r` (and the relay's waits shortened to `schedule`).
fn repo_for(r: &Receiver, events: &str) -> Repo {
    let mut repo = Repo::example();
    repo.write(
        "tenant-reconcile.hcl",
        &format!(
            "webhook \"billing\" {{\n  url = \"http://127.0.0.1:{}/hooks\"\n  secret_env = \"BILLING_WEBHOOK_SECRET\"\n  timeout = \"2s\"\n}}\n{events}",
            r.port
        ),
    );
    repo.env
        .push(("BILLING_WEBHOOK_SECRET".into(), SECRET.into()));
    repo
}

fn outbox(repo: &Repo) -> Vec<(String, String, String)> {
    repo.query(
        "control.sqlite",
        "SELECT event_id, tenant_id, type FROM outbox ORDER BY id",
    )
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
    .collect()
}

fn deliver(repo: &Repo) -> String {
    let out = repo.run(&["events", "deliver"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn every_event_arrives_once_signed_and_in_order_per_tenant() {
    let r = Receiver::start();
    let repo = repo_for(&r, "");
    repo.apply();
    let events = outbox(&repo);
    assert_eq!(events.len(), 5, "{events:?}");
    let out = deliver(&repo);
    assert_eq!(
        out.trim(),
        "Delivered 5 events; 0 failed and will be retried; 0 dead."
    );
    let got = r.requests();
    assert!(got.iter().all(|g| g["verified"] == true), "{got:?}");
    let mut ids: Vec<&str> = got.iter().map(|g| g["id"].as_str().unwrap()).collect();
    ids.sort();
    let mut want: Vec<&str> = events.iter().map(|(id, ..)| id.as_str()).collect();
    want.sort();
    assert_eq!(ids, want, "each event once");
    // umbrella-labs was provisioned, then suspended: its receiver saw them in that order.
    let umbrella: Vec<&str> = got
        .iter()
        .filter(|g| g["slug"] == "umbrella-labs")
        .map(|g| g["type"].as_str().unwrap())
        .collect();
    assert_eq!(umbrella, ["TenantProvisioned", "TenantSuspended"]);
    // Nothing is due any more: a second relay sends nothing.
    assert!(deliver(&repo).starts_with("Delivered 0 events"));
    assert_eq!(r.requests().len(), 5);
    repo.assert_plan_empty();
}

#[test]
fn a_failing_event_holds_its_tenants_later_ones_and_is_retried_on_the_same_id() {
    let r = Receiver::start();
    r.answer(serde_json::json!({"umbrella-labs": [503, 200]}));
    // The first retry waits longer than any one relay run takes, even on a busy machine: the
    // relay passes again while something is due, and a retry due within the run would be sent.
    let repo = repo_for(&r, "events {\n  schedule = [\"5s\", \"1s\"]\n}\n");
    repo.apply();
    let out = deliver(&repo);
    assert_eq!(
        out.trim(),
        "Delivered 3 events; 1 failed and will be retried; 0 dead."
    );
    let got = r.requests();
    let umbrella: Vec<&Value> = got
        .iter()
        .filter(|g| g["slug"] == "umbrella-labs")
        .collect();
    // Its suspension waits for its provisioning: not sent at all yet.
    assert_eq!(umbrella.len(), 1, "{got:?}");
    assert_eq!(umbrella[0]["type"], "TenantProvisioned");
    assert_eq!(umbrella[0]["status"], 503);
    // Until the retry is due.
    let started = std::time::Instant::now();
    let out = loop {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let out = deliver(&repo);
        if !out.starts_with("Delivered 0 events") || started.elapsed().as_secs() > 15 {
            break out;
        }
    };
    assert_eq!(
        out.trim(),
        "Delivered 2 events; 0 failed and will be retried; 0 dead."
    );
    // The schedule is kept as the attempts were recorded, not as this test's clock saw it
    // (a relay run on a busy machine may take seconds of its own): 5 s less its jitter (a
    // fifth) and the second the recorded times are truncated to, so at least 3 s, where
    // the schedule's next step would have been 1 s.
    let waited = repo.query(
        "control.sqlite",
        "SELECT (julianday(b.at) - julianday(a.at)) * 86400 >= 2.99 \
         FROM delivery_attempts a JOIN delivery_attempts b ON b.event_id = a.event_id AND b.id > a.id \
         WHERE a.status_code = 503",
    );
    assert_eq!(waited, [["1"]], "retried before the schedule's 5 s");
    let got = r.requests();
    let umbrella: Vec<(&str, i64, &str)> = got
        .iter()
        .filter(|g| g["slug"] == "umbrella-labs")
        .map(|g| {
            (
                g["type"].as_str().unwrap(),
                g["status"].as_i64().unwrap(),
                g["id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(umbrella.len(), 3);
    assert_eq!((umbrella[1].0, umbrella[1].1), ("TenantProvisioned", 200));
    assert_eq!(
        umbrella[0].2, umbrella[1].2,
        "the retry has the same webhook-id"
    );
    assert_eq!(umbrella[2].0, "TenantSuspended");
    // Every attempt is recorded, with what came back.
    let attempts = repo.query(
        "control.sqlite",
        "SELECT status_code FROM delivery_attempts ORDER BY id",
    );
    assert_eq!(attempts.len(), 6);
    assert_eq!(attempts.iter().filter(|a| a[0] == "503").count(), 1);
}

#[test]
fn a_410_disables_the_webhook_and_a_dead_delivery_lets_the_next_go() {
    let r = Receiver::start();
    r.answer(serde_json::json!({"*": [410]}));
    let repo = repo_for(&r, "");
    repo.apply();
    let out = deliver(&repo);
    assert!(
        out.contains("The webhook billing answered 410 Gone and is disabled."),
        "{out}"
    );
    let sent = r.requests().len();
    assert!(sent >= 1);
    deliver(&repo);
    assert_eq!(
        r.requests().len(),
        sent,
        "a disabled webhook is sent nothing"
    );
    // Enabled again by hand, it gets what waited for it.
    r.answer(serde_json::json!({"*": [200]}));
    let out = repo.run(&["events", "enable", "biling"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("declares no webhook \"biling\""),
        "{}",
        text(&out.stderr)
    );
    let out = repo.run(&["events", "enable", "billing"]);
    assert!(
        text(&out.stdout).contains("The webhook billing is enabled again"),
        "{}",
        text(&out.stdout)
    );
    assert!(deliver(&repo).starts_with("Delivered 5 events"));

    // A receiver failing past retry_for: the delivery is dead, the tenant's next one goes.
    let r = Receiver::start();
    r.answer(serde_json::json!({"umbrella-labs": [500, 200]}));
    let repo = repo_for(
        &r,
        "events {\n  retry_for = \"1s\"\n  schedule = [\"2s\"]\n}\n",
    );
    repo.apply();
    let out = deliver(&repo);
    assert_eq!(
        out.trim(),
        "Delivered 4 events; 0 failed and will be retried; 1 dead."
    );
    let dead = repo.query(
        "control.sqlite",
        "SELECT o.type FROM deliveries d JOIN outbox o ON o.event_id = d.event_id WHERE d.status = 'dead'",
    );
    assert_eq!(dead, vec![vec!["TenantProvisioned".to_string()]]);

    // The dead letter is listed, shown with its attempt, and delivered again on request.
    let out = repo.run(&["events", "list", "--dead", "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let id = listed[0]["event_id"].as_str().unwrap().to_string();
    assert_eq!(listed[0]["slug"], "umbrella-labs");
    assert_eq!(listed[0]["last_error"], "answered 500");
    let shown = text(&repo.run(&["events", "show", &id]).stdout);
    assert!(
        shown.contains("billing") && shown.contains(" 500 "),
        "{shown}"
    );
    let table = text(
        &repo
            .run(&["events", "list", "--tenant", "umbrella-labs"])
            .stdout,
    );
    assert!(
        table.contains("TenantProvisioned") && table.contains("dead"),
        "{table}"
    );
    let out = repo.run(&["events", "redeliver", &id]);
    assert!(
        text(&out.stdout).starts_with("1 delivery is due again"),
        "{}",
        text(&out.stdout)
    );
    assert!(deliver(&repo).starts_with("Delivered 1 event;"));
    let again: Vec<Value> = r
        .requests()
        .into_iter()
        .filter(|g| g["id"] == id.as_str())
        .collect();
    assert_eq!(again.len(), 2, "sent again with the same id");
    assert_eq!(again[1]["status"], 200);
    assert!(text(&repo.run(&["events", "list", "--dead"]).stdout).starts_with("No deliveries."));
}

#[test]
fn a_missing_or_malformed_secret_is_a_clear_error_and_sends_nothing() {
    let r = Receiver::start();
    let mut repo = repo_for(&r, "");
    repo.apply();
    repo.env.retain(|(k, _)| k != "BILLING_WEBHOOK_SECRET");
    let out = repo.run(&["events", "deliver"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("the webhook billing has no secret: set BILLING_WEBHOOK_SECRET"),
        "{}",
        text(&out.stderr)
    );
    repo.env
        .push(("BILLING_WEBHOOK_SECRET".into(), "hunter2".into()));
    let out = repo.run(&["events", "deliver"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("a webhook secret starts with whsec_"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    assert!(r.requests().is_empty());
}

/// Adds a webhook `name` to the repo's config, sending to `r` and signing with the test's
/// secret; `more` is written into its block as it is (`history = true`).
fn add_webhook(repo: &Repo, name: &str, r: &Receiver, more: &str) {
    let config = std::fs::read_to_string(repo.path().join("tenant-reconcile.hcl")).unwrap();
    repo.write(
        "tenant-reconcile.hcl",
        &format!(
            "{config}\nwebhook \"{name}\" {{\n  url = \"http://127.0.0.1:{}/hooks\"\n  secret_env = \"BILLING_WEBHOOK_SECRET\"\n{more}}}\n",
            r.port
        ),
    );
}

/// A repo on `pg`'s own database whose events go to `r`.
fn pg_repo_for(pg: &crate::pg::Pg, r: &Receiver) -> Repo {
    let mut repo = pg.repo();
    add_webhook(&repo, "billing", r, "");
    repo.env
        .push(("BILLING_WEBHOOK_SECRET".into(), SECRET.into()));
    repo
}

#[test]
fn on_postgres_two_relays_at_once_never_send_one_event_twice() {
    let r = Receiver::start();
    r.answer(serde_json::json!({"*": ["200@0.3"]}));
    let pg = crate::pg::Pg::new();
    let repo = pg_repo_for(&pg, &r);
    // More tenants, so that the two relays meet over many events.
    let acme = std::fs::read_to_string(repo.path().join("tenants/acme.yaml")).unwrap();
    for i in 0..8 {
        repo.write(
            &format!("tenants/extra-{i}.yaml"),
            &acme.replace("acme", &format!("extra-{i}")),
        );
    }
    repo.apply();
    let events: Vec<String> = pg
        .query("SELECT event_id FROM tenant_reconcile.outbox ORDER BY id")
        .into_iter()
        .map(|r| r["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events.len(), 13);
    let relays: Vec<std::process::Child> = (0..2)
        .map(|_| {
            Command::new(assert_cmd::cargo::cargo_bin("tenant-reconcile"))
                .args(["-C", repo.path().to_str().unwrap(), "events", "deliver"])
                .envs(repo.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for relay in relays {
        let out = relay.wait_with_output().unwrap();
        assert!(out.status.success());
        assert!(
            text(&out.stdout).starts_with("Delivered"),
            "{}",
            text(&out.stdout)
        );
    }
    let mut sent = r.ids();
    sent.sort();
    let mut want = events.clone();
    want.sort();
    assert_eq!(
        sent, want,
        "each event sent once, by one relay or the other"
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM tenant_reconcile.deliveries WHERE status = 'delivered'"),
        13
    );
    repo.assert_plan_empty();

    // Listed, redelivered on request, and pruned once older than keep_days (0 here).
    let listed: Value =
        serde_json::from_slice(&repo.run(&["events", "list", "--json"]).stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 13);
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] == "delivered"));
    let again = listed[0]["event_id"].as_str().unwrap().to_string();
    let out = repo.run(&["events", "redeliver", &again]);
    assert!(
        text(&out.stdout).starts_with("1 delivery is due again"),
        "{}",
        text(&out.stdout)
    );
    r.answer(serde_json::json!({"*": [200]}));
    assert!(deliver(&repo).starts_with("Delivered 1 event;"));
    assert_eq!(
        r.requests()
            .iter()
            .filter(|g| g["id"] == again.as_str())
            .count(),
        2
    );
    let config = std::fs::read_to_string(repo.path().join("tenant-reconcile.hcl")).unwrap();
    repo.write(
        "tenant-reconcile.hcl",
        &format!("{config}events {{\n  keep_days = 0\n}}\n"),
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(deliver(&repo).contains("Pruned 13 events"));
    assert_eq!(pg.count("SELECT count(*) FROM tenant_reconcile.outbox"), 0);
    assert_eq!(
        pg.count("SELECT count(*) FROM tenant_reconcile.delivery_attempts"),
        0
    );
}

/// Writes a copy of one of `tenant`'s events under a new id, as an apply writes one.
fn event_copy(tenant_slug: &str, event_id: &str) -> String {
    format!(
        "INSERT INTO tenant_reconcile.outbox (event_id, tenant_id, type, payload)
         SELECT '{event_id}', o.tenant_id, o.type, jsonb_set(o.payload, '{{event_id}}', '\"{event_id}\"')
         FROM tenant_reconcile.outbox o JOIN tenant_reconcile.tenants t USING (tenant_id)
         WHERE t.slug = '{tenant_slug}' ORDER BY o.id LIMIT 1;"
    )
}

/// A `psql` session that has written and not yet committed: another run's transaction,
/// open for as long as the test holds it.
struct OpenWriter {
    psql: Child,
    stdin: std::process::ChildStdin,
}

impl OpenWriter {
    /// Sends `sql` inside a transaction left open, once the server shows it open.
    fn begin(pg: &crate::pg::Pg, sql: &str) -> OpenWriter {
        use std::io::Write as _;
        let mut psql = Command::new("psql")
            .args(["-qX", "-v", "ON_ERROR_STOP=1", &pg.url()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("psql must be installed");
        let mut stdin = psql.stdin.take().unwrap();
        writeln!(stdin, "BEGIN;\n{sql}").unwrap();
        stdin.flush().unwrap();
        let started = std::time::Instant::now();
        while pg.count("SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' AND datname = current_database()") == 0 {
            assert!(started.elapsed().as_secs() < 30, "the open writer never began");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        OpenWriter { psql, stdin }
    }

    fn commit(mut self) {
        use std::io::Write as _;
        writeln!(self.stdin, "COMMIT;").unwrap();
        drop(self.stdin);
        assert!(self.psql.wait().unwrap().success());
    }
}

#[test]
fn on_postgres_a_run_starts_while_another_transaction_writes_the_outbox() {
    let r = Receiver::start();
    r.answer(serde_json::json!({"*": [200]}));
    let pg = crate::pg::Pg::new();
    let repo = pg_repo_for(&pg, &r);
    repo.apply();
    assert!(deliver(&repo).starts_with("Delivered"));
    // A writer (another run, a relay) holds a transaction on the outbox. A run that starts
    // meanwhile must not wait for it: its tables are made already.
    let slow = OpenWriter::begin(&pg, &event_copy("acme", "slow-event"));
    pg.exec(&event_copy("globex", "fast-event"));
    let mut relay = Command::new(assert_cmd::cargo::cargo_bin("tenant-reconcile"))
        .args(["-C", repo.path().to_str().unwrap(), "events", "deliver"])
        .envs(repo.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let finished = loop {
        if let Some(status) = relay.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed().as_secs() >= 20 {
            let _ = relay.kill();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    slow.commit();
    assert!(
        finished.is_some_and(|s| s.success()),
        "the relay waited for the other transaction"
    );
    let sent: Vec<String> = r
        .ids()
        .into_iter()
        .filter(|id| id.ends_with("-event"))
        .collect();
    assert_eq!(sent, ["fast-event"]);
    // The slow writer took its event's id first but committed last: the relay that ran in
    // between must not have marked the outbox read past it.
    assert!(deliver(&repo).starts_with("Delivered 1 event;"));
    let sent: Vec<String> = r
        .ids()
        .into_iter()
        .filter(|id| id.ends_with("-event"))
        .collect();
    assert_eq!(sent, ["fast-event", "slow-event"]);
    assert!(
        deliver(&repo).starts_with("Delivered 0 events"),
        "each event is sent once"
    );
}

/// A webhook added while an event is being written (its id taken before the last one
/// committed, its commit after the webhook was recorded) is given that event: it starts from
/// the oldest writer still open, not from the largest id seen.
#[test]
fn on_postgres_a_webhook_added_while_an_event_is_written_is_given_it() {
    let r = Receiver::start();
    r.answer(serde_json::json!({"*": [200]}));
    let pg = crate::pg::Pg::new();
    let repo = pg_repo_for(&pg, &r);
    repo.apply();
    assert!(deliver(&repo).starts_with("Delivered"));
    let slow = OpenWriter::begin(&pg, &event_copy("acme", "slow-event"));
    pg.exec(&event_copy("globex", "fast-event"));
    let r2 = Receiver::start();
    r2.answer(serde_json::json!({"*": [200]}));
    add_webhook(&repo, "audit", &r2, "");
    // The apply that comes with it records the webhook before it writes its own event; the
    // slow writer commits after that, before any relay runs.
    let tenant = repo.path().join("tenants/initech.yaml");
    let initech = std::fs::read_to_string(&tenant).unwrap();
    std::fs::write(&tenant, format!("{initech}status: suspended\n")).unwrap();
    repo.apply();
    slow.commit();
    deliver(&repo);
    let audit = r2.ids();
    assert!(audit.contains(&"slow-event".to_string()), "{audit:?}");
    let types: Vec<String> = r2
        .requests()
        .iter()
        .filter(|g| g["slug"] == "initech")
        .map(|g| g["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types,
        ["TenantSuspended"],
        "only what came after it of initech's"
    );
    assert!(deliver(&repo).starts_with("Delivered 0 events"));
}

/// A subscriber marked by an earlier version, by the largest id it was given, is read by id
/// once and then marked by transaction; one marked on another server (the database dumped
/// and restored there), above any transaction this one has given out, is marked again by the
/// largest id it was given. Either way each event is sent once.
#[test]
fn on_postgres_a_subscriber_marked_by_id_or_on_another_server_is_read_on_from_there() {
    let r = Receiver::start();
    r.answer(serde_json::json!({"*": [200]}));
    let pg = crate::pg::Pg::new();
    let repo = pg_repo_for(&pg, &r);
    repo.apply();
    assert!(deliver(&repo).starts_with("Delivered"));
    pg.exec(
        "UPDATE tenant_reconcile.subscribers
         SET horizon = NULL, outbox_id = (SELECT max(id) FROM tenant_reconcile.outbox)",
    );
    pg.exec(&event_copy("acme", "later-event"));
    assert!(deliver(&repo).starts_with("Delivered 1 event;"));
    assert_eq!(
        pg.count("SELECT count(*) FROM tenant_reconcile.subscribers WHERE horizon IS NULL"),
        0
    );
    assert!(deliver(&repo).starts_with("Delivered 0 events"));
    let later = r
        .requests()
        .iter()
        .filter(|g| g["id"] == "later-event")
        .count();
    assert_eq!(later, 1);

    // A restore on another server: the marks and the rows keep the first server's ids.
    pg.exec(
        "UPDATE tenant_reconcile.subscribers SET horizon = '999999999999';
         UPDATE tenant_reconcile.outbox SET tx = '999999999000'",
    );
    pg.exec(&event_copy("globex", "after-restore"));
    assert!(deliver(&repo).starts_with("Delivered 1 event;"));
    assert_eq!(
        pg.count(
            "SELECT count(*) FROM tenant_reconcile.subscribers
             WHERE horizon >= '999999999999' OR horizon IS NULL"
        ),
        0
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM tenant_reconcile.outbox WHERE tx >= '999999999000'"),
        0,
        "the first server's ids are set aside, so no row is read again by them"
    );
    assert!(deliver(&repo).starts_with("Delivered 0 events"));
    let sent = r.ids();
    let mut once = sent.clone();
    once.sort();
    once.dedup();
    assert_eq!(once.len(), sent.len(), "an event was sent twice: {sent:?}");
}

#[test]
fn a_relay_killed_mid_delivery_resends_at_most_its_in_flight_events_with_their_ids() {
    let r = Receiver::start();
    r.answer(serde_json::json!({"globex": ["200@5"]}));
    let repo = repo_for(&r, "");
    repo.apply();
    let mut relay = Command::new(assert_cmd::cargo::cargo_bin("tenant-reconcile"))
        .args(["-C", repo.path().to_str().unwrap(), "events", "deliver"])
        .envs(repo.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Killed while globex's receiver is still answering.
    let started = std::time::Instant::now();
    while !r.requests().iter().any(|g| g["slug"] == "globex") {
        assert!(started.elapsed().as_secs() < 30, "globex was never sent");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    relay.kill().unwrap();
    relay.wait().unwrap();
    r.answer(serde_json::json!({"*": [200]}));
    assert!(deliver(&repo).starts_with("Delivered"));
    let got = r.requests();
    let globex: Vec<&str> = got
        .iter()
        .filter(|g| g["slug"] == "globex")
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(globex.len(), 2, "sent again, once: {got:?}");
    assert_eq!(globex[0], globex[1], "with the same webhook-id");
    // The others were recorded as delivered before the kill, or are sent once now.
    for slug in ["acme", "initech", "umbrella-labs"] {
        let ids: Vec<&str> = got
            .iter()
            .filter(|g| g["slug"] == slug)
            .map(|g| g["id"].as_str().unwrap())
            .collect();
        let mut unique = ids.clone();
        unique.dedup();
        assert!(ids.len() <= unique.len() + 1, "{slug}: {got:?}");
    }
    assert!(deliver(&repo).starts_with("Delivered 0 events"));
}

#[test]
fn apply_deliver_sends_the_runs_events_and_follow_keeps_delivering() {
    let r = Receiver::start();
    let repo = repo_for(&r, "");
    let out = repo.run(&["apply", "--auto-approve", "--deliver"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Delivered 5 events; 0 failed and will be retried; 0 dead."),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(r.requests().len(), 5);

    let mut follower = Command::new(assert_cmd::cargo::cargo_bin("tenant-reconcile"))
        .args([
            "-C",
            repo.path().to_str().unwrap(),
            "events",
            "deliver",
            "--follow",
            "--every",
            "200ms",
        ])
        .envs(repo.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // A new event while it follows: acme suspended.
    let tenant = repo.path().join("tenants/acme.yaml");
    let acme = std::fs::read_to_string(&tenant).unwrap();
    std::fs::write(&tenant, format!("{acme}status: suspended\n")).unwrap();
    repo.apply();
    let started = std::time::Instant::now();
    while r.requests().len() < 6 {
        assert!(
            started.elapsed().as_secs() < 30,
            "the follower never sent the new event"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = follower.kill();
    let _ = follower.wait();
    let last = r.requests().pop().unwrap();
    assert_eq!(
        (last["slug"].as_str(), last["type"].as_str()),
        (Some("acme"), Some("TenantSuspended"))
    );
    repo.assert_plan_empty();
}

#[test]
fn a_webhook_added_later_gets_the_events_from_then_on_unless_it_asks_for_history() {
    let r = Receiver::start();
    let repo = repo_for(&r, "");
    // Applied before the webhook is in the config: five events wait in the outbox.
    let config = std::fs::read_to_string(repo.path().join("tenant-reconcile.hcl")).unwrap();
    repo.write("tenant-reconcile.hcl", "");
    repo.apply();
    assert_eq!(outbox(&repo).len(), 5);
    repo.write("tenant-reconcile.hcl", &config);
    assert!(deliver(&repo).starts_with("Delivered 0 events"));
    // acme suspended: written once the webhook is there, so it is given it.
    let tenant = repo.path().join("tenants/acme.yaml");
    let acme = std::fs::read_to_string(&tenant).unwrap();
    std::fs::write(&tenant, format!("{acme}status: suspended\n")).unwrap();
    repo.apply();
    assert!(deliver(&repo).starts_with("Delivered 1 event"));
    let got: Vec<_> = r
        .requests()
        .iter()
        .map(|g| (g["slug"].to_string(), g["type"].to_string()))
        .collect();
    assert_eq!(got, [("\"acme\"".into(), "\"TenantSuspended\"".into())]);

    // A second webhook that asks for history is given all six.
    let r2 = Receiver::start();
    add_webhook(&repo, "audit", &r2, "  history = true\n");
    assert!(deliver(&repo).starts_with("Delivered 6 events"));
    assert_eq!(r2.requests().len(), 6);
    assert_eq!(r.requests().len(), 1);
    repo.assert_plan_empty();
}

#[test]
fn delivered_events_are_pruned_after_keep_days_and_nothing_else_is() {
    let r = Receiver::start();
    r.answer(serde_json::json!({"umbrella-labs": [500]}));
    let repo = repo_for(&r, "events {\n  keep_days = 0\n}\n");
    repo.apply();
    deliver(&repo);
    assert_eq!(outbox(&repo).len(), 5);
    // A second later everything delivered is older than keep_days (0): its events, their
    // deliveries and attempts go. umbrella-labs' events are not delivered and stay.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = deliver(&repo);
    assert!(
        out.contains("Pruned 3 events delivered more than keep_days ago."),
        "{out}"
    );
    let left: Vec<String> = outbox(&repo).into_iter().map(|(_, _, t)| t).collect();
    assert_eq!(
        left,
        ["TenantProvisioned", "TenantSuspended"],
        "umbrella-labs' two"
    );
    assert_eq!(
        repo.count(
            "control.sqlite",
            "SELECT count(*) FROM deliveries WHERE status = 'delivered'"
        ),
        0
    );
    assert_eq!(
        repo.count("control.sqlite", "SELECT count(*) FROM delivery_attempts"),
        1
    );
}

/// RabbitMQ on this machine (guest/guest); each test publishes to an exchange of its own.
const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn bus_repo(exchange: &str, url: &str) -> Repo {
    let mut repo = Repo::example();
    repo.write(
        "tenant-reconcile.hcl",
        &format!(
            "bus \"events\" {{\n  amqp_url_env = \"EVENTS_AMQP_URL\"\n  exchange = \"{exchange}\"\n}}\n"
        ),
    );
    repo.env.push(("EVENTS_AMQP_URL".into(), url.into()));
    repo
}

/// The test's exchange, deleted when the test ends however it ends: the relay declares it
/// (durable) on every run.
struct Exchange {
    name: String,
    python: String,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let script = format!(
            "import pika; pika.BlockingConnection(pika.URLParameters('{AMQP}')).channel().exchange_delete('{}')",
            self.name
        );
        let _ = Command::new(&self.python).args(["-c", &script]).status();
    }
}

#[test]
fn events_are_published_to_the_bus_persistent_and_confirmed_once_each() {
    let python = std::env::var("TENANT_RECONCILE_TEST_PYTHON")
        .expect("these tests need the test virtualenv with pika: run ./scripts/test");
    let exchange = format!("tr-test-{}", uuid::Uuid::new_v4().simple());
    let _cleanup = Exchange {
        name: exchange.clone(),
        python: python.clone(),
    };
    let repo = bus_repo(&exchange, AMQP);
    repo.apply();
    let mut consumer = Command::new(python)
        .arg(project_root().join("tests/peers/amqp_consumer.py"))
        .args([AMQP, &exchange, "5"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(consumer.stdout.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap_or_else(|e| {
        panic!("the AMQP consumer did not start (is RabbitMQ on 127.0.0.1:5672?): {e}")
    });
    assert_eq!(ready, "ready");
    let out = deliver(&repo);
    assert_eq!(
        out.trim(),
        "Delivered 5 events; 0 failed and will be retried; 0 dead."
    );
    let got: Vec<Value> = lines
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    consumer.wait().unwrap();
    let mut ids: Vec<&str> = got
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    ids.sort();
    let events = outbox(&repo);
    let mut want: Vec<&str> = events.iter().map(|(id, ..)| id.as_str()).collect();
    want.sort();
    assert_eq!(ids, want, "each event once, its id as message_id");
    for m in &got {
        assert_eq!(m["delivery_mode"], 2, "persistent: {m}");
        assert_eq!(m["message_id"], m["event_id"]);
    }
    let umbrella: Vec<&str> = got
        .iter()
        .filter(|m| m["slug"] == "umbrella-labs")
        .map(|m| m["routing_key"].as_str().unwrap())
        .collect();
    assert_eq!(
        umbrella,
        ["TenantProvisioned", "TenantSuspended"],
        "the type as routing key, in order"
    );
    assert!(deliver(&repo).starts_with("Delivered 0 events"));
}

#[test]
fn an_unreachable_bus_is_a_clear_error_that_names_no_password() {
    let repo = bus_repo(
        "tr-test-unreachable",
        "amqp://guest:s3cr3t-pw@127.0.0.1:1/%2f",
    );
    repo.apply();
    let out = repo.run(&["events", "deliver"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot reach the bus events at 127.0.0.1:1/%2f"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t-pw"), "{err}");
    // Nothing was recorded as tried.
    assert_eq!(
        repo.count("control.sqlite", "SELECT count(*) FROM delivery_attempts"),
        0
    );
}

#[test]
fn retry_after_is_honoured_and_a_receiver_that_hangs_is_a_timeout() {
    let r = Receiver::start();
    r.answer(serde_json::json!({"acme": ["429:30"], "globex": [0]}));
    // A retry well after the relay's run, so the run ends with both still failed.
    let repo = repo_for(&r, "events {\n  schedule = [\"10s\"]\n}\n");
    // The webhook's timeout is 2 s (repo_for): globex's receiver never answers.
    repo.apply();
    let started = std::time::Instant::now();
    let out = deliver(&repo);
    assert!(
        started.elapsed().as_secs() < 15,
        "the hanging receiver held the relay"
    );
    assert!(out.contains("2 failed and will be retried"), "{out}");
    let listed: Value =
        serde_json::from_slice(&repo.run(&["events", "list", "--failed", "--json"]).stdout)
            .unwrap();
    let row = |slug: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["slug"] == slug)
            .unwrap_or_else(|| panic!("no failed delivery of {slug}: {listed}"))
            .clone()
    };
    assert_eq!(row("globex")["last_error"], "no answer within 2s");
    assert_eq!(row("acme")["last_error"], "answered 429");
    // Retried after the receiver's 30 s, not the schedule's 10 s.
    let next = humantime::parse_rfc3339(row("acme")["next_at"].as_str().unwrap()).unwrap();
    let wait = next
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(wait > std::time::Duration::from_secs(20), "{wait:?}");
}

#[test]
fn bad_subscriber_blocks_name_file_line_and_field() {
    let repo = Repo::example();
    repo.write(
        "tenant-reconcile.hcl",
        "webhook \"billing\" {\n  url = \"https://user:pw@billing.example/hooks\"\n  secret_env = \"billing-secret\"\n  events = [\"TenantCreated\"]\n}\n\nbus \"billing\" {\n  amqp_url_env = \"EVENTS_AMQP_URL\"\n  exchange = \"a b\"\n}\n",
    );
    let out = repo.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for expected in [
        "tenant-reconcile.hcl:2:3: field `webhook.billing.url`",
        "field `webhook.billing.secret_env`",
        "field `webhook.billing.events`: \"TenantCreated\" is not an event type",
        "tenant-reconcile.hcl:7:1: field `bus.billing.name`",
    ] {
        assert!(err.contains(expected), "{expected}:\n{err}");
    }
    assert!(
        !err.contains("user:pw"),
        "the URL's credentials are not repeated: {err}"
    );
}

#[test]
fn a_rollouts_events_reach_the_webhooks_signed_with_no_tenant() {
    let r = Receiver::start();
    let waves =
        "rollout {\n  wave \"canary\" {\n    tenants = [\"acme\"]\n  }\n  wave \"rest\" {}\n}\n";
    let repo = repo_for(&r, waves);
    crate::git::init_committed(&repo, "the example, in waves");
    repo.apply();
    let template = repo.path().join("templates/files/namespace.yaml.tera");
    let mut text_of = std::fs::read_to_string(&template).unwrap();
    text_of.push_str("# managed by the platform team\n");
    repo.write("templates/files/namespace.yaml.tera", &text_of);
    crate::git::commit(&repo, "namespaces say who manages them");
    repo.apply(); // the canary
    repo.apply_saying("rollout r1 completed"); // the rest, and the end
    deliver(&repo);
    let completed: Vec<Value> = r
        .requests()
        .into_iter()
        .filter(|g| g["type"] == "RolloutCompleted")
        .collect();
    assert_eq!(completed.len(), 1, "{completed:?}");
    assert_eq!(completed[0]["verified"], true);
    let (_, tenant, _) = outbox(&repo)
        .into_iter()
        .find(|(_, _, kind)| kind == "RolloutCompleted")
        .unwrap();
    assert_eq!(tenant, "");
    repo.assert_plan_empty();
}

//! `watch`: tested by starting it, writing files and reading what it prints.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use crate::support::{text, Repo};

/// A running `watch`, its stdout and stderr merged into one stream of lines.
struct Watching {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Watching {
    fn start(repo: &Repo, args: &[&str]) -> Watching {
        let bin = assert_cmd::cargo::cargo_bin("tenant-reconcile");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" \"$@\" 2>&1")
            .arg(bin)
            .args([
                "-C",
                repo.path().to_str().unwrap(),
                "watch",
                "--debounce",
                "200ms",
            ])
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("TENANT_RECONCILE_MASTER_KEY")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watching {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one contains `wanted`; panics with everything read after 20 s.
    fn wait_for(&mut self, wanted: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(wanted);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!(
                    "watch never printed {wanted:?}; it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Everything printed since the last call.
    fn take(&mut self) -> String {
        std::mem::take(&mut self.seen).join("\n")
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_plans_again_on_every_save_and_reports_problems() {
    let repo = Repo::example();
    repo.apply();
    let mut w = Watching::start(&repo, &[]);
    w.wait_for("No changes.");
    w.wait_for("Watching");
    w.take();

    let acme = std::fs::read_to_string(repo.path().join("tenants/acme.yaml")).unwrap();
    repo.write("tenants/acme.yaml", &acme.replace("seats: 80", "seats: 95"));
    w.wait_for("Plan: 0 to add");
    let out = w.take();
    assert!(out.contains("── tenants/acme.yaml changed at"), "{out}");
    assert!(out.contains("~ seats = 80 → 95"), "{out}");

    // A broken save is reported with its place, and watching goes on.
    repo.write("tenants/acme.yaml", "slug: acme\nname: [\n");
    w.wait_for("problem");
    let out = w.take();
    assert!(out.contains("error: tenants/acme.yaml:"), "{out}");

    // Files outside the inputs (the local target's own folder) start no run.
    repo.write("notes.txt", "not an input\n");
    repo.write("tenants/acme.yaml", &acme);
    w.wait_for("No changes.");
    let out = w.take();
    assert!(!out.contains("notes.txt"), "{out}");
    assert_eq!(out.matches("changed at").count(), 1, "{out}");
}

#[test]
fn watch_follows_the_migrations_folder_the_config_names() {
    let repo = Repo::example();
    std::fs::create_dir_all(repo.path().join("db")).unwrap();
    std::fs::rename(
        repo.path().join("migrations"),
        repo.path().join("db/migrations"),
    )
    .unwrap();
    repo.write(
        "tenant-reconcile.hcl",
        "migrations_dir = \"db/migrations\"\n",
    );
    repo.apply();
    let mut w = Watching::start(&repo, &[]);
    w.wait_for("Watching");
    let out = w.take();
    assert!(
        out.contains("db/migrations/, tenant-reconcile.hcl"),
        "{out}"
    );

    repo.write(
        "db/migrations/0003_add_invoices.sql",
        "CREATE TABLE invoices (id INTEGER PRIMARY KEY, total INTEGER);\n",
    );
    w.wait_for("Plan: 0 to add, 4 to change");
    let out = w.take();
    assert!(
        out.contains("── db/migrations/0003_add_invoices.sql changed at"),
        "{out}"
    );

    // A config that does not load keeps the folders as they were.
    repo.write(
        "tenant-reconcile.hcl",
        "migrations_dir = \"sql\"\nno_such_setting = 1\n",
    );
    w.wait_for("tenant-reconcile.hcl changed at");
    w.wait_for("no_such_setting");
    repo.write(
        "db/migrations/0004_add_notes.sql",
        "CREATE TABLE notes (id INTEGER PRIMARY KEY);\n",
    );
    w.wait_for("── db/migrations/0004_add_notes.sql changed at");
    w.take();

    // A config naming a folder that is not there yet: it is followed once it is made.
    repo.write("tenant-reconcile.hcl", "migrations_dir = \"sql\"\n");
    w.wait_for("tenant-reconcile.hcl changed at");
    std::fs::rename(repo.path().join("db/migrations"), repo.path().join("sql")).unwrap();
    w.wait_for("── sql/ changed at");
    w.wait_for("Plan: 0 to add, 4 to change");
    w.take();
    repo.write(
        "sql/0005_add_tags.sql",
        "CREATE TABLE tags (id INTEGER PRIMARY KEY);\n",
    );
    w.wait_for("── sql/0005_add_tags.sql changed at");
    w.wait_for("Plan: 0 to add, 4 to change");
    let out = w.take();
    assert!(out.contains("→ \"0005_add_tags\""), "{out}");
}

#[test]
fn watch_apply_reconciles_each_save_against_the_local_target() {
    let repo = Repo::example();
    let mut w = Watching::start(&repo, &["--apply"]);
    w.wait_for("Apply complete!");
    w.wait_for("Watching");
    w.take();
    let acme = std::fs::read_to_string(repo.path().join("tenants/acme.yaml")).unwrap();
    repo.write("tenants/acme.yaml", &acme.replace("seats: 80", "seats: 95"));
    w.wait_for("Apply complete!");
    drop(w);
    let quotas = repo.query(
        "control.sqlite",
        "SELECT q.value FROM quotas q JOIN tenants t USING (tenant_id) WHERE t.slug = 'acme' AND q.name = 'seats'",
    );
    assert_eq!(quotas, [["95"]]);
    repo.assert_plan_empty();
}

#[test]
fn watch_apply_refuses_servers() {
    let repo = Repo::example();
    repo.write(
        "tenant-reconcile.hcl",
        "targets {\n  data = \"postgres\"\n}\n",
    );
    let out = repo.run(&["watch", "--apply"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("watch --apply only runs against the local target; this repo uses targets.data = \"postgres\""),
        "{}",
        text(&out.stderr)
    );
}

//! Ctrl-C and SIGTERM, sent from outside with kill(1) as a terminal or a CI runner sends
//! them, to the real binary started with the default action for both: an apply stops at its
//! checkpoints, kills the hooks still running, frees the lock and says how far it got; a
//! second signal stops it at once; `watch` and `events deliver --follow` end cleanly. The
//! process table is read afterwards, and every scenario ends with a rerun and an empty plan.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{text, Repo};

/// The example's four tenants and `extra` more, with a billing hook of the test's own at
/// `provisioned`: it records its try (with its process group) and, once per idempotency key,
/// its effect in `ledger`, then sleeps `HOOK_SLEEP` seconds, as a slow billing API would.
fn repo_with_slow_hook(extra: usize) -> Repo {
    let repo = Repo::example();
    for i in 0..extra {
        repo.write(
            &format!("tenants/bulk-{i:03}.yaml"),
            &format!("slug: bulk-{i:03}\nname: Bulk {i}\nplan: starter\nowner:\n  email: o{i}@bulk.example\nregion: eu-west-1\n"),
        );
    }
    repo.write(
        "hooks/bill.sh",
        "#!/bin/sh\n\
         cat > /dev/null\n\
         key=\"$TENANT_RECONCILE_IDEMPOTENCY_KEY\"\n\
         slug=\"$TENANT_RECONCILE_TENANT_SLUG\"\n\
         echo \"try $key $slug $$\" >> ledger\n\
         grep -q \"^done $key \" ledger || echo \"done $key $slug\" >> ledger\n\
         sleep \"${HOOK_SLEEP:-0}\"\n",
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        repo.path().join("hooks/bill.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    repo.write(
        "tenant-reconcile.hcl",
        "hook \"billing\" {\n  on = [\"provisioned\"]\n  command = [\"./hooks/bill.sh\"]\n  timeout = \"5m\"\n  pass_env = [\"HOOK_SLEEP\"]\n}\n",
    );
    repo
}

/// The ledger's lines, split into words.
fn ledger(repo: &Repo) -> Vec<Vec<String>> {
    std::fs::read_to_string(repo.path().join("ledger"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// The binary running on a repo, what it prints read as it prints it (a full pipe would
/// stop it), into `out` and `err`.
struct Running {
    child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// The binary on `repo` with `args`, SIGINT and SIGTERM at their default action whatever
/// the test runner was started with.
fn spawn(repo: &Repo, args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("tenant-reconcile"));
    cmd.arg("-C")
        .arg(repo.path())
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("TENANT_RECONCILE_MASTER_KEY")
        .envs(repo.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: signal(2) is async-signal-safe, and nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let (out, err) = (Arc::default(), Arc::default());
    let readers = vec![
        read_into(child.stdout.take().unwrap(), Arc::clone(&out)),
        read_into(child.stderr.take().unwrap(), Arc::clone(&err)),
    ];
    Running {
        child,
        out,
        err,
        readers,
    }
}

fn read_into(
    mut from: impl Read + Send + 'static,
    to: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            to.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
}

impl Running {
    /// Waits until it has printed `wanted` on stdout; panics if it ends first or takes 60 s.
    fn wait_for(&mut self, wanted: &str) {
        let started = Instant::now();
        while !self.out.lock().unwrap().contains(wanted) {
            let ended = self.child.try_wait().unwrap().is_some();
            assert!(
                !ended && started.elapsed() < Duration::from_secs(60),
                "it never printed {wanted:?}:\n{}\n{}",
                self.out.lock().unwrap(),
                self.err.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends `signal` (INT, TERM) to the process, as `kill -INT <pid>` does.
    fn send(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to end, at most `limit` (then kills it); its status, if it
    /// ended, and what it printed on stdout and stderr.
    fn finish(mut self, limit: Duration) -> (Option<ExitStatus>, String, String) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers {
            r.join().unwrap();
        }
        let out = self.out.lock().unwrap().clone();
        let err = self.err.lock().unwrap().clone();
        (status, out, err)
    }
}

/// Processes still alive (not zombies) in any of these process groups, as `pid pgid args`,
/// read from /proc the way `ps -eo pid,pgid,args` reads it.
fn alive_in_groups(groups: &BTreeSet<i32>) -> Vec<String> {
    let mut alive = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // ended meanwhile
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (state, pgrp) = (fields[0], fields[2].parse::<i32>().unwrap_or(0));
        if groups.contains(&pgrp) && state != "Z" {
            let args = std::fs::read(entry.path().join("cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            alive.push(format!("{pid} {pgrp} {args}"));
        }
    }
    alive
}

/// Asserts no process of any hook started so far is left, allowing a moment for the kernel
/// to finish the ones killed.
fn assert_no_hook_left(repo: &Repo) {
    let groups: BTreeSet<i32> = ledger(repo)
        .iter()
        .filter(|l| l[0] == "try")
        .map(|l| l[3].parse().unwrap())
        .collect();
    assert!(!groups.is_empty(), "no hook ever ran");
    let started = Instant::now();
    loop {
        let alive = alive_in_groups(&groups);
        if alive.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "hook processes were left running:\n{}",
            alive.join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// After the rerun: every tenant's hook took effect exactly once, and every try of a
/// tenant's run (the one interrupted, then the rerun's) used the same idempotency key.
fn assert_each_effect_once(repo: &Repo, tenants: usize) {
    let lines = ledger(repo);
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for l in lines.iter().filter(|l| l[0] == "try") {
        keys.entry(l[2].clone()).or_default().insert(l[1].clone());
    }
    assert_eq!(keys.len(), tenants, "{lines:?}");
    for (slug, k) in &keys {
        assert_eq!(k.len(), 1, "{slug} was tried under several keys: {lines:?}");
    }
    let mut done: BTreeMap<String, usize> = BTreeMap::new();
    for l in lines.iter().filter(|l| l[0] == "done") {
        *done.entry(l[2].clone()).or_default() += 1;
    }
    assert!(
        done.len() == tenants && done.values().all(|&n| n == 1),
        "each tenant's effect once: {done:?}"
    );
}

/// `stopped: A applied, B interrupted, C not started` as printed, in numbers.
fn stopped_summary(err: &str) -> (usize, usize, usize) {
    let line = err
        .lines()
        .find(|l| l.starts_with("stopped: "))
        .unwrap_or_else(|| panic!("no `stopped:` summary in:\n{err}"));
    let n: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    assert!(
        line.contains(" applied, ")
            && line.contains(" interrupted, ")
            && line.contains(" not started"),
        "{line}"
    );
    (n[0], n[1], n[2])
}

/// Starts an apply of the example and `extra` tenants whose hooks sleep for a minute, sends
/// `signal` once `running` hooks have started, and checks the stop terraform's way.
fn interrupted_while_hooks_run(signal: &str, extra: usize, parallelism: usize, running: usize) {
    let repo = repo_with_slow_hook(extra);
    let tenants = 4 + extra;
    let parallelism = parallelism.to_string();
    let mut child = spawn(
        &repo,
        &["apply", "--auto-approve", "--parallelism", &parallelism],
        &[("HOOK_SLEEP", "60")],
    );
    let started = Instant::now();
    while ledger(&repo).iter().filter(|l| l[0] == "try").count() < running {
        if !child.running() || started.elapsed() > Duration::from_secs(120) {
            let (_, _, err) = child.finish(Duration::ZERO);
            panic!("the hooks never started:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.send(signal);
    let sent = Instant::now();
    let (status, _, err) = child.finish(Duration::from_secs(50));
    let status = status.unwrap_or_else(|| panic!("still running 50 s after SIG{signal}:\n{err}"));
    // Not the hooks' minute: they were killed, not waited for.
    assert!(sent.elapsed() < Duration::from_secs(30), "{err}");
    assert_eq!(status.code(), Some(1), "{status:?}\n{err}");
    assert!(err.contains("Interrupt received. Stopping"), "{err}");
    let (applied, interrupted, not_started) = stopped_summary(&err);
    assert_eq!(applied + interrupted + not_started, tenants, "{err}");
    assert!(interrupted >= 1 && not_started >= 1, "{err}");
    assert!(
        !err.contains("FAILED"),
        "an interrupted tenant is no failure:\n{err}"
    );
    assert_no_hook_left(&repo);
    // The lock was let go: its file no longer names a holder, and an apply that does not
    // wait for it runs at once.
    let lock = std::fs::read(repo.state_dir().join("state.json.lock")).unwrap();
    assert!(lock.is_empty(), "{}", text(&lock));
    let out = repo.run(&["apply", "--auto-approve", "--lock-timeout", "0s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_each_effect_once(&repo, tenants);
    repo.assert_plan_empty();
}

#[test]
fn ctrl_c_stops_an_apply_at_its_checkpoints_kills_its_hooks_and_frees_the_lock() {
    interrupted_while_hooks_run("INT", 26, 10, 5);
}

#[test]
fn sigterm_stops_an_apply_as_ctrl_c_does() {
    interrupted_while_hooks_run("TERM", 6, 3, 2);
}

/// Holds SQLite's write lock on the local control plane until dropped, as another writer
/// would: a step that writes there waits for it (up to 30 s).
struct WriteLock {
    runtime: tokio::runtime::Runtime,
    conn: Option<sqlx::SqliteConnection>,
}

impl WriteLock {
    fn take(path: &std::path::Path) -> WriteLock {
        use sqlx::Connection;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = format!("sqlite://{}?mode=rw", path.display());
        let conn = runtime.block_on(async {
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .unwrap();
            conn
        });
        WriteLock {
            runtime,
            conn: Some(conn),
        }
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        use sqlx::Connection;
        if let Some(mut conn) = self.conn.take() {
            self.runtime.block_on(async {
                let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
                let _ = conn.close().await;
            });
        }
    }
}

#[test]
fn a_second_ctrl_c_stops_at_once_and_the_rerun_converges() {
    let repo = Repo::example();
    repo.apply();
    let path = repo.path().join("tenants/acme.yaml");
    let acme = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        acme.replace("name: Acme Corporation", "name: Acme Inc"),
    )
    .unwrap();
    // acme's registry step now waits for the control plane's write lock: a step under way
    // that the first Ctrl-C lets finish.
    let held = WriteLock::take(&repo.state_dir().join("control.sqlite"));
    let mut child = spawn(&repo, &["apply", "--auto-approve"], &[]);
    // The plan is printed before the apply starts: once it is out, the step is waiting.
    child.wait_for("Plan: ");
    std::thread::sleep(Duration::from_millis(1000));
    child.send("INT");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.running(),
        "the first Ctrl-C must let the step under way finish"
    );
    child.send("INT");
    let sent = Instant::now();
    let (status, _, err) = child.finish(Duration::from_secs(20));
    let status = status.expect("the second Ctrl-C stops it");
    assert!(sent.elapsed() < Duration::from_secs(5), "{err}");
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("Stopped at once."), "{err}");
    drop(held);
    repo.apply();
    assert_eq!(
        repo.query(
            "control.sqlite",
            "SELECT name FROM tenants WHERE slug = 'acme'"
        ),
        [["Acme Inc"]]
    );
    repo.assert_plan_empty();
}

#[test]
fn ctrl_c_ends_watch_apply_with_the_apply_stopped_and_its_hooks_killed() {
    let repo = repo_with_slow_hook(0);
    let mut child = spawn(&repo, &["watch", "--apply"], &[("HOOK_SLEEP", "60")]);
    let started = Instant::now();
    while ledger(&repo).is_empty() {
        if !child.running() || started.elapsed() > Duration::from_secs(120) {
            let (_, out, err) = child.finish(Duration::ZERO);
            panic!("the hooks never started:\n{out}\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.send("INT");
    let (status, out, err) = child.finish(Duration::from_secs(30));
    let status = status.unwrap_or_else(|| panic!("watch went on:\n{out}\n{err}"));
    assert_eq!(status.code(), Some(0), "{out}\n{err}");
    stopped_summary(&err);
    assert_no_hook_left(&repo);
    repo.apply();
    assert_each_effect_once(&repo, 4);
    repo.assert_plan_empty();
}

#[test]
fn ctrl_c_and_sigterm_end_a_following_relay_cleanly() {
    for signal in ["INT", "TERM"] {
        let mut repo = Repo::example();
        // Nobody listens there: every round fails to deliver, and the relay goes on.
        repo.write(
            "tenant-reconcile.hcl",
            "webhook \"crm\" {\n  url = \"http://127.0.0.1:9/hooks\"\n  secret_env = \"CRM_WEBHOOK_SECRET\"\n  timeout = \"1s\"\n}\n",
        );
        repo.env.push((
            "CRM_WEBHOOK_SECRET".into(),
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        ));
        repo.apply();
        let mut child = spawn(
            &repo,
            &["events", "deliver", "--follow", "--every", "200ms"],
            &[],
        );
        // Its first round is over (the apply's events failed to go out): it is following.
        child.wait_for(" failed and will be retried");
        std::thread::sleep(Duration::from_millis(500));
        child.send(signal);
        let (status, out, err) = child.finish(Duration::from_secs(20));
        let status = status.unwrap_or_else(|| panic!("the relay went on:\n{out}\n{err}"));
        assert_eq!(status.code(), Some(0), "SIG{signal}: {out}\n{err}");
        assert!(err.contains("Interrupt received. Stopping"), "{err}");
        repo.assert_plan_empty();
    }
}

#[test]
fn ctrl_c_ends_the_wait_for_a_lock_another_run_holds_and_takes_nothing() {
    let repo = Repo::example();
    repo.apply();
    // Another run holds the state's lock, as a running apply's process does.
    let held = std::fs::File::options()
        .write(true)
        .open(repo.state_dir().join("state.json.lock"))
        .unwrap();
    held.lock().unwrap();
    let tenant = repo.path().join("tenants/acme.yaml");
    let acme = std::fs::read_to_string(&tenant).unwrap();
    std::fs::write(&tenant, format!("{acme}status: suspended\n")).unwrap();

    let child = spawn(
        &repo,
        &["apply", "--auto-approve", "--lock-timeout", "10m"],
        &[],
    );
    std::thread::sleep(Duration::from_secs(1));
    let sent = Instant::now();
    child.send("INT");
    let (status, out, err) = child.finish(Duration::from_secs(20));
    let status = status.unwrap_or_else(|| panic!("it went on waiting:\n{out}\n{err}"));
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "it took {:?} to stop waiting",
        sent.elapsed()
    );
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    assert!(
        err.contains("interrupted while waiting for the state's lock; nothing was done"),
        "{err}"
    );
    drop(held);
    // Nothing was applied: acme is still to be suspended.
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(plan.contains("acme will be suspended"), "{plan}");
}

/// Ctrl-C stops a claiming runner at its checkpoints as it stops any apply, kills its hooks
/// and gives its claims back: a runner given the same plan afterwards finishes it, the
/// tenants cut short planned again (the repo is in git, at the plan's commit), each hook's
/// effect once.
#[test]
fn ctrl_c_stops_a_claiming_runner_and_the_next_one_finishes_the_plan() {
    let repo = repo_with_slow_hook(6);
    // The state written once, as claiming needs; then the rest planned and saved.
    let out = repo.run(&["apply", "--auto-approve", "--tenant", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    repo.write(".gitignore", ".tenant-reconcile/\nledger\n*.plan\n");
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &["commit", "-qm", "fleet"],
    ] {
        crate::git::git(&repo, args);
    }
    let out = repo.run(&["plan", "--out", "fleet.plan"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut child = spawn(
        &repo,
        &["apply", "fleet.plan", "--claim", "--parallelism", "3"],
        &[("HOOK_SLEEP", "60")],
    );
    let started = Instant::now();
    // acme's try, and the three of the first batch.
    while ledger(&repo).iter().filter(|l| l[0] == "try").count() < 4 {
        if !child.running() || started.elapsed() > Duration::from_secs(120) {
            let (_, _, err) = child.finish(Duration::ZERO);
            panic!("the hooks never started:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.send("INT");
    let sent = Instant::now();
    let (status, out, err) = child.finish(Duration::from_secs(50));
    let status = status.unwrap_or_else(|| panic!("still running 50 s after SIGINT:\n{err}"));
    assert!(sent.elapsed() < Duration::from_secs(30), "{err}");
    assert_eq!(status.code(), Some(1), "{status:?}\n{out}\n{err}");
    let (applied, interrupted, _) = stopped_summary(&err);
    assert_eq!((applied, interrupted), (0, 3), "{err}");
    assert!(
        err.contains("its tenants not finished went back to the plan's other runners"),
        "{err}"
    );
    assert!(
        out.contains("The plan: 9 tenants, 0 applied, 9 not done yet"),
        "{out}"
    );
    assert_no_hook_left(&repo);

    let out = repo.run(&["apply", "fleet.plan", "--claim"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("This runner applied 9 tenants.")
            && stdout.contains("The plan: 9 tenants, 9 applied, by 1 runner."),
        "{stdout}"
    );
    assert_each_effect_once(&repo, 10);
    repo.assert_plan_empty();
}

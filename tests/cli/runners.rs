//! Several runners on one state: applies of disjoint tenants go side by side, one on a
//! tenant another run holds waits for it (or fails naming it), and `--shard K/N` splits a
//! fleet between runners so that each tenant is applied once, a killed runner's share
//! finished by its rerun. On the local state and on Postgres.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::pg::Pg;
use crate::support::{text, Repo};

/// The example applied, then two new tenants whose provisioning runs a hook of the test's
/// own, which notes its start and sleeps `HOOK_SLEEP` seconds.
fn two_new_tenants(repo: &Repo) {
    repo.apply();
    for slug in ["slow-a", "slow-b"] {
        repo.write(
            &format!("tenants/{slug}.yaml"),
            &format!("slug: {slug}\nname: Slow\nplan: starter\nowner:\n  email: o@{slug}.example\nregion: eu-west-1\n"),
        );
    }
    repo.write(
        "hooks/bill.sh",
        "#!/bin/sh\ncat > /dev/null\necho \"started $TENANT_RECONCILE_TENANT_SLUG\" >> ledger\nsleep \"${HOOK_SLEEP:-0}\"\n",
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        repo.path().join("hooks/bill.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let config =
        std::fs::read_to_string(repo.path().join("tenant-reconcile.hcl")).unwrap_or_default();
    repo.write(
        "tenant-reconcile.hcl",
        &format!("{config}hook \"billing\" {{\n  on = [\"provisioned\"]\n  command = [\"./hooks/bill.sh\"]\n  timeout = \"5m\"\n  pass_env = [\"HOOK_SLEEP\"]\n}}\n"),
    );
}

fn spawn(repo: &Repo, args: &[&str], sleep: &str) -> Child {
    repo.process()
        .args(args)
        .env("HOOK_SLEEP", sleep)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The example with its state on `pg`'s database (its targets local).
fn on_postgres(pg: &Pg) -> Repo {
    let mut repo = Repo::example();
    repo.env = vec![("DATABASE_URL".into(), pg.url())];
    repo.write(
        "tenant-reconcile.hcl",
        "state {\n  backend = \"postgres\"\n}\n",
    );
    repo
}

fn started(repo: &Repo, slug: &str) -> bool {
    std::fs::read_to_string(repo.path().join("ledger"))
        .unwrap_or_default()
        .lines()
        .any(|l| l == format!("started {slug}"))
}

fn disjoint_applies_go_side_by_side(repo: &Repo) {
    two_new_tenants(repo);
    let mut slow = spawn(
        repo,
        &["apply", "--auto-approve", "--tenant", "slow-a"],
        "20",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started(repo, "slow-a") {
        assert!(Instant::now() < deadline, "slow-a's hook never started");
        assert!(slow.try_wait().unwrap().is_none(), "the first apply ended");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Another tenant: applied while the first run is still under way.
    let out = repo.run(&["apply", "--auto-approve", "--tenant", "slow-b"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        slow.try_wait().unwrap().is_none(),
        "the first apply ended first"
    );

    // The same tenant: refused at once, naming the run that holds it.
    let out = repo.run(&["apply", "--auto-approve", "--tenant", "slow-a"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("`apply` run by") && err.contains("applying 1 of these tenants (slow-a)"),
        "{err}"
    );
    // The whole state: refused while some of its tenants are held.
    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("runs applying some of its tenants"),
        "{}",
        text(&out.stderr)
    );

    // It waits for the tenant instead, when asked to.
    let out = repo.run(&[
        "apply",
        "--auto-approve",
        "--tenant",
        "slow-a",
        "--lock-timeout",
        "2m",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        slow.try_wait().unwrap().is_some(),
        "it went on before the holder was done"
    );
    let first = slow.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", text(&first.stderr));
    let ledger = std::fs::read_to_string(repo.path().join("ledger")).unwrap();
    assert_eq!(
        ledger.lines().filter(|l| *l == "started slow-a").count(),
        1,
        "slow-a was provisioned once:\n{ledger}"
    );
    let state = repo.state_json();
    for slug in ["slow-a", "slow-b"] {
        assert_eq!(state["tenants"][slug]["lifecycle"], "active", "{slug}");
    }
    repo.assert_plan_empty();
}

#[test]
fn on_the_local_state_disjoint_applies_go_side_by_side_and_a_held_tenant_waits() {
    disjoint_applies_go_side_by_side(&Repo::example());
}

#[test]
fn on_postgres_disjoint_applies_go_side_by_side_and_a_held_tenant_waits() {
    let pg = Pg::new();
    let repo = on_postgres(&pg);
    disjoint_applies_go_side_by_side(&repo);
    assert_eq!(
        pg.count("SELECT count(*) FROM tenant_reconcile.state_leases"),
        0,
        "every lease let go"
    );
}

/// A run killed with -9 while it holds a tenant: the next run on that tenant takes it over
/// at once (the killed run is known to be gone), and finishes its work once.
fn a_killed_holder_is_taken_over_at_once(repo: &Repo) {
    two_new_tenants(repo);
    let mut slow = spawn(
        repo,
        &["apply", "--auto-approve", "--tenant", "slow-a"],
        "60",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started(repo, "slow-a") {
        assert!(Instant::now() < deadline, "slow-a's hook never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    slow.kill().unwrap();
    slow.wait().unwrap();
    let started_at = Instant::now();
    let out = repo.run(&[
        "apply",
        "--auto-approve",
        "--tenant",
        "slow-a",
        "--lock-timeout",
        "2m",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        started_at.elapsed() < Duration::from_secs(30),
        "waited {:?}: the lease of a run that is gone was not taken over",
        started_at.elapsed()
    );
    assert_eq!(
        repo.state_json()["tenants"]["slow-a"]["lifecycle"],
        "active"
    );
    repo.apply();
    repo.assert_plan_empty();
}

#[test]
fn on_the_local_state_a_killed_holder_is_taken_over_at_once() {
    a_killed_holder_is_taken_over_at_once(&Repo::example());
}

#[test]
fn on_postgres_a_killed_holder_is_taken_over_at_once() {
    let pg = Pg::new();
    let repo = on_postgres(&pg);
    a_killed_holder_is_taken_over_at_once(&repo);
}

const FLEET: usize = 120;

fn fleet(repo: &Repo) {
    repo.apply();
    for i in 0..FLEET {
        repo.write(
            &format!("tenants/bulk-{i:03}.yaml"),
            &format!("slug: bulk-{i:03}\nname: Bulk {i}\nplan: starter\nowner:\n  email: o{i}@bulk.example\nregion: eu-west-1\n"),
        );
    }
}

/// Four runners, each its share: every tenant applied once, counted from outside (its
/// registry row, its event, its record), and a runner killed mid-way finished by its rerun.
fn four_shards_apply_each_tenant_once(repo: &Repo) {
    fleet(repo);
    let runners: Vec<Child> = (1..=4)
        .map(|k| {
            let shard = format!("{k}/4");
            spawn(repo, &["apply", "--auto-approve", "--shard", &shard], "0")
        })
        .collect();
    // The fourth is killed once the runners are well under way.
    let mut runners = runners;
    let mut fourth = runners.pop().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while repo.count("control.sqlite", "SELECT count(*) FROM tenants") < 40 {
        assert!(Instant::now() < deadline, "the runners never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        fourth.try_wait().unwrap().is_none(),
        "the fourth ended first"
    );
    fourth.kill().unwrap();
    fourth.wait().unwrap();
    for runner in runners {
        let out = runner.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = repo.run(&[
        "apply",
        "--auto-approve",
        "--shard",
        "4/4",
        "--lock-timeout",
        "2m",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Applying shard 4/4: the tenants of this share only."),
        "{}",
        text(&out.stderr)
    );
    let all = (FLEET + 4) as i64;
    assert_eq!(
        repo.count("control.sqlite", "SELECT count(*) FROM tenants"),
        all
    );
    assert_eq!(
        repo.count(
            "control.sqlite",
            "SELECT count(*) FROM outbox WHERE type = 'TenantProvisioned'"
        ),
        all,
        "each tenant's provisioning announced once"
    );
    assert_eq!(
        repo.state_json()["tenants"].as_object().unwrap().len() as i64,
        all
    );
    repo.assert_plan_empty();
}

#[test]
fn four_shards_on_the_local_state_apply_each_tenant_once() {
    four_shards_apply_each_tenant_once(&Repo::example());
}

#[test]
fn four_shards_on_postgres_apply_each_tenant_once() {
    let pg = Pg::new();
    let repo = on_postgres(&pg);
    four_shards_apply_each_tenant_once(&repo);
}

/// Four runners claim the tenants of one saved plan: each tenant applied once, counted from
/// outside, and every runner's tally adding up to the plan. One killed mid-way leaves the
/// tenants it had claimed to the others. Those it had started have records that moved, so
/// the saved steps for them are stale: in a git repo at the plan's commit the others plan
/// them again and finish them; elsewhere they are named for a fresh apply.
fn four_claiming_runners_apply_each_tenant_once(repo: &Repo, committed: bool) {
    fleet(repo);
    if committed {
        repo.write(".gitignore", ".tenant-reconcile/\n");
        for args in [
            &["init", "-q"][..],
            &["add", "-A"],
            &["commit", "-qm", "the fleet"],
        ] {
            crate::git::git(repo, args);
        }
    }
    let out = repo.run(&["plan", "--out", "fleet.plan"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut runners: Vec<Child> = (0..4)
        .map(|_| {
            repo.process()
                .args(["apply", "fleet.plan", "--claim"])
                // Each batch it applies is logged with its size.
                .env("TENANT_RECONCILE_LOG", "tenant_reconcile=debug")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut fourth = runners.pop().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while repo.count("control.sqlite", "SELECT count(*) FROM tenants") < 40 {
        assert!(Instant::now() < deadline, "the runners never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        fourth.try_wait().unwrap().is_none(),
        "the fourth ended first"
    );
    fourth.kill().unwrap();
    fourth.wait().unwrap();
    let killed_at = Instant::now();
    let mut applied = 0;
    let mut stale: Vec<String> = Vec::new();
    for runner in runners {
        let out = runner.wait_with_output().unwrap();
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(
            stderr.contains("Claiming tenants of the saved plan (120 to apply)"),
            "{stderr}"
        );
        // A few at a time (`--parallelism`, 10), counted out of the whole plan.
        let batches: Vec<usize> = stderr
            .lines()
            .filter_map(|l| {
                let n = l.split("applying claimed tenants (tenants: ").nth(1)?;
                n.trim_end_matches(')').parse().ok()
            })
            .collect();
        assert!(!batches.is_empty() || stdout.contains("This runner applied 0 tenants."));
        assert!(
            batches.iter().all(|&n| n <= 10),
            "a batch larger than 10: {batches:?}"
        );
        assert!(
            stderr
                .lines()
                .filter(|l| l.starts_with('['))
                .all(|l| l.contains("/120] ")),
            "{stderr}"
        );
        // Every runner leaves once the plan is done: each says it whole.
        let tally = stdout
            .lines()
            .find(|l| l.starts_with("The plan: 120 tenants, "))
            .unwrap_or_else(|| panic!("no tally:\n{stdout}\n{stderr}"));
        assert!(
            !tally.contains("failed") && !tally.contains("not done"),
            "{tally}"
        );
        applied += stdout
            .lines()
            .find_map(|l| l.strip_prefix("This runner applied "))
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("no count:\n{stdout}"));
        match out.status.code() {
            Some(0) => {}
            Some(1) => {
                let left = stderr
                    .lines()
                    .find_map(|l| l.strip_prefix("Left for a fresh plan: "))
                    .unwrap_or_else(|| panic!("failed otherwise:\n{stderr}"));
                let left = left.split(". ").next().unwrap();
                stale.extend(left.split(", ").map(str::to_string));
            }
            other => panic!("{other:?}:\n{stderr}"),
        }
    }
    // Its claims and leases were taken over once it was found gone, not when they ran out
    // (a lease lasts a minute).
    assert!(
        killed_at.elapsed() < Duration::from_secs(40),
        "the others took {:?} after the kill",
        killed_at.elapsed()
    );
    // What the killed runner had finished, the survivors' and the stale add up to the plan.
    assert!(
        stale.len() <= 10,
        "more than its batch was stale: {stale:?}"
    );
    assert!(applied + stale.len() <= 120);
    let out = repo.run(&["apply", "--auto-approve"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = (FLEET + 4) as i64;
    assert_eq!(
        repo.count("control.sqlite", "SELECT count(*) FROM tenants"),
        all
    );
    assert_eq!(
        repo.count(
            "control.sqlite",
            "SELECT count(*) FROM outbox WHERE type = 'TenantProvisioned'"
        ),
        all,
        "each tenant's provisioning announced once"
    );
    assert_eq!(
        repo.state_json()["tenants"].as_object().unwrap().len() as i64,
        all
    );
    repo.assert_plan_empty();
    // The plan, applied again by a runner that comes late: nothing is left to claim.
    let out = repo.run(&["apply", "fleet.plan", "--claim"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("This runner applied 0 tenants."),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn four_claiming_runners_on_postgres_apply_each_tenant_once() {
    let pg = Pg::new();
    let repo = on_postgres(&pg);
    four_claiming_runners_apply_each_tenant_once(&repo, true);
    assert_eq!(
        pg.count("SELECT count(*) FROM tenant_reconcile.state_leases"),
        0,
        "every lease let go"
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM tenant_reconcile.state_claims WHERE run IS NOT NULL AND done IS NULL"),
        0,
        "every claim done or let go"
    );
}

#[test]
fn four_claiming_runners_on_the_local_state_apply_each_tenant_once() {
    four_claiming_runners_apply_each_tenant_once(&Repo::example(), false);
}

/// A tenant of the plan that another run holds (an `apply --tenant` beside the runners) is
/// passed by rather than failing the runner: the others are applied, and it is taken once
/// let go. That run applied it meanwhile, so the plan's steps for it are stale: it is named
/// for a fresh plan, and applied once.
fn a_tenant_held_by_another_run_is_passed_by(repo: &Repo) {
    two_new_tenants(repo);
    let out = repo.run(&["plan", "--out", "slow.plan"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let slow = spawn(
        repo,
        &["apply", "--auto-approve", "--tenant", "slow-a"],
        "4",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started(repo, "slow-a") {
        assert!(Instant::now() < deadline, "slow-a's hook never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = repo.run(&["apply", "slow.plan", "--claim"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        slow.wait_with_output().unwrap().status.success(),
        "the other run"
    );
    assert!(stdout.contains("This runner applied 1 tenant."), "{stdout}");
    assert!(
        stdout.contains("The plan: 2 tenants, 1 applied, 1 left for a fresh plan, by 1 runner."),
        "{stdout}"
    );
    assert!(
        stderr.contains("Left for a fresh plan: slow-a."),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "waiting for 1 tenant of the plan that other runs hold (taken over if those runs end without them)"
        ),
        "{stderr}"
    );
    let ledger = std::fs::read_to_string(repo.path().join("ledger")).unwrap();
    for slug in ["slow-a", "slow-b"] {
        assert_eq!(
            ledger
                .lines()
                .filter(|l| *l == format!("started {slug}"))
                .count(),
            1,
            "{slug} was provisioned once:\n{ledger}"
        );
    }
    repo.assert_plan_empty();
}

#[test]
fn on_postgres_a_tenant_held_by_another_run_is_passed_by() {
    let pg = Pg::new();
    a_tenant_held_by_another_run_is_passed_by(&on_postgres(&pg));
}

#[test]
fn on_the_local_state_a_tenant_held_by_another_run_is_passed_by() {
    a_tenant_held_by_another_run_is_passed_by(&Repo::example());
}

#[test]
fn claiming_needs_a_state_written_once() {
    let repo = Repo::example();
    let out = repo.run(&["plan", "--out", "first.plan"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = repo.fingerprint();
    let out = repo.run(&["apply", "first.plan", "--claim"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("the plan was made before the state was first written"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(repo.fingerprint(), before, "nothing was written");
}

#[test]
fn claiming_needs_a_saved_plan() {
    let repo = Repo::example();
    let out = repo.run(&["apply", "--claim", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("required arguments were not provided:\n  <PLANFILE>"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_shard_is_said_as_k_of_n_and_read_from_an_indexed_job() {
    let repo = Repo::example();
    let out = repo.run(&["apply", "--auto-approve", "--shard", "5/4"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("K must be from 1 to N"),
        "{}",
        text(&out.stderr)
    );
    repo.apply();
    // A Kubernetes Indexed Job's pod: the index counts from 0.
    let out = repo
        .cmd()
        .args(["apply", "--auto-approve"])
        .env("JOB_COMPLETION_INDEX", "1")
        .env("JOB_COMPLETIONS", "3")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .contains("Applying shard 2/3 (from JOB_COMPLETION_INDEX and JOB_COMPLETIONS)."),
        "{}",
        text(&out.stderr)
    );
}

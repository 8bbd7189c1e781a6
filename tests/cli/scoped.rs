//! A plan of some tenants (`--tenant`, or `--changed-since` when only tenant files changed)
//! reads their files and their records, not the fleet's; the rules about the whole fleet
//! (too many files gone) are answered from the state's index; a saved plan of some tenants
//! is stale only when their records, or what the state says beside its tenants, moved.

use crate::git::{committed_example, git};
use crate::pg::Pg;
use crate::support::{text, Repo};

/// The debug line `what` logged, which must be there.
fn logged<'a>(stderr: &'a str, what: &str) -> &'a str {
    stderr
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no {what:?} logged:\n{stderr}"))
}

fn with_debug_log(repo: &mut Repo) {
    repo.env.push((
        "TENANT_RECONCILE_LOG".into(),
        "tenant_reconcile=debug".into(),
    ));
}

fn edit(repo: &Repo, file: &str, from: &str, to: &str) {
    let path = repo.path().join(file);
    let before = std::fs::read_to_string(&path).unwrap();
    assert!(before.contains(from), "{file} has no {from:?}");
    repo.write(file, &before.replacen(from, to, 1));
}

#[test]
fn a_pull_requests_plan_reads_the_tenant_files_it_changed_and_their_records_only() {
    let mut repo = committed_example();
    repo.apply();
    git(&repo, &["checkout", "-qb", "pr"]);
    edit(&repo, "tenants/acme.yaml", "seats: 80", "seats: 81");
    git(&repo, &["commit", "-qam", "acme takes a seat more"]);
    with_debug_log(&mut repo);

    let out = repo.run(&["plan", "--changed-since", "main", "--detailed-exitcode"]);
    let (plan, err) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{plan}\n{err}");
    assert!(plan.contains("\n  M tenants/acme.yaml  1 tenant"), "{plan}");
    assert!(plan.contains("# acme will be updated in place"), "{plan}");
    assert!(plan.contains("Plan: 0 to add, 2 to change"), "{plan}");
    assert!(
        logged(&err, "loaded the repo").contains("tenants: 1"),
        "one tenant file read:\n{err}"
    );
    assert!(
        logged(&err, "loaded the state").contains("records: 1"),
        "one record read:\n{err}"
    );

    // Named tenants are read the same way.
    let out = repo.run(&["plan", "--tenant", "acme", "--tenant", "globex"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        logged(&err, "loaded the repo").contains("tenants: 2"),
        "{err}"
    );
    assert!(
        logged(&err, "loaded the state").contains("records: 2"),
        "{err}"
    );

    // A slug named beside them is looked for among the files' names, read or not.
    let out = repo.run(&["plan", "--tenant", "acme", "--rotate-credentials", "globex"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = repo.run(&["plan", "--tenant", "acme", "--rotate-credentials", "nosuch"]);
    assert!(
        text(&out.stderr)
            .ends_with("\nerror: --rotate-credentials nosuch: there is no tenants/nosuch.yaml\n"),
        "{}",
        text(&out.stderr)
    );

    // A plan file reaches tenants by what their files say: every file is read.
    edit(
        &repo,
        "plans/growth.hcl",
        "api_calls_per_month = 1000000",
        "api_calls_per_month = 2000000",
    );
    let out = repo.run(&["plan", "--changed-since", "main"]);
    let (plan, err) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{err}");
    assert!(
        logged(&err, "loaded the repo").contains("tenants: 4"),
        "{err}"
    );
    assert!(plan.contains("M plans/growth.hcl"), "{plan}");
    git(&repo, &["checkout", "-q", "plans/growth.hcl"]);

    repo.run(&["apply", "--auto-approve", "--tenant", "acme"]);
    repo.assert_plan_empty();
}

#[test]
fn files_gone_in_a_pull_request_are_weighed_against_the_whole_fleet() {
    let mut repo = committed_example();
    repo.apply();
    git(&repo, &["checkout", "-qb", "pr"]);
    git(&repo, &["rm", "-q", "tenants/globex.yaml"]);
    git(&repo, &["commit", "-qm", "globex leaves the repo"]);
    with_debug_log(&mut repo);

    // One file gone of four recorded tenants: reported as an orphan, left alone.
    let out = repo.run(&["plan", "--changed-since", "main"]);
    let (plan, err) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{plan}\n{err}");
    assert!(
        plan.contains("# globex is orphaned: its tenant file is gone"),
        "{plan}"
    );
    assert!(
        logged(&err, "loaded the repo").contains("tenants: 0"),
        "{err}"
    );

    // Three of four: the share is the fleet's (from the state's index), not the plan's.
    git(
        &repo,
        &["rm", "-q", "tenants/acme.yaml", "tenants/initech.yaml"],
    );
    git(&repo, &["commit", "-qm", "a bad merge"]);
    let out = repo.run(&["plan", "--changed-since", "main"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        err.contains("3 of 4 recorded tenants (75%) have no file any more"),
        "{err}"
    );
    assert!(
        logged(&err, "loaded the repo").contains("tenants: 0"),
        "{err}"
    );

    git(&repo, &["checkout", "-q", "main"]);
    repo.assert_plan_empty();
}

#[test]
fn a_saved_plan_of_some_tenants_is_stale_only_when_their_records_moved() {
    let repo = Repo::example();
    repo.apply();
    edit(&repo, "tenants/acme.yaml", "seats: 80", "seats: 81");
    let saved = repo.path().join("acme.plan");
    let out = repo.run(&["plan", "--tenant", "acme", "--out", saved.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    assert!(
        json["state"]["records"]["tenants"]["acme"]
            .as_u64()
            .unwrap()
            > 0,
        "{}",
        json["state"]
    );

    // Another tenant applied meanwhile: the plan still stands.
    edit(&repo, "tenants/globex.yaml", "name: ", "name: The New ");
    let out = repo.run(&["apply", "--auto-approve", "--tenant", "globex"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = repo.run(&["apply", saved.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("1 tenant reconciled"),
        "{}",
        text(&out.stdout)
    );

    // Its own tenant applied meanwhile: refused, naming it, and nothing changes.
    edit(&repo, "tenants/acme.yaml", "seats: 81", "seats: 82");
    let out = repo.run(&["plan", "--tenant", "acme", "--out", saved.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    repo.run(&["apply", "--auto-approve", "--tenant", "acme"]);
    let before = repo.fingerprint();
    let out = repo.run(&["apply", saved.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: the saved plan is stale: acme's state record changed since it was made (another run applied it); nothing was done\n  hint: make the plan again, with the same --tenant or --changed-since\n"
    );
    assert_eq!(before, repo.fingerprint(), "a stale plan changes nothing");
    repo.assert_plan_empty();
}

#[test]
fn on_postgres_a_plan_of_one_tenant_reads_its_record_only() {
    let pg = Pg::new();
    let mut repo = Repo::example();
    repo.env = vec![("DATABASE_URL".into(), pg.url())];
    repo.write(
        "tenant-reconcile.hcl",
        "state {\n  backend = \"postgres\"\n}\n",
    );
    repo.apply();
    edit(&repo, "tenants/acme.yaml", "seats: 80", "seats: 81");
    with_debug_log(&mut repo);
    let out = repo.run(&["plan", "--tenant", "acme", "--detailed-exitcode"]);
    let (plan, err) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{plan}\n{err}");
    assert!(plan.contains("# acme will be updated in place"), "{plan}");
    assert!(
        logged(&err, "loaded the state").contains("records: 1"),
        "{err}"
    );
    repo.apply();
    repo.assert_plan_empty();
}

#[test]
fn an_apply_of_named_tenants_reads_their_records_alone() {
    let mut repo = committed_example();
    repo.apply();
    let before = repo.state_json();
    edit(&repo, "tenants/acme.yaml", "seats: 80", "seats: 81");
    with_debug_log(&mut repo);
    let out = repo.run(&["apply", "--auto-approve", "--tenant", "acme"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let line = logged(&stderr, "read the state to apply");
    assert!(line.contains("records: 1"), "{line}");
    let after = repo.state_json();
    assert_eq!(
        after["tenants"]["acme"]["resources"]["quotas"]["seats"],
        serde_json::json!(81)
    );
    for other in ["globex", "initech", "umbrella-labs"] {
        assert_eq!(after["tenants"][other], before["tenants"][other], "{other}");
    }
    repo.assert_plan_empty();
}

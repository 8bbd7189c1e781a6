//! The tenant repo as a git repository: what apply records and says about commits.

use std::process::Command;

use crate::support::{text, Repo};

/// Runs git in the repo, as a test user, and returns its stdout.
pub fn git(repo: &Repo, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(repo.path())
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// Everything in the repo committed, as `message`.
pub fn commit(repo: &Repo, message: &str) {
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", message]);
}

/// The repo made a git repository (the tool's own folder ignored), everything in it
/// committed as `message`.
pub fn init_committed(repo: &Repo, message: &str) {
    repo.write(".gitignore", ".tenant-reconcile/\n");
    git(repo, &["init", "-q"]);
    commit(repo, message);
}

/// The example repo, committed.
pub fn committed_example() -> Repo {
    let repo = Repo::example();
    init_committed(&repo, "the example tenants");
    repo
}

#[test]
fn apply_records_the_commit_and_warns_about_uncommitted_inputs() {
    let repo = committed_example();
    let out = repo.apply();
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let state = text(&repo.run(&["state", "show", "acme"]).stdout);
    assert!(
        state.contains(&head),
        "the tenant records its commit:\n{state}"
    );

    let acme = std::fs::read_to_string(repo.path().join("tenants/acme.yaml")).unwrap();
    repo.write("tenants/acme.yaml", &acme.replace("seats: 80", "seats: 90"));
    repo.write(
        "tenants/hooli.yaml",
        "slug: hooli\nname: Hooli\nplan: starter\nowner:\n  email: it@hooli.example\nregion: us-west-2\n",
    );

    // Refused with --require-clean, naming the files; nothing changes.
    let before = repo.fingerprint();
    let out = repo.run(&["apply", "--auto-approve", "--require-clean"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("2 input files have uncommitted changes; nothing was applied:\n  M tenants/acme.yaml\n  A tenants/hooli.yaml"),
        "{stderr}"
    );
    assert_eq!(repo.fingerprint(), before);

    // Without it, apply goes ahead and says which commit will be recorded.
    let out = repo.apply();
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "warning: 2 input files have uncommitted changes; the state will record commit {}",
            &head[..12]
        )),
        "{stderr}"
    );
    repo.assert_plan_empty();

    // Committed, the next apply records the new commit and warns no more.
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "hooli, and seats for acme"]);
    let out = repo.run(&["apply", "--auto-approve", "--require-clean"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("warning"));
}

#[test]
fn a_plan_saved_from_uncommitted_files_says_so_when_applied() {
    let repo = committed_example();
    repo.apply();
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let acme = std::fs::read_to_string(repo.path().join("tenants/acme.yaml")).unwrap();
    repo.write("tenants/acme.yaml", &acme.replace("seats: 80", "seats: 90"));

    // Saving the plan says what it records.
    let out = repo.run(&["plan", "--out", "tenant-plan.json"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("note: 1 input file has uncommitted changes; the saved plan records them, and `apply --require-clean tenant-plan.json` will refuse it:\n  M tenants/acme.yaml"),
        "{stderr}"
    );

    // Refused with --require-clean, even once the working tree is clean again: the plan
    // was made from the edit. Nothing changes.
    git(&repo, &["stash", "-q"]);
    let before = repo.fingerprint();
    let out = repo.run(&["apply", "--require-clean", "tenant-plan.json"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the plan was made while 1 input file had uncommitted changes; nothing was applied:\n  M tenants/acme.yaml\n  hint: commit them and make the plan again, or apply without --require-clean"),
        "{stderr}"
    );
    assert_eq!(repo.fingerprint(), before);

    // Without it, the plan applies, with a warning naming the commit the state records.
    git(&repo, &["stash", "pop", "-q"]);
    let out = repo.run(&["apply", "tenant-plan.json"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "warning: the plan was made while 1 input file had uncommitted changes; the state will record commit {}, which does not hold them:\n  M tenants/acme.yaml",
            &head[..12]
        )),
        "{stderr}"
    );
    repo.assert_plan_empty();

    // A plan saved from committed files carries no such mark, and --require-clean takes it.
    git(&repo, &["commit", "-qam", "seats for acme"]);
    repo.write("tenants/acme.yaml", &acme.replace("seats: 80", "seats: 95"));
    git(&repo, &["commit", "-qam", "more seats for acme"]);
    let out = repo.run(&["plan", "--out", "tenant-plan.json"]);
    assert!(!text(&out.stderr).contains("note"), "{}", text(&out.stderr));
    let saved = std::fs::read_to_string(repo.path().join("tenant-plan.json")).unwrap();
    assert!(!saved.contains("uncommitted"), "{saved}");
    let out = repo.run(&["apply", "--require-clean", "tenant-plan.json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("warning"));
    repo.assert_plan_empty();
}

#[test]
fn rev_plans_and_applies_a_commit_without_touching_the_working_tree() {
    let repo = committed_example();
    repo.apply();
    let main = git(&repo, &["rev-parse", "HEAD"]);
    // A branch that raises acme's seats and adds a tenant.
    git(&repo, &["checkout", "-qb", "feature"]);
    let acme = std::fs::read_to_string(repo.path().join("tenants/acme.yaml")).unwrap();
    repo.write("tenants/acme.yaml", &acme.replace("seats: 80", "seats: 90"));
    repo.write(
        "tenants/hooli.yaml",
        "slug: hooli\nname: Hooli\nplan: starter\nowner:\n  email: it@hooli.example\nregion: us-west-2\n",
    );
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "hooli; acme seats"]);
    let feature = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["checkout", "-q", "main"]);
    // An edit in the working tree that is in no commit, and a broken file.
    repo.write("tenants/acme.yaml", &acme.replace("seats: 80", "seats: 70"));
    repo.write("tenants/broken.yaml", "slug: [\n");

    assert_eq!(repo.run(&["validate"]).status.code(), Some(1));
    let out = repo.run(&["validate", "--rev", "feature"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("5 tenants"),
        "{}",
        text(&out.stdout)
    );

    let out = repo.run(&["plan", "--rev", "feature"]);
    let plan = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(plan.contains("~ seats = 80 → 90"), "{plan}");
    assert!(plan.contains("# hooli will be provisioned"), "{plan}");
    assert!(
        !plan.contains("70"),
        "the working tree's edit is not in the commit:\n{plan}"
    );
    let out = repo.run(&["plan", "--rev", &main, "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    let out = repo.run(&["apply", "--auto-approve", "--rev", "feature"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("uncommitted"),
        "a revision is committed"
    );
    let state = text(&repo.run(&["state", "show", "hooli"]).stdout);
    assert!(
        state.contains(&feature),
        "the state records the commit applied:\n{state}"
    );
    assert_eq!(
        repo.run(&["plan", "--rev", "feature", "--detailed-exitcode"])
            .status
            .code(),
        Some(0)
    );
    // The working tree was never touched.
    assert!(
        std::fs::read_to_string(repo.path().join("tenants/acme.yaml"))
            .unwrap()
            .contains("seats: 70")
    );
    assert!(!repo.path().join("tenants/hooli.yaml").exists());

    let out = repo.run(&["plan", "--rev", "no-such-branch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .contains("cannot read the tenant repo at no-such-branch: no commit by that name"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn rev_works_for_a_tenant_repo_inside_a_bigger_git_repository() {
    let repo = Repo::example();
    let inner = repo.path().join("ops/saas");
    std::fs::create_dir_all(&inner).unwrap();
    for dir in ["tenants", "plans", "templates", "migrations"] {
        std::fs::rename(repo.path().join(dir), inner.join(dir)).unwrap();
    }
    init_committed(&repo, "monorepo");
    std::fs::remove_file(inner.join("tenants/globex.yaml")).unwrap();
    let out = Command::new(assert_cmd::cargo::cargo_bin("tenant-reconcile"))
        .args(["-C", inner.to_str().unwrap(), "validate", "--rev", "HEAD"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("4 tenants"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_tenant_file_moved_out_of_tenants_is_listed_as_deleted() {
    let repo = committed_example();
    repo.apply();
    std::fs::create_dir_all(repo.path().join("archive")).unwrap();
    git(
        &repo,
        &["mv", "tenants/initech.yaml", "archive/initech.yaml"],
    );
    git(&repo, &["commit", "-qm", "initech archived"]);

    let out = repo.run(&["plan", "--changed-since", "HEAD~1"]);
    let plan = text(&out.stdout);
    assert!(out.status.success(), "{plan}\n{}", text(&out.stderr));
    assert!(
        plan.contains("1 input file reaching 0 tenants with changes.\n  D tenants/initech.yaml"),
        "{plan}"
    );
    assert!(
        plan.contains("# initech is orphaned: its tenant file is gone; it is left as it is (active), never destroyed"),
        "{plan}"
    );

    // Moved back in, it is a file added to the inputs, and its tenant is planned again.
    git(
        &repo,
        &["mv", "archive/initech.yaml", "tenants/initech.yaml"],
    );
    let out = repo.run(&["plan", "--changed-since", "HEAD"]);
    let plan = text(&out.stdout);
    assert!(out.status.success(), "{plan}\n{}", text(&out.stderr));
    assert!(plan.contains("\n  A tenants/initech.yaml"), "{plan}");
    assert!(!plan.contains("orphaned"), "{plan}");
}

#[test]
fn changed_since_compares_only_the_input_folders() {
    // A repo that does not ignore the local target's folder: after an apply it holds many
    // untracked files, none of them an input.
    let mut repo = Repo::example();
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "the example tenants"]);
    repo.apply();
    for i in 0..200 {
        repo.write(&format!(".tenant-reconcile/junk/{i}.txt"), "x\n");
    }
    repo.write("notes/todo.txt", "not an input\n");
    let acme = std::fs::read_to_string(repo.path().join("tenants/acme.yaml")).unwrap();
    repo.write("tenants/acme.yaml", &acme.replace("seats: 80", "seats: 81"));
    repo.env.push((
        "TENANT_RECONCILE_LOG".into(),
        "tenant_reconcile=debug".into(),
    ));
    let out = repo.run(&["plan", "--changed-since", "HEAD"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("compared the input files with the base (files: 1)"),
        "{err}"
    );
    assert!(text(&out.stdout).contains("\n  M tenants/acme.yaml"));
}

#[test]
fn changed_since_plans_only_the_tenants_a_change_reaches_and_says_why() {
    let repo = committed_example();
    repo.apply();
    git(&repo, &["checkout", "-qb", "feature"]);
    let growth = std::fs::read_to_string(repo.path().join("plans/growth.hcl")).unwrap();
    repo.write(
        "plans/growth.hcl",
        &growth
            .replace(
                "api_calls_per_month = 1000000",
                "api_calls_per_month = 2000000",
            )
            .replace("sso            = true", "sso            = false"),
    );
    // A renamed tenant file is a new tenant (the slug is the file name); the old one is
    // an orphan, left alone.
    git(
        &repo,
        &["mv", "tenants/initech.yaml", "tenants/initrode.yaml"],
    );
    let initech = std::fs::read_to_string(repo.path().join("tenants/initrode.yaml")).unwrap();
    repo.write(
        "tenants/initrode.yaml",
        &initech.replace("slug: initech", "slug: initrode"),
    );
    git(&repo, &["add", "-A"]);
    git(
        &repo,
        &[
            "commit",
            "-qm",
            "more API calls on growth; initech is initrode now",
        ],
    );
    // Meanwhile main moves on: that change is not the branch's.
    git(&repo, &["checkout", "-q", "main"]);
    let globex = std::fs::read_to_string(repo.path().join("tenants/globex.yaml")).unwrap();
    repo.write("tenants/globex.yaml", &format!("{globex}locale: fr\n"));
    git(&repo, &["commit", "-qam", "globex speaks French"]);
    git(&repo, &["checkout", "-q", "feature"]);
    let merge_base = git(&repo, &["merge-base", "main", "feature"]);

    let out = repo.run(&["plan", "--changed-since", "main", "--detailed-exitcode"]);
    let plan = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{plan}\n{}", text(&out.stderr));
    assert!(
        plan.starts_with(&format!(
            "Changed since main (merge-base {}): 2 input files reaching 3 tenants with changes.\n  M plans/growth.hcl       2 tenants\n      DOWNGRADE: feature sso true → false (2 tenants)\n      quota api_calls_per_month 1000000 → 2000000 (2 tenants)\n  R tenants/initrode.yaml  1 tenant\n      new tenant (1 tenant)\n\nWarning: this plan downgrades tenants:\n  DOWNGRADE: feature sso true → false (2 tenants)\n",
            &merge_base[..12]
        )),
        "{plan}"
    );
    assert!(
        plan.contains("# acme will be updated in place [tenants/acme.yaml] ← plans/growth.hcl"),
        "{plan}"
    );
    assert!(plan.contains("# umbrella-labs will be updated in place [tenants/umbrella-labs.yaml] ← plans/growth.hcl"), "{plan}");
    assert!(plan.contains("# initrode will be provisioned"), "{plan}");
    assert!(
        plan.contains("~ api_calls_per_month = 1000000 → 2000000"),
        "{plan}"
    );
    assert!(
        !plan.contains("# globex"),
        "main's own change is not the branch's:\n{plan}"
    );
    assert!(
        plan.contains("initech"),
        "the renamed tenant's old slug is reported as an orphan:\n{plan}"
    );

    let out = repo.run(&["plan", "--changed-since", "main", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["changed_since"]["base"], "main");
    assert_eq!(json["changed_since"]["merge_base"], merge_base);
    let acme = json["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["slug"] == "acme")
        .unwrap();
    assert_eq!(
        acme["pulled_in_by"],
        serde_json::json!(["plans/growth.hcl"])
    );

    let md = text(
        &repo
            .run(&["plan", "--changed-since", "main", "--format", "markdown"])
            .stdout,
    );
    assert!(
        md.contains("| M | `plans/growth.hcl` | 2 | ⚠️ **DOWNGRADE: feature sso true → false (2 tenants)**<br>quota api_calls_per_month 1000000 → 2000000 (2 tenants) |"),
        "{md}"
    );
    assert!(
        md.contains(
            "> ⚠️ **This plan downgrades tenants:**\n> - feature sso true → false (2 tenants)"
        ),
        "{md}"
    );

    // A template reaches every tenant; an uncommitted edit counts for the working tree.
    repo.write(
        "templates/files/namespace.yaml.tera",
        &format!(
            "{}# edited\n",
            std::fs::read_to_string(repo.path().join("templates/files/namespace.yaml.tera"))
                .unwrap()
        ),
    );
    let plan = text(&repo.run(&["plan", "--changed-since", "feature"]).stdout);
    assert!(
        plan.contains("M templates/files/namespace.yaml.tera  4 tenants"),
        "{plan}"
    );
    // And with --rev, only what is committed.
    let out = repo.run(&[
        "plan",
        "--changed-since",
        "feature",
        "--rev",
        "feature",
        "--detailed-exitcode",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("0 input files reaching 0 tenants")
            && text(&out.stdout).contains("No changes. The tenants the changed inputs reach match their files; other tenants were not planned.")
            && !text(&out.stdout).contains("were not read"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_plan_file_change_reaches_every_tenant_on_that_plan_and_no_other() {
    let repo = Repo::example();
    for i in 0..40 {
        let plan = if i % 4 == 0 { "growth" } else { "starter" };
        repo.write(
            &format!("tenants/bulk-{i:03}.yaml"),
            &format!("slug: bulk-{i:03}\nname: Bulk {i}\nplan: {plan}\nowner:\n  email: ops@bulk-{i}.example\nregion: eu-west-1\n"),
        );
    }
    init_committed(&repo, "44 tenants");
    repo.apply();
    git(&repo, &["checkout", "-qb", "cheaper-storage"]);
    let starter = std::fs::read_to_string(repo.path().join("plans/starter.hcl")).unwrap();
    repo.write(
        "plans/starter.hcl",
        &starter.replace("storage_gb          = 5", "storage_gb          = 2"),
    );
    git(&repo, &["commit", "-qam", "less storage on starter"]);

    let out = repo.run(&["plan", "--changed-since", "main", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // initech and the 30 bulk tenants on starter; none of the growth or enterprise ones.
    let slugs: Vec<&str> = plan["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    let mut expected: Vec<String> = (0..40)
        .filter(|i| i % 4 != 0)
        .map(|i| format!("bulk-{i:03}"))
        .collect();
    expected.push("initech".into());
    expected.sort();
    assert_eq!(slugs, expected);
    for t in plan["tenants"].as_array().unwrap() {
        assert_eq!(t["pulled_in_by"], serde_json::json!(["plans/starter.hcl"]));
    }
    assert_eq!(
        plan["changed_since"]["files"],
        serde_json::json!([{"status": "M", "path": "plans/starter.hcl", "tenants": 31}])
    );
    let text_plan = text(&repo.run(&["plan", "--changed-since", "main"]).stdout);
    assert!(
        text_plan.contains("  M plans/starter.hcl  31 tenants\n      DOWNGRADE: quota storage_gb 5 → 2 (31 tenants)\n"),
        "{text_plan}"
    );
    repo.run(&["apply", "--auto-approve"]);
    repo.assert_plan_empty();
}

#[test]
fn a_linked_config_is_refused_in_the_working_tree_and_in_a_commit() {
    let repo = committed_example();
    std::fs::write(
        repo.path().join("elsewhere.hcl"),
        "targets {\n  data = \"postgres\"\n}\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("elsewhere.hcl", repo.path().join("tenant-reconcile.hcl")).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "a linked config"]);
    for args in [&["validate"][..], &["validate", "--rev", "HEAD"]] {
        let out = repo.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains("tenant-reconcile.hcl:1:1: symbolic links are not followed"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

use crate::support::{redact, text, Repo};

#[test]
fn plan_text_for_a_new_repo() {
    let repo = Repo::example();
    let out = repo.run(&["plan"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    insta::assert_snapshot!(text(&out.stdout));
    // Plan changes nothing, not even the local target's folder.
    assert!(!repo.state_dir().exists());
}

#[test]
fn detailed_exitcode_says_whether_there_are_changes() {
    let repo = Repo::example();
    assert_eq!(
        repo.run(&["plan", "--detailed-exitcode"]).status.code(),
        Some(2)
    );
    repo.apply();
    assert_eq!(
        repo.run(&["plan", "--detailed-exitcode"]).status.code(),
        Some(0)
    );
}

#[test]
fn plan_json_is_versioned_and_complete() {
    let repo = Repo::example();
    let out = repo.run(&["plan", "--format", "json", "--tenant", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["summary"]["add"], 9);
    assert_eq!(v["tenants"].as_array().unwrap().len(), 1);
    let mut redacted = v.clone();
    redacted["tool_version"] = "[VERSION]".into();
    insta::assert_json_snapshot!(redacted);
}

#[test]
fn plan_markdown_summary_first() {
    let repo = Repo::example();
    let out = repo.run(&["plan", "--format", "markdown"]);
    assert!(out.status.success());
    insta::assert_snapshot!(text(&out.stdout));
}

#[test]
fn markdown_stays_within_a_comment_however_many_tenants_change() {
    let repo = Repo::example();
    for i in 0..400 {
        repo.write(
            &format!("tenants/bulk-{i:04}.yaml"),
            &format!(
                "slug: bulk-{i:04}\nname: Bulk {i}\nplan: growth\nowner:\n  email: o{i}@bulk.example\nregion: eu-west-1\n"
            ),
        );
    }
    let out = repo.run(&["plan", "--format", "markdown"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let md = text(&out.stdout);
    assert!(md.len() < 65_000, "markdown is {} characters", md.len());
    // The summary comes first, after only what is called out (the example's own upgrades).
    let summary = md.find("**Plan: 3636 to add").expect("the summary");
    assert!(
        md.starts_with("### tenant-reconcile plan\n\n") && summary < 1_000,
        "{}",
        &md[..summary.min(md.len())]
    );
    assert!(md.contains("more tenants not shown"));
}

#[test]
fn saved_plan_applies_exactly_and_a_stale_one_is_refused() {
    let repo = Repo::example();
    let plan_file = repo.path().join("first.tfplan");
    let out = repo.run(&["plan", "--out", plan_file.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("Saved the plan to"));
    let stale = repo.path().join("stale.tfplan");
    std::fs::copy(&plan_file, &stale).unwrap();

    let out = repo.run(&["apply", plan_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    repo.assert_plan_empty();

    let before = repo.fingerprint();
    let out = repo.run(&["apply", stale.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = redact(&repo, &text(&out.stderr));
    assert!(err.contains("the saved plan is stale"), "{err}");
    assert_eq!(
        before,
        repo.fingerprint(),
        "a refused plan changed something"
    );
}

#[test]
fn apply_without_a_terminal_shows_the_plan_and_says_how_to_apply_it() {
    let repo = Repo::example();
    let before = repo.fingerprint();
    let out = repo.run(&["apply"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("Plan: "),
        "the plan is shown:\n{}",
        text(&out.stdout)
    );
    insta::assert_snapshot!(redact(&repo, &text(&out.stderr)));
    assert!(!repo.state_dir().join("state.json").exists());
    assert_eq!(
        before,
        repo.fingerprint(),
        "apply without a yes changed something"
    );
}

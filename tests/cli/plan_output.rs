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

/// A plan far longer than what is printed at once (64 KB) prints whole: every tenant, the
/// summary last, and no colour code (stdout here is no terminal), not even one cut in two
/// between two writes.
#[test]
fn a_long_plan_prints_whole_and_without_colour_codes() {
    let repo = Repo::example();
    for i in 0..100 {
        repo.write_tenant(&format!("long-{i:03}"));
    }
    let out = repo.run(&["plan"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert!(
        plan.len() > 3 * 64 * 1024,
        "the plan is {} bytes",
        plan.len()
    );
    assert!(!plan.contains('\u{1b}'), "a colour code in the plan");
    for i in 0..100 {
        let heading = format!("# long-{i:03} will be provisioned (pending → active)");
        assert!(plan.contains(&heading), "{heading}");
    }
    assert!(
        plan.trim_end().ends_with(
            "Plan: 936 to add, 0 to change, 0 to destroy. Then smoke tests for 103 tenants."
        ),
        "{}",
        &plan[plan.len().saturating_sub(300)..]
    );
}

#[test]
fn markdown_stays_within_a_comment_however_many_tenants_change() {
    let repo = Repo::example();
    for i in 0..400 {
        repo.write_tenant(&format!("bulk-{i:04}"));
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
fn a_check_between_saving_a_plan_and_applying_it_leaves_the_plan_good() {
    let repo = Repo::example();
    repo.apply();
    let acme = std::fs::read_to_string(repo.path().join("tenants/acme.yaml")).unwrap();
    repo.write("tenants/acme.yaml", &acme.replace("seats: 80", "seats: 90"));
    let plan_file = repo.path().join("seats.tfplan");
    let out = repo.run(&["plan", "--out", plan_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A monitoring cron checks the tenants meanwhile, and records their health.
    let out = repo.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let show = text(&repo.run(&["show"]).stdout);
    assert!(show.contains("healthy at "), "{show}");
    let out = repo.run(&["apply", plan_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    repo.assert_plan_empty();
    // The health the check recorded is kept.
    let show = text(&repo.run(&["show"]).stdout);
    assert!(show.contains("healthy at "), "{show}");
}

#[test]
fn show_reads_the_configured_state_while_a_tenant_file_is_broken() {
    let repo = Repo::example();
    repo.write(
        "tenant-reconcile.hcl",
        "state {\n  backend = \"local\"\n  path    = \"elsewhere/state.json\"\n}\n",
    );
    repo.apply();
    repo.write("tenants/acme.yaml", "slug: acme\nplan: [\n");
    for args in [&["show"][..], &["state", "list"]] {
        let out = repo.run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let shown = text(&out.stdout);
        assert!(
            shown.contains("globex"),
            "{args:?} did not read the configured state:\n{shown}"
        );
    }
    // A config that does not load says so: it is what says where the state is.
    repo.write("tenant-reconcile.hcl", "state {\n  backend = 5\n}\n");
    let out = repo.run(&["show"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("tenant-reconcile.hcl:2:3: field `state.backend`"),
        "{}",
        text(&out.stderr)
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

#[test]
fn a_renamed_tenant_file_is_said_to_look_like_a_rename_with_the_choices() {
    let repo = Repo::example();
    repo.apply();
    // `git mv tenants/acme.yaml tenants/acme-corp.yaml`, and the slug edited to match.
    let acme = std::fs::read_to_string(repo.path().join("tenants/acme.yaml")).unwrap();
    repo.remove("tenants/acme.yaml");
    repo.write(
        "tenants/acme-corp.yaml",
        &acme
            .replace("slug: acme", "slug: acme-corp")
            .replace("ops@acme.example", "Ops@Acme.example"),
    );
    let out = repo.run(&["plan"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout) + &text(&out.stderr);
    assert!(
        plan.contains("acme-corp looks like acme renamed (acme's file is gone and acme-corp has its owner, ops@acme.example, id ")
            && plan.contains("name its file and slug acme again")
            && plan.contains("`tenant-reconcile state rm acme`"),
        "{plan}"
    );
    // Put back, the plan is empty again.
    repo.remove("tenants/acme-corp.yaml");
    repo.write("tenants/acme.yaml", &acme);
    repo.assert_plan_empty();
}

#[test]
fn owners_are_one_however_capitalised_and_a_shared_owner_is_said() {
    let repo = Repo::example();
    repo.apply();
    let acme = std::fs::read_to_string(repo.path().join("tenants/acme.yaml")).unwrap();
    // The same address capitalised otherwise is no change.
    repo.write(
        "tenants/acme.yaml",
        &acme.replace("ops@acme.example", "Ops@ACME.example"),
    );
    repo.assert_plan_empty();
    // A copied file whose owner was left as it was.
    let globex = std::fs::read_to_string(repo.path().join("tenants/globex.yaml")).unwrap();
    repo.write(
        "tenants/globex.yaml",
        &globex.replace("it-admin@globex.example", "ops@acme.example"),
    );
    let warning =
        "acme and globex share the owner ops@acme.example: if a file was copied, set its owner";
    let out = repo.run(&["validate"]);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains(warning), "{}", text(&out.stderr));
    let out = repo.run(&["plan"]);
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(said.contains(warning), "{said}");
}

#[test]
fn show_after_a_stopped_apply_does_not_call_it_ok() {
    // Killed while a tenant's steps are under way: tried with longer waits until a kill
    // lands in the middle of a tenant.
    let stopped = [0, 20, 50, 100, 200, 300, 500].into_iter().find_map(|ms| {
        let repo = Repo::example();
        repo.kill_apply(1, 1, std::time::Duration::from_millis(ms));
        let show = text(&repo.run(&["show"]).stdout);
        show.contains(" provisioning ").then_some((repo, show))
    });
    let (repo, show) = stopped.expect("no kill landed in the middle of a tenant");
    for row in show.lines().filter(|l| l.contains(" provisioning ")) {
        assert!(
            !row.ends_with("  ok") && row.contains("not finished (at "),
            "a provisioning tenant whose apply stopped reads as ok:\n{show}"
        );
    }
    repo.apply();
    repo.assert_plan_empty();
    let show = text(&repo.run(&["show"]).stdout);
    assert!(!show.contains("not finished"), "{show}");
}

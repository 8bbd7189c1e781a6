//! `plan --refresh-only`: what changed outside tenant-reconcile, for scheduled drift runs.

use serde_json::json;

use crate::support::{text, Repo};

#[test]
fn refresh_only_reports_drift_field_by_field_and_exits_2() {
    let repo = Repo::example();
    repo.apply();
    let out = repo.run(&["plan", "--refresh-only"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "No drift: the live resources of 4 tenants match the recorded state.\n"
    );

    // Someone flips a flag in the control plane and deletes a bucket and a database.
    repo.query(
        "control.sqlite",
        "UPDATE feature_flags SET enabled = 1 WHERE flag = 'beta_reports' AND tenant_id = (SELECT tenant_id FROM tenants WHERE slug = 'acme')",
    );
    std::fs::remove_dir_all(repo.state_dir().join("buckets/initech")).unwrap();
    std::fs::remove_file(repo.state_dir().join("data/globex.sqlite")).unwrap();
    let before = repo.fingerprint();

    let out = repo.run(&["plan", "--refresh-only"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    insta::assert_snapshot!(text(&out.stdout));

    let out = repo.run(&["plan", "--refresh-only", "--format", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let mut report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["format_version"], 1);
    assert_eq!(report["kind"], "drift");
    assert_eq!(
        report["summary"],
        json!({"tenants_checked": 4, "tenants_drifted": 3, "resources_drifted": 4})
    );
    for field in ["generated_at", "tool_version"] {
        report[field] = json!("[REDACTED]");
    }
    report["state"]["lineage"] = json!("[LINEAGE]");
    // The serial counts the apply's checkpoints, which is not what this report is about.
    assert!(report["state"]["serial"].as_u64().unwrap() > 0);
    report["state"]["serial"] = json!("[SERIAL]");
    insta::assert_json_snapshot!(report);

    // Reporting drift changes nothing; apply is the repair.
    assert_eq!(repo.fingerprint(), before);
    repo.apply();
    assert_eq!(repo.run(&["plan", "--refresh-only"]).status.code(), Some(0));
    repo.assert_plan_empty();
}

#[test]
fn a_pending_edit_to_a_tenant_file_is_not_drift() {
    let repo = Repo::example();
    repo.apply();
    let acme = std::fs::read_to_string(repo.path().join("tenants/acme.yaml")).unwrap();
    repo.write("tenants/acme.yaml", &acme.replace("seats: 80", "seats: 90"));
    assert_eq!(repo.run(&["plan", "--refresh-only"]).status.code(), Some(0));
    assert_eq!(
        repo.run(&["plan", "--detailed-exitcode"]).status.code(),
        Some(2)
    );
}

#[test]
fn refresh_only_cannot_be_saved_or_applied() {
    let repo = Repo::example();
    let out = repo.run(&["plan", "--refresh-only", "--out", "x.json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot be used with"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn refresh_only_before_any_apply_says_there_is_nothing_to_compare() {
    let repo = Repo::example();
    let out = repo.run(&["plan", "--refresh-only"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "No drift: no tenant has been applied yet, so nothing is recorded to compare with.\n"
    );
    assert!(!repo.state_dir().exists(), "a drift report writes nothing");
}

#[test]
fn what_a_killed_run_made_before_recording_it_is_recorded_by_the_next_apply() {
    let repo = Repo::example();
    repo.apply();
    // As a run killed between making acme's bucket and its checkpoint leaves it: the bucket
    // stands as the file asks, and the state does not know it.
    let forget = |key: &str| {
        repo.edit_state(|state| {
            let resources = state["tenants"]["acme"]["resources"]
                .as_object_mut()
                .unwrap();
            assert!(resources.remove(key).is_some(), "acme/{key} was recorded");
        })
    };
    forget("bucket");
    let out = repo.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert!(
        plan.contains(
            "~ acme/bucket  # made by a run cut short before the state recorded it: recorded now"
        ),
        "{plan}"
    );
    assert!(
        plan.contains("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{plan}"
    );
    repo.apply();
    repo.assert_plan_empty();
    let state = repo.state_json();
    assert!(
        state["tenants"]["acme"]["resources"]["bucket"].is_object(),
        "the bucket is recorded again"
    );
}

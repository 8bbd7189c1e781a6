//! A tenant's file may give it more than its plan does: the plan shows each such upgrade
//! beside the downgrades, and a plan's `limits` cap what its tenants may ask for.

use crate::support::{text, Repo};

const HOOLI: &str = "slug: hooli\nname: Hooli\nplan: starter\nowner:\n  email: it@hooli.example\nregion: us-west-2\nisolation: database\nfeatures:\n  sso: true\nquotas:\n  seats: 9223372036854775807\n";

#[test]
fn an_override_beyond_the_plan_is_an_upgrade_in_the_blast_radius() {
    let repo = Repo::example();
    repo.apply();
    repo.write("tenants/hooli.yaml", HOOLI);
    let out = repo.run(&["plan"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    for expected in [
        "this plan gives tenants more than their plan does:",
        "UPGRADE: isolation database, beyond plan starter's shared (1 tenant)",
        "UPGRADE: feature sso true, beyond plan starter's false (1 tenant)",
        "UPGRADE: quota seats 9223372036854775807, beyond plan starter's 5 (1 tenant)",
    ] {
        assert!(plan.contains(expected), "missing {expected:?} in:\n{plan}");
    }
    let md = text(&repo.run(&["plan", "--format", "markdown"]).stdout);
    assert!(
        md.contains("> ⚠️ **This plan gives tenants more than their plan does:**\n> - feature sso true, beyond plan starter's false (1 tenant)\n> - isolation database, beyond plan starter's shared (1 tenant)\n> - quota seats 9223372036854775807, beyond plan starter's 5 (1 tenant)\n"),
        "{md}"
    );
    // Applied, an upgrade kept as it is is not repeated; one changed is.
    repo.apply();
    repo.assert_plan_empty();
    let acme = std::fs::read_to_string(repo.path().join("tenants/acme.yaml")).unwrap();
    repo.write("tenants/acme.yaml", &acme.replace("seats: 80", "seats: 90"));
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("UPGRADE: quota seats 90, beyond plan growth's 50 (1 tenant)")
            && !plan.contains("hooli"),
        "{plan}"
    );
    repo.apply();
    repo.assert_plan_empty();
}

#[test]
fn a_plan_caps_what_its_tenants_may_ask_for() {
    let repo = Repo::example();
    repo.apply();
    let starter = std::fs::read_to_string(repo.path().join("plans/starter.hcl")).unwrap();
    let limits = "\n# What a tenant's file may ask for beyond the defaults.\nlimits {\n  isolation = \"schema\"\n  quotas = {\n    seats = 20\n  }\n  features = {\n    sso = false\n  }\n}\n";
    repo.write("plans/starter.hcl", &format!("{starter}{limits}"));
    repo.assert_plan_empty();

    repo.write("tenants/hooli.yaml", HOOLI);
    let before = repo.fingerprint();
    for args in [&["validate"][..], &["plan"], &["apply", "--auto-approve"]] {
        let out = repo.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        for expected in [
            "tenants/hooli.yaml:7:1: field `isolation`: database is beyond what plan starter allows its tenants (at most schema: the limits in plans/starter.hcl)",
            "tenants/hooli.yaml:9:3: field `features.sso`: true is beyond what plan starter allows its tenants (it may not be turned on: the limits in plans/starter.hcl)",
            "tenants/hooli.yaml:11:3: field `quotas.seats`: 9223372036854775807 is beyond what plan starter allows its tenants (at most 20: the limits in plans/starter.hcl)",
        ] {
            assert!(err.contains(expected), "{args:?}: missing {expected:?} in:\n{err}");
        }
    }
    assert_eq!(repo.fingerprint(), before, "nothing changed");

    // Within the limits, it is an upgrade like any other.
    repo.write(
        "tenants/hooli.yaml",
        &HOOLI
            .replace("isolation: database", "isolation: schema")
            .replace("sso: true", "sso: false")
            .replace("9223372036854775807", "20"),
    );
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("UPGRADE: isolation schema, beyond plan starter's shared (1 tenant)")
            && plan.contains("UPGRADE: quota seats 20, beyond plan starter's 5 (1 tenant)"),
        "{plan}"
    );

    // A limit below what the plan itself gives is refused where it is written.
    repo.write(
        "plans/starter.hcl",
        &format!("{starter}{}", limits.replace("seats = 20", "seats = 4")),
    );
    let out = repo.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let line = starter.lines().count() + 6;
    assert!(
        err.contains(&format!("plans/starter.hcl:{line}:5: field `limits.quotas.seats`: limit 4 is below the plan's own seats = 5")),
        "{err}"
    );
    // The tenant schema carries the limits, for editors.
    repo.write("plans/starter.hcl", &format!("{starter}{limits}"));
    let out = repo.run(&["schema", "tenant"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let starter_rule = schema["allOf"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["if"]["properties"]["plan"]["const"] == "starter")
        .unwrap();
    let then = &starter_rule["then"]["properties"];
    assert_eq!(then["quotas"]["properties"]["seats"]["maximum"], 20);
    assert_eq!(then["features"]["properties"]["sso"]["const"], false);
    assert_eq!(
        then["isolation"]["enum"],
        serde_json::json!(["shared", "schema"])
    );
    repo.apply();
    repo.assert_plan_empty();
}

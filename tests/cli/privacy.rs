//! What the tool shows and keeps reaches only those it is for: a template cannot read the
//! pipeline's secrets, a plan needs no master key, every file under the local target is its
//! operator's alone, the markdown plan shows tenant text without acting on it, and a purged
//! tenant has no data or login left to hand out.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::git::{committed_example, git};
use crate::offboarding::offboard;
use crate::support::{redact, text, Repo};

/// A value only this test puts in the environment: found in any output, it leaked.
const SECRET: &str = "s3cr3t-9f2c6e1d-never-printed";

fn output(out: &std::process::Output) -> String {
    format!("{}\n{}", text(&out.stdout), text(&out.stderr))
}

#[test]
fn no_template_reaches_the_environment_the_clock_or_chance() {
    let mut repo = Repo::example();
    repo.env
        .push(("TENANT_RECONCILE_TEST_SECRET".into(), SECRET.into()));
    repo.env
        .push(("TENANT_RECONCILE_MASTER_KEY".into(), SECRET.repeat(2)));
    for (function, call) in [
        ("get_env", r#"get_env(name="TENANT_RECONCILE_TEST_SECRET")"#),
        ("get_env", r#"get_env(name="TENANT_RECONCILE_MASTER_KEY")"#),
        ("now", "now()"),
        ("get_random", "get_random(end=100)"),
    ] {
        repo.write(
            "templates/files/leak.yaml.tera",
            &format!("slug: {{{{ tenant.slug }}}}\nvalue: {{{{ {call} }}}}\n"),
        );
        for args in [
            &["validate"][..],
            &["plan", "--format", "markdown"],
            &["apply", "--auto-approve"],
        ] {
            let out = repo.run(args);
            let all = output(&out);
            assert_eq!(out.status.code(), Some(1), "{args:?} with {call}:\n{all}");
            assert!(
                all.contains("templates/files/leak.yaml.tera")
                    && all.contains(&format!("{function}() is not available to templates")),
                "{args:?} names the template and the function:\n{all}"
            );
            assert!(!all.contains(SECRET), "{args:?} printed the secret:\n{all}");
        }
        assert!(!repo.state_dir().join("state.json").exists());
    }
    repo.remove("templates/files/leak.yaml.tera");

    // A check's URL is a template too.
    let growth = std::fs::read_to_string(repo.path().join("plans/growth.hcl")).unwrap();
    repo.write(
        "plans/growth.hcl",
        &format!(
            "{growth}\ncheck \"leak\" {{\n  http = \"https://{{{{ get_env(name=\\\"TENANT_RECONCILE_TEST_SECRET\\\") }}}}.example/\"\n}}\n"
        ),
    );
    let out = repo.run(&["validate"]);
    let all = output(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("plans/growth.hcl") && all.contains("get_env() is not available"),
        "{all}"
    );
    assert!(!all.contains(SECRET), "{all}");
    repo.write("plans/growth.hcl", &growth);

    repo.apply();
    repo.assert_plan_empty();
}

#[test]
fn plan_needs_no_master_key_and_apply_does() {
    let mut repo = Repo::example();
    let key = "0123456789abcdef".repeat(4);
    repo.env
        .push(("TENANT_RECONCILE_MASTER_KEY".into(), key.clone()));
    repo.apply();
    let without = |args: &[&str]| {
        repo.cmd()
            .env_remove("TENANT_RECONCILE_MASTER_KEY")
            .args(args)
            .output()
            .unwrap()
    };
    // The state records the key's id; there is no key here, and the plan is made anyway.
    let out = without(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", output(&out));
    assert!(text(&out.stdout).contains("No changes."));
    assert!(
        output(&out).contains("there is no master key here"),
        "{}",
        output(&out)
    );
    // A new tenant's password, and a rotated one, are known after apply.
    repo.write(
        "tenants/hooli.yaml",
        "slug: hooli\nname: Hooli\nplan: starter\nowner:\n  email: it@hooli.example\nregion: us-west-2\n",
    );
    let out = without(&["plan", "--rotate-credentials", "acme"]);
    assert!(out.status.success(), "{}", output(&out));
    let plan = text(&out.stdout);
    for expected in [
        "+ hooli/role",
        "~ acme/role",
        "~ credentials_version  = 1 → 2",
    ] {
        assert!(plan.contains(expected), "missing {expected:?}:\n{plan}");
    }
    assert_eq!(
        plan.matches("password_fingerprint = (known after apply)")
            .count(),
        2,
        "{plan}"
    );
    // Apply needs the key, and makes none up in its place.
    let before = repo.fingerprint();
    let out = without(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    assert!(
        text(&out.stderr).contains("there is no master key here"),
        "{}",
        output(&out)
    );
    assert_eq!(repo.fingerprint(), before, "nothing changed");
    assert!(!repo.state_dir().join("master.key").exists());
    repo.apply();
    repo.assert_plan_empty();
}

/// On a real server there is no local key to fall back on: the plan job of a pull request
/// has only the database URL, and its plan is made all the same.
#[test]
fn on_postgres_a_plan_without_the_key_is_made_and_shows_no_changes() {
    let pg = crate::pg::Pg::new();
    let repo = pg.repo();
    repo.apply();
    let out = repo
        .cmd()
        .env_remove("TENANT_RECONCILE_MASTER_KEY")
        .args(["plan", "--detailed-exitcode"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", output(&out));
    assert!(
        text(&out.stdout).contains("No changes."),
        "{}",
        output(&out)
    );
    let out = repo
        .cmd()
        .env_remove("TENANT_RECONCILE_MASTER_KEY")
        .args(["apply", "--auto-approve"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    repo.assert_plan_empty();
}

/// Every file under `dir` and the folder itself: files 0600, folders 0700.
fn assert_private(dir: &Path) -> usize {
    let mut seen = 0;
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            seen += assert_private(&p);
        } else {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} is {mode:o}", p.display());
            seen += 1;
        }
    }
    seen
}

#[test]
fn everything_under_the_local_target_and_every_export_is_the_operators_alone() {
    let repo = Repo::example_with_hooks();
    // What an older version left, world-readable, is narrowed when it is opened again.
    repo.apply();
    for f in [
        "state.json",
        "state.db",
        "control.sqlite",
        "data/acme.sqlite",
        "master.key",
    ] {
        let p = repo.state_dir().join(f);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    for d in ["", "data"] {
        let p = repo.state_dir().join(d);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    repo.write(
        "tenants/acme.yaml",
        &std::fs::read_to_string(repo.path().join("tenants/acme.yaml"))
            .unwrap()
            .replace("seats: 80", "seats: 90"),
    );
    repo.apply();
    let out = repo.run(&["export", "acme"]);
    assert!(out.status.success(), "{}", output(&out));
    offboard(&repo, "globex");
    repo.apply();
    let files = assert_private(&repo.state_dir());
    for expected in [
        "state.json",
        "state.db",
        "control.sqlite",
        "catalog.sqlite",
        "master.key",
        "billing.log",
        "data/acme.sqlite",
        "exports/globex/manifest.json",
        "rendered/acme/namespace.yaml",
    ] {
        assert!(
            repo.state_dir().join(expected).exists(),
            "{expected} was walked ({files} files)"
        );
    }
    assert!(std::fs::read_dir(repo.state_dir().join("exports"))
        .unwrap()
        .any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("acme-")));

    // An export into a folder of the operator's choosing is private too.
    let to = repo.path().join("handover/acme");
    let out = repo.run(&["export", "acme", "--to", to.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output(&out));
    assert!(assert_private(&to) >= 3);
    repo.assert_plan_empty();
}

#[test]
fn the_markdown_plan_shows_tenant_text_without_acting_on_it() {
    let repo = committed_example();
    repo.apply();
    git(&repo, &["checkout", "-qb", "feature"]);
    let hostile = "<img src=x onerror=alert(1)> [click](http://evil) @org/team `code` **bold** www.evil.example | cell";
    let acme = std::fs::read_to_string(repo.path().join("tenants/acme.yaml")).unwrap();
    repo.write(
        "tenants/acme.yaml",
        &acme
            .replace("name: Acme Corporation", &format!("name: '{hostile}'"))
            .replace("ops@acme.example", "ceo@evil.example"),
    );
    git(&repo, &["commit", "-qam", "a hostile name"]);
    let out = repo.run(&["plan", "--changed-since", "main", "--format", "markdown"]);
    assert!(out.status.success(), "{}", output(&out));
    let md = text(&out.stdout);
    // Outside the code blocks, nothing of it is live.
    let outside: String = md.split("```").step_by(2).collect::<Vec<_>>().join("\n");
    for live in [
        "<img",
        "[click](",
        "@org/",
        "http://evil",
        "www.evil",
        "ceo@evil",
        "**bold**",
        " `code` ",
        " | cell",
    ] {
        assert!(!outside.contains(live), "{live:?} is live in:\n{md}");
    }
    assert!(md.contains("registry name"), "the rename is shown:\n{md}");
    let base = git(&repo, &["merge-base", "main", "feature"]);
    insta::assert_snapshot!(
        "markdown_hostile_name",
        redact(&repo, &md).replace(&base[..12], "[MERGE-BASE]")
    );
    git(&repo, &["checkout", "-q", "main"]);
    git(&repo, &["merge", "-q", "feature"]);
    repo.apply();
    repo.assert_plan_empty();
}

#[test]
fn a_purged_tenant_has_no_export_or_login_left_to_hand_out() {
    let repo = Repo::example();
    repo.apply();
    crate::offboarding::erase(&repo, "acme", true);
    repo.apply();
    repo.assert_plan_empty();
    let state = repo.state_json();
    let day = &state["tenants"]["acme"]["purge"]["finished_at"]
        .as_str()
        .unwrap()[..10];
    let said = format!(
        "acme was purged on {day}; its offboarding export is at .tenant-reconcile/exports/acme"
    );
    let exports = repo.state_dir().join("exports");
    let before = repo.fingerprint();
    for args in [&["export", "acme"][..], &["credentials", "acme"]] {
        let out = repo.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", output(&out));
        assert!(
            text(&out.stderr).contains(&said),
            "{args:?}: {}",
            output(&out)
        );
        assert!(text(&out.stdout).is_empty(), "{args:?}: {}", output(&out));
    }
    assert_eq!(repo.fingerprint(), before, "nothing was written");
    assert_eq!(
        std::fs::read_dir(&exports).unwrap().count(),
        1,
        "only the offboarding export is there"
    );
    repo.assert_plan_empty();
}

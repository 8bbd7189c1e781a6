//! Rollouts on the local target, through the real binary: a change to a template goes out
//! in waves, a failing canary halts it, and a killed apply never has more tenants mid-change
//! than the wave's limit. The Postgres migration rollout is in `pg_rollouts.rs`.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;

use crate::git::{commit, git, init_committed};
use crate::support::{request_path, respond, text, Repo};

/// The app the tenants' files configure, on a free loopback port of the test's own: its
/// health check (`/<slug>`) fails for a tenant whose rendered `app.conf` says `broken`, as a
/// real app fails on a config it cannot read, and for one the test marked down (a file
/// named as its slug in `rendered`'s sibling folder `down`).
fn app(rendered: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let rendered = rendered.clone();
            // A connection of its own each: an apply killed mid-request leaves one that
            // never says more, which must hold up no other.
            std::thread::spawn(move || answer(stream, &rendered));
        }
    });
    port
}

fn answer(stream: std::net::TcpStream, rendered: &std::path::Path) {
    let Some(path) = request_path(&stream) else {
        return;
    };
    let slug = path.trim_start_matches('/');
    let conf = std::fs::read_to_string(rendered.join(slug).join("app.conf")).unwrap_or_default();
    let down = rendered.with_file_name("down").join(slug).exists();
    let status = if conf.contains("broken") || down {
        500
    } else {
        200
    };
    respond(stream, status);
}

/// `n` tenants (`t-001`…) with an `app.conf` rendered from a template, whose app is checked
/// before a tenant is active and before a rollout's wave goes on; `waves` is the config's
/// rollout block. Committed: a rollout goes from one commit's inputs to another's.
fn fleet(n: usize, waves: &str) -> Repo {
    let repo = Repo::example();
    for f in std::fs::read_dir(repo.path().join("tenants")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    for i in 1..=n {
        repo.write_tenant(&format!("t-{i:03}"));
    }
    let port = app(repo.state_dir().join("rendered"));
    repo.write(
        "tenant-reconcile.hcl",
        &format!(
            "check \"app\" {{\n  http = \"http://127.0.0.1:{port}/{{{{ tenant.slug }}}}\"\n  expect_status = 200\n}}\n\nrollout {{\n{waves}}}\n"
        ),
    );
    repo.write("templates/files/app.conf.tera", "mode = ok\n");
    init_committed(&repo, "the fleet");
    repo
}

/// What each tenant's rendered `app.conf` says, by slug.
fn confs(repo: &Repo) -> BTreeMap<String, String> {
    let rendered = repo.state_dir().join("rendered");
    std::fs::read_dir(&rendered)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .map(|slug| {
            let conf = std::fs::read_to_string(rendered.join(&slug).join("app.conf")).unwrap();
            (slug, conf.trim().to_string())
        })
        .collect()
}

/// How many tenants' `app.conf` says `mode`.
fn on(repo: &Repo, mode: &str) -> usize {
    confs(repo)
        .values()
        .filter(|c| **c == format!("mode = {mode}"))
        .count()
}

/// Commit hashes, times and the app's port taken out, for snapshots.
fn settle(s: &str) -> String {
    let s = match s.find("127.0.0.1:") {
        Some(at) => {
            let from = at + "127.0.0.1:".len();
            let digits = s[from..].chars().take_while(char::is_ascii_digit).count();
            let port = &s[from..from + digits];
            s.replace(&format!("127.0.0.1:{port}"), "127.0.0.1:[port]")
        }
        None => s.to_string(),
    };
    let mut out = String::new();
    for word in s.split_inclusive([' ', '\n', ',', ':', '(', ')']) {
        let bare = word.trim_end_matches([' ', '\n', ',', ':', '(', ')']);
        let rest = &word[bare.len()..];
        if bare.len() >= 7 && bare.chars().all(|c| c.is_ascii_hexdigit()) {
            out.push_str("[commit]");
            out.push_str(rest);
        } else {
            out.push_str(word);
        }
    }
    regex_free_times(&out)
}

/// RFC 3339 times (`2026-12-07T15:12:16Z`) replaced by `[time]`.
fn regex_free_times(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let looks = bytes.len() - i >= 20
            && bytes[i..i + 4].iter().all(u8::is_ascii_digit)
            && bytes[i + 4] == b'-'
            && bytes[i + 10] == b'T';
        if looks {
            let end = s[i..].find('Z').map_or(bytes.len(), |z| i + z + 1);
            out.push_str("[time]");
            i = end;
        } else {
            out.push(bytes[i] as char);
            i += 1;
        }
    }
    out
}

const WAVES: &str = r#"  wave "canary" {
    tenants      = ["t-001", "t-002"]
    max_parallel = 1
    bake         = "2s"
  }
  wave "tenth" {
    percent      = 10
    max_parallel = 5
    bake         = "2s"
    max_failures = "1%"
  }
  wave "rest" {
    max_parallel = 20
  }
"#;

#[test]
fn a_template_change_goes_out_in_waves_and_a_failing_canary_halts_it() {
    let repo = fleet(200, WAVES);
    repo.apply();
    assert_eq!(on(&repo, "ok"), 200);
    repo.assert_plan_empty();

    // The new template breaks the app's config.
    repo.write("templates/files/app.conf.tera", "mode = broken\n");
    commit(&repo, "app.conf v2");
    let plan = repo.run(&["plan"]);
    let shown = text(&plan.stdout);
    assert!(
        shown.contains("canary (2 tenants) · then tenth (20) · then rest (178)"),
        "{shown}"
    );
    assert_eq!(
        shown.matches("will be updated in place").count(),
        2,
        "{shown}"
    );

    // The first canary fails its smoke test: the rollout halts, the second canary is not
    // started, and nobody else is touched.
    let out = repo.run(&["apply", "--auto-approve"]);
    assert!(!out.status.success());
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(
        said.contains("rollout r1 halted at wave 1 of 3 (canary)"),
        "{said}"
    );
    let confs = confs(&repo);
    assert_eq!(confs["t-001"], "mode = broken");
    assert_eq!(on(&repo, "ok"), 199, "only the failed canary changed");
    let status = text(&repo.run(&["rollout", "status"]).stdout);
    assert!(status.contains("Rollout r1: halted"), "{status}");
    assert!(
        status.contains("t-001") && status.contains("smoke_test"),
        "{status}"
    );
    insta::assert_snapshot!("rollout_halted_status", settle(&status));
    assert_eq!(
        repo.query(
            "control.sqlite",
            "SELECT tenant_id, payload ->> '$.rollout' FROM outbox WHERE type = 'RolloutHalted'"
        ),
        vec![vec!["".to_string(), "r1".to_string()]]
    );
    // Halted, the scheduled apply takes no tenant further, and says why.
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(plan.contains("wait: the rollout halted"), "{plan}");
    assert!(plan.contains("No changes."), "{plan}");
    // Drift is repaired meanwhile, from the inputs each tenant runs on.
    let lost = repo.state_dir().join("rendered/t-150/app.conf");
    std::fs::remove_file(&lost).unwrap();
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(plan.contains("+ t-150/file/app.conf"), "{plan}");
    let out = repo.run(&["apply", "--auto-approve"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&lost).unwrap(), "mode = ok\n");

    // Mended by a new commit, and resumed: the waves reached take the fix first.
    repo.write("templates/files/app.conf.tera", "mode = fixed\n");
    commit(&repo, "app.conf v3");
    let resumed = repo.run(&["rollout", "resume"]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    repo.apply_saying("wave 1 of 3 (canary) is done");
    assert_eq!(on(&repo, "fixed"), 2);
    assert_eq!(on(&repo, "ok"), 198);
    // Each tenant's record says which inputs it runs on.
    let shown = text(&repo.run(&["state", "show", "t-001"]).stdout);
    assert!(shown.contains("rollout r1's (wave canary)"), "{shown}");
    let shown = text(&repo.run(&["state", "show", "t-150"]).stdout);
    assert!(shown.contains("until rollout r1 reaches wave"), "{shown}");
    // Baking: the next apply does nothing until the bake is over.
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(plan.contains("bakes until"), "{plan}");
    std::thread::sleep(std::time::Duration::from_secs(2));
    repo.apply();
    assert_eq!(on(&repo, "fixed"), 22);
    std::thread::sleep(std::time::Duration::from_secs(2));
    repo.apply_saying("rollout r1 completed");
    assert_eq!(on(&repo, "fixed"), 200);
    assert_eq!(
        repo.count(
            "control.sqlite",
            "SELECT COUNT(*) FROM outbox WHERE type = 'RolloutCompleted'"
        ),
        1
    );
    repo.assert_plan_empty();
}

/// The most attempts under way at one moment, from their recorded starts and ends (an end
/// is counted before a start at the same moment: the turn was given back first).
fn most_at_once(status: &serde_json::Value) -> usize {
    let mut edges: Vec<(String, i32)> = Vec::new();
    for part in status["tenants"].as_object().unwrap().values() {
        for a in part["attempts"].as_array().unwrap() {
            edges.push((a["started_at"].as_str().unwrap().to_string(), 1));
            let end = a["ended_at"].as_str().expect("every attempt ended");
            edges.push((end.to_string(), -1));
        }
    }
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most as usize
}

#[test]
fn a_rollout_applied_by_killed_runs_never_has_more_tenants_mid_change_than_its_limit() {
    let waves = r#"  wave "canary" {
    tenants      = ["t-00*"]
    max_parallel = 3
  }
  wave "rest" {
    max_parallel = 10
  }
"#;
    let repo = fleet(1000, waves);
    repo.apply_with(&["--parallelism", "16"]);
    repo.write("templates/files/app.conf.tera", "mode = v2\n");
    commit(&repo, "app.conf v2");
    // Killed at random points (the seed is printed, to run the same points again with
    // ROLLOUT_KILL_SEED).
    let seed: u64 = std::env::var("ROLLOUT_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64
        });
    eprintln!("ROLLOUT_KILL_SEED={seed}");
    let mut draw = seed;
    let mut next = |below: u64| {
        // A linear congruential step: points spread enough for a test, and repeatable.
        draw = draw
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (draw >> 33) % below
    };
    // The first run takes the canary wave (9 tenants); each later one takes up to 150 of
    // the rest (991) before it is killed, with 10 under way all along.
    let (lines, millis) = (next(9) as usize, next(300));
    repo.kill_apply(16, lines, std::time::Duration::from_millis(millis));
    for _ in 0..4 {
        let (lines, millis) = (next(150) as usize, next(300));
        repo.kill_apply(16, lines, std::time::Duration::from_millis(millis));
    }
    // What is left: at most the rest of a wave, then the next wave.
    let mut said = Vec::new();
    let completed = (0..4).any(|_| {
        let out = repo.apply_with(&["--parallelism", "16"]);
        said.push(text(&out.stdout) + &text(&out.stderr));
        said.last().unwrap().contains("rollout r1 completed")
    });
    assert!(
        completed,
        "the rollout did not complete in four more applies:\n{}\n{}",
        said.join("\n----\n"),
        text(&repo.run(&["rollout", "status"]).stdout)
    );
    assert_eq!(
        repo.count(
            "control.sqlite",
            "SELECT COUNT(*) FROM outbox WHERE type = 'RolloutCompleted'"
        ),
        1
    );
    assert_eq!(on(&repo, "v2"), 1000);
    let status: serde_json::Value =
        serde_json::from_slice(&repo.run(&["rollout", "status", "--json"]).stdout).unwrap();
    assert_eq!(status["rollout"]["status"], "completed");
    let parts = status["tenants"].as_object().unwrap();
    assert_eq!(parts.len(), 1000, "every tenant's attempts are recorded");
    let attempts: usize = parts
        .values()
        .map(|p| p["attempts"].as_array().unwrap().len())
        .sum();
    assert!(attempts >= 1000);
    // Kills landed with tenants mid-change: the next run closed their attempts.
    let abandoned = parts
        .values()
        .flat_map(|p| p["attempts"].as_array().unwrap())
        .filter(|a| a["outcome"] == "abandoned")
        .count();
    assert!(abandoned > 0, "no kill landed mid-change");
    // The canary wave's limit is 3 and the rest's 10: never more at once, and the rest's
    // limit was reached (the runs had 16 turns).
    let most = most_at_once(&status);
    assert!((4..=10).contains(&most), "{most} at once");
    let canary = serde_json::json!({
        "tenants": parts
            .iter()
            .filter(|(slug, _)| slug.starts_with("t-00"))
            .map(|(s, p)| (s.clone(), p.clone()))
            .collect::<serde_json::Map<_, _>>()
    });
    assert!(most_at_once(&canary) <= 3);
    repo.assert_plan_empty();
}

#[test]
fn a_change_to_one_plan_file_goes_out_as_that_plan_says() {
    let repo = fleet(5, WAVES);
    repo.apply();
    let growth = std::fs::read_to_string(repo.path().join("plans/growth.hcl")).unwrap();
    let tier_waves = "\nrollout {\n  wave \"first\" {\n    tenants = [\"t-004\"]\n  }\n  wave \"others\" {}\n}\n";
    repo.write(
        "plans/growth.hcl",
        &format!(
            "{}{tier_waves}",
            growth.replace("custom_domains = false", "custom_domains = true")
        ),
    );
    commit(&repo, "growth gets sso, in its own waves");
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("first (1 tenant) · then others (4)"),
        "{plan}"
    );
    assert!(plan.contains("# t-004 will be updated in place"), "{plan}");
    assert_eq!(
        plan.matches("will be updated in place").count(),
        1,
        "{plan}"
    );
    // A wave block that does not read as one is named by file, line and field.
    repo.write(
        "plans/growth.hcl",
        &format!("{growth}\nrollout {{\n  wave \"first\" {{\n    max_parallel = 0\n  }}\n}}\n"),
    );
    let out = repo.run(&["validate"]);
    assert!(!out.status.success());
    let said = text(&out.stderr) + &text(&out.stdout);
    assert!(said.contains("plans/growth.hcl"), "{said}");
    assert!(said.contains("rollout.wave.first.max_parallel"), "{said}");
}

#[test]
fn a_pull_requests_plan_shows_the_waves_and_runs_of_some_tenants_never_take_a_wave_further() {
    let waves = "  wave \"canary\" {\n    tenants = [\"t-001\"]\n  }\n  wave \"rest\" {}\n";
    let repo = fleet(4, waves);
    repo.apply();
    git(&repo, &["branch", "-M", "main"]);
    git(&repo, &["checkout", "-qb", "pr"]);
    repo.write("templates/files/app.conf.tera", "mode = broken\n");
    commit(&repo, "app.conf v2");
    // The pull request's plan: the waves the merge would start, and the canary's diff alone.
    let plan = text(
        &repo
            .run(&["plan", "--rev", "HEAD", "--changed-since", "main"])
            .stdout,
    );
    assert!(plan.contains("canary (1 tenant) · then rest (3)"), "{plan}");
    assert!(plan.contains("# t-001 will be updated in place"), "{plan}");
    assert_eq!(
        plan.matches("will be updated in place").count(),
        1,
        "{plan}"
    );
    // Merged. A run of named tenants does not start the rollout, nor take a tenant further.
    git(&repo, &["checkout", "-q", "main"]);
    git(&repo, &["merge", "-q", "--ff-only", "pr"]);
    let before = confs(&repo);
    let out = repo.apply_with(&["--tenant", "t-001", "--tenant", "t-002"]);
    assert!(
        text(&out.stdout).contains("the next plan of the whole fleet starts a rollout"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(confs(&repo), before);
    // The whole fleet's apply starts it: the canary fails, and the rollout halts.
    assert!(!repo.run(&["apply", "--auto-approve"]).status.success());
    let plan = text(&repo.run(&["plan", "--tenant", "t-001"]).stdout);
    assert!(
        plan.contains("1 tenant of the waves reached waits"),
        "{plan}"
    );
    // Resumed unmended, it halts again: each halt is an event of its own.
    assert!(repo.run(&["rollout", "resume"]).status.success());
    assert!(!repo.run(&["apply", "--auto-approve"]).status.success());
    assert_eq!(
        repo.count(
            "control.sqlite",
            "SELECT COUNT(*) FROM outbox WHERE type = 'RolloutHalted'"
        ),
        2
    );
    assert_eq!(on(&repo, "ok"), 3);
    // Called off: the canary goes back to the old template.
    assert!(repo.run(&["rollout", "abort"]).status.success());
    repo.apply();
    assert_eq!(on(&repo, "ok"), 4);
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(plan.contains("rollout r1 was aborted"), "{plan}");
    repo.assert_plan_empty();
}

#[test]
fn a_wave_takes_the_tenants_its_labels_name() {
    let waves = "  wave \"ring-0\" {\n    labels = { ring = \"0\" }\n  }\n  wave \"rest\" {}\n";
    let repo = fleet(4, waves);
    repo.write(
        "tenants/t-003.yaml",
        "slug: t-003\nname: t-003\nplan: growth\nowner:\n  email: o@t-003.example\nregion: eu-west-1\nlabels:\n  ring: \"0\"\n",
    );
    commit(&repo, "t-003 is ring 0");
    repo.apply();
    repo.write("templates/files/app.conf.tera", "mode = v2\n");
    commit(&repo, "app.conf v2");
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(plan.contains("ring-0 (1 tenant) · then rest (3)"), "{plan}");
    assert!(plan.contains("# t-003 will be updated in place"), "{plan}");
    assert_eq!(
        plan.matches("will be updated in place").count(),
        1,
        "{plan}"
    );
    repo.apply();
    assert_eq!(confs(&repo)["t-003"], "mode = v2");
    assert_eq!(on(&repo, "ok"), 3);
    // Its wave done and baked (none is set), the next apply takes the rest and completes.
    repo.apply_saying("rollout r1 completed");
    assert_eq!(on(&repo, "v2"), 4);
    repo.assert_plan_empty();
}

#[test]
fn a_failure_under_the_halt_rule_holds_the_wave_until_it_is_mended() {
    let waves = "  wave \"canary\" {\n    tenants = [\"t-001\", \"t-002\"]\n    max_failures = 1\n  }\n  wave \"rest\" {}\n";
    let repo = fleet(4, waves);
    repo.apply();
    // t-002's app is down, whatever its config says.
    let down = repo.state_dir().join("down");
    std::fs::create_dir_all(&down).unwrap();
    std::fs::write(down.join("t-002"), "").unwrap();
    repo.write("templates/files/app.conf.tera", "mode = v2\n");
    commit(&repo, "app.conf v2");
    let out = repo.run(&["apply", "--auto-approve"]);
    assert!(!out.status.success());
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(!said.contains("halted"), "{said}");
    assert!(said.contains("1 failed"), "{said}");
    // The wave waits for it: the rest are not taken on.
    assert_eq!(on(&repo, "ok"), 2);
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("wave 1 of 2 (canary): 1 tenant to apply"),
        "{plan}"
    );
    // Its app back, its smoke tests pass, and the wave is done.
    std::fs::remove_file(down.join("t-002")).unwrap();
    repo.apply_saying("wave 1 of 2 (canary) is done");
    repo.apply_saying("rollout r1 completed");
    assert_eq!(on(&repo, "v2"), 4);
    repo.assert_plan_empty();
}

#[test]
fn a_rollout_refuses_uncommitted_shared_inputs_and_a_repo_outside_git_changing_nothing() {
    let repo = fleet(3, "  wave \"all\" {}\n");
    repo.apply();
    let before = repo.fingerprint();
    repo.write("templates/files/app.conf.tera", "mode = v2\n");
    for command in [&["plan"][..], &["apply", "--auto-approve"]] {
        let out = repo.run(command);
        assert_eq!(out.status.code(), Some(1), "{command:?}");
        let said = text(&out.stderr);
        assert!(
            said.contains("shared inputs are not committed: templates/files/app.conf.tera"),
            "{said}"
        );
        assert!(said.contains("hint: "), "{said}");
    }
    assert_eq!(repo.fingerprint(), before, "a refused run wrote something");
    // The same repo without its git history: a rollout has no commits to go between.
    std::fs::remove_dir_all(repo.path().join(".git")).unwrap();
    let out = repo.run(&["plan"]);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stderr);
    assert!(said.contains("this tenant repo has no commit"), "{said}");
    assert_eq!(repo.fingerprint(), before, "a refused run wrote something");
}

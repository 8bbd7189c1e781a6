//! The CI recipes under examples/ci: every tenant-reconcile command they run is run here,
//! in a git repository shaped like theirs (a pull request branch, then main after merge).

use std::path::Path;

use crate::git::{committed_example, git};
use crate::support::{committed, project_root, text};

const SUBCOMMANDS: &[&str] = &["validate", "plan", "apply", "show", "state", "force-unlock"];

/// Each `tenant-reconcile …` command in a recipe, as arguments, with the CI variables
/// replaced by what they stand for in the test repository.
fn commands(file: &Path) -> Vec<Vec<String>> {
    let source = std::fs::read_to_string(file).unwrap();
    let mut out = Vec::new();
    for line in source.lines() {
        let line = line.trim_start();
        if line.starts_with('#') || line.starts_with("name:") {
            continue;
        }
        for (i, _) in line.match_indices("tenant-reconcile ") {
            let rest = &line[i + "tenant-reconcile ".len()..];
            // Up to a redirection or the next shell command.
            let end = rest.find(['>', ';', '|', '&']).unwrap_or(rest.len());
            let args: Vec<String> = rest[..end]
                .split_whitespace()
                .map(|a| {
                    a.trim_matches('"')
                        .replace("origin/$GITHUB_BASE_REF", "main")
                        .replace("origin/$CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "main")
                        .replace("$GITHUB_SHA", "HEAD")
                        .replace("$CI_COMMIT_SHA", "HEAD")
                })
                .collect();
            if args
                .first()
                .is_some_and(|a| SUBCOMMANDS.contains(&a.as_str()))
            {
                out.push(args);
            }
        }
    }
    out
}

#[test]
fn every_command_of_the_ci_recipes_runs() {
    let (_copy, recipes) = committed("examples/ci");
    let files = [
        recipes.join("github/tenant-plan.yml"),
        recipes.join("github/tenant-apply.yml"),
        recipes.join("github/tenant-drift.yml"),
        recipes.join("gitlab/.gitlab-ci.yml"),
    ];
    // Each file is YAML the CI system accepts (as far as can be told here).
    for f in &files {
        let source = std::fs::read_to_string(f).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&source)
            .unwrap_or_else(|e| panic!("{} is not YAML: {e}", f.display()));
        if f.ends_with(".gitlab-ci.yml") {
            assert!(
                doc["default"].get("variables").is_none(),
                "GitLab refuses `variables` under `default`"
            );
        } else {
            assert!(
                doc.get("jobs").is_some() && doc.get("on").is_some(),
                "{}",
                f.display()
            );
        }
    }
    let all: Vec<(String, Vec<String>)> = files
        .iter()
        .flat_map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            commands(f).into_iter().map(move |c| (name.clone(), c))
        })
        .collect();
    // Each recipe plans, applies or checks drift: a recipe the parser no longer reads
    // would make this test pass for nothing.
    for expected in [
        "--changed-since",
        "tenant-plan.json",
        "--refresh-only",
        "--require-clean",
    ] {
        assert!(
            all.iter().any(|(_, c)| c.iter().any(|a| a == expected)),
            "no recipe command uses {expected}: {all:?}"
        );
    }

    let repo = committed_example();
    repo.apply();
    // The pull request: a branch that raises a plan's API calls.
    git(&repo, &["checkout", "-qb", "feature"]);
    let growth = std::fs::read_to_string(repo.path().join("plans/growth.hcl")).unwrap();
    repo.write(
        "plans/growth.hcl",
        &growth.replace(
            "api_calls_per_month = 1000000",
            "api_calls_per_month = 2000000",
        ),
    );
    git(&repo, &["commit", "-qam", "more API calls on growth"]);
    let run = |recipe: &str, args: &[String]| {
        let out = repo.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            matches!(out.status.code(), Some(0 | 2)),
            "{recipe}: tenant-reconcile {}\n{}\n{}",
            args.join(" "),
            text(&out.stdout),
            text(&out.stderr)
        );
        out
    };
    for (recipe, args) in all
        .iter()
        .filter(|(_, c)| c.iter().any(|a| a == "--changed-since"))
    {
        let out = run(recipe, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{recipe}: the pull request has changes"
        );
    }
    // Merged: apply and the drift run, as main's pipelines do.
    git(&repo, &["checkout", "-q", "main"]);
    git(
        &repo,
        &["merge", "-q", "--no-ff", "-m", "merge feature", "feature"],
    );
    for (recipe, args) in all
        .iter()
        .filter(|(_, c)| !c.iter().any(|a| a == "--changed-since"))
    {
        run(recipe, args);
    }
    repo.assert_plan_empty();
}

/// The plan of a pull request runs what the pull request brings (templates, plan files),
/// so its job is not given the master key: plan works without it, and only apply needs it.
#[test]
fn the_plan_jobs_are_not_given_the_master_key() {
    let (_copy, recipes) = committed("examples/ci");
    let github = std::fs::read_to_string(recipes.join("github/tenant-plan.yml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&github).unwrap();
    let env = &doc["jobs"]["plan"]["env"];
    assert!(env.get("DATABASE_URL").is_some(), "{env:?}");
    assert!(
        env.get("TENANT_RECONCILE_MASTER_KEY").is_none(),
        "the GitHub plan job is given the master key: {env:?}"
    );
    let apply = std::fs::read_to_string(recipes.join("github/tenant-apply.yml")).unwrap();
    assert!(
        apply.contains("TENANT_RECONCILE_MASTER_KEY"),
        "apply needs it"
    );

    let gitlab = std::fs::read_to_string(recipes.join("gitlab/.gitlab-ci.yml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&gitlab).unwrap();
    let script: Vec<&str> = doc["plan"]["script"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    let unset = script
        .iter()
        .position(|l| l.starts_with("unset TENANT_RECONCILE_MASTER_KEY"));
    let first = script.iter().position(|l| l.contains("tenant-reconcile "));
    assert!(
        matches!((unset, first), (Some(u), Some(f)) if u < f),
        "the GitLab plan job unsets the master key before it runs anything: {script:?}"
    );
}

/// The install line every recipe shares.
fn install_line(file: &Path) -> String {
    let source = std::fs::read_to_string(file).unwrap();
    source
        .lines()
        .find_map(|l| {
            let l = l
                .trim_start()
                .trim_start_matches("- ")
                .trim_start_matches("run: ");
            l.starts_with("cargo install").then(|| l.to_string())
        })
        .unwrap_or_else(|| panic!("{} installs nothing", file.display()))
}

#[test]
fn the_recipes_install_line_installs_this_repository() {
    let (_copy, recipes) = committed("examples/ci");
    let lines: Vec<String> = [
        "github/tenant-plan.yml",
        "github/tenant-apply.yml",
        "github/tenant-drift.yml",
        "github/tenant-apply-shards.yml",
        "github/tenant-apply-claims.yml",
        "gitlab/.gitlab-ci.yml",
    ]
    .iter()
    .map(|f| install_line(&recipes.join(f)))
    .collect();
    assert!(lines.iter().all(|l| l == &lines[0]), "{lines:?}");
    let line = &lines[0];
    assert!(
        line.contains("--git \"$TENANT_RECONCILE_GIT\" --tag \"$TENANT_RECONCILE_VERSION\""),
        "{line}"
    );

    // The line as it runs in CI, against a clone of this repository with a release tag, as a
    // debug build. Its intermediate files go to the shared build folder (`build-dir`), so it
    // reuses the dependencies this test run was built with and compiles only the crate
    // itself; the binary it makes goes to a folder of its own (`--target-dir`): in the shared
    // one it would replace the binary the other tests are running with this build of HEAD.
    let dir = tempfile::TempDir::new().unwrap();
    let clone = dir.path().join("tenant-reconcile.git");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    };
    git(&[
        "clone",
        "-q",
        project_root().to_str().unwrap(),
        clone.to_str().unwrap(),
    ]);
    git(&["-C", clone.to_str().unwrap(), "tag", "v0.0.0-test"]);
    let root = dir.path().join("installed");
    let words: Vec<String> = line
        .split_whitespace()
        .map(|w| w.trim_matches('"').to_string())
        .map(|w| match w.as_str() {
            "$TENANT_RECONCILE_GIT" => format!("file://{}", clone.display()),
            "$TENANT_RECONCILE_VERSION" => "v0.0.0-test".to_string(),
            _ => w,
        })
        .collect();
    assert_eq!(&words[..2], ["cargo", "install"]);
    let shared = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| project_root().join("target"));
    let own = dir.path().join("target");
    // At the lowest priority and one job, beside tests that time what they do.
    let out = std::process::Command::new("nice")
        .args(["-n", "19", "cargo"])
        .args(&words[1..])
        .args([
            "--debug",
            "--root",
            root.to_str().unwrap(),
            "--target-dir",
            own.to_str().unwrap(),
            "--jobs",
            "1",
        ])
        .env("CARGO_BUILD_BUILD_DIR", &shared)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{line}:\n{}", text(&out.stderr));
    let version = std::process::Command::new(root.join("bin/tenant-reconcile"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        text(&version.stdout),
        format!("tenant-reconcile {}\n", env!("CARGO_PKG_VERSION"))
    );
}

/// The recipes that split an apply between runners (a GitHub matrix, a Kubernetes Indexed
/// Job): their commands, run once per runner, apply every tenant once between them.
#[test]
fn the_sharded_recipes_apply_every_tenant_between_their_runners() {
    let (_copy, recipes) = committed("examples/ci");
    let matrix = std::fs::read_to_string(recipes.join("github/tenant-apply-shards.yml")).unwrap();
    let job = std::fs::read_to_string(recipes.join("kubernetes/tenant-apply-job.yaml")).unwrap();
    for source in [&matrix, &job] {
        let _: serde_yaml::Value = serde_yaml::from_str(source).unwrap();
    }
    let command = |source: &str| -> Vec<String> {
        let dir = tempfile::TempDir::new().unwrap();
        let file = dir.path().join("recipe");
        // A shell-quoted argument ends its line in the Job's YAML list.
        let source: String = source
            .lines()
            .map(|l| l.split_once("\"]").map_or(l, |(before, _)| before))
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&file, source).unwrap();
        let found = commands(&file);
        assert_eq!(found.len(), 1, "{found:?}");
        found.into_iter().next().unwrap()
    };
    for (runners, run) in [
        (
            4,
            Box::new(|repo: &crate::support::Repo, k: usize| {
                let args = command(&matrix.replace("${{ matrix.shard }}", &k.to_string()));
                repo.cmd().args(&args).output().unwrap()
            }) as Box<dyn Fn(&crate::support::Repo, usize) -> std::process::Output>,
        ),
        (
            4,
            Box::new(|repo: &crate::support::Repo, k: usize| {
                repo.cmd()
                    .args(command(&job))
                    .env("JOB_COMPLETION_INDEX", (k - 1).to_string())
                    .env("JOB_COMPLETIONS", "4")
                    .output()
                    .unwrap()
            }),
        ),
    ] {
        let repo = committed_example();
        for k in 1..=runners {
            let out = run(&repo, k);
            assert!(out.status.success(), "runner {k}: {}", text(&out.stderr));
        }
        repo.assert_plan_empty();
    }
}

/// The recipe of runners claiming tenants from one saved plan: its plan job (without the
/// master key) once, then its apply command by four runners at once, apply every tenant.
#[test]
fn the_claiming_recipe_applies_every_tenant_between_its_runners() {
    let (_copy, recipes) = committed("examples/ci");
    let file = recipes.join("github/tenant-apply-claims.yml");
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let plan_env = &doc["jobs"]["plan"]["env"];
    assert!(
        plan_env.get("TENANT_RECONCILE_MASTER_KEY").is_none(),
        "the plan job is given the master key: {plan_env:?}"
    );
    let found = commands(&file);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[1].contains(&"--claim".to_string()), "{found:?}");
    let repo = committed_example();
    // The state written once already, as the recipe says it must be.
    let out = repo.run(&["apply", "--auto-approve", "--tenant", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = repo.cmd().args(&found[0]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let runners: Vec<std::process::Child> = (0..4)
        .map(|_| {
            repo.process()
                .args(&found[1])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut applied = 0;
    for runner in runners {
        let out = runner.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("The plan: 3 tenants, 3 applied"),
            "{stdout}"
        );
        applied += stdout
            .lines()
            .find_map(|l| l.strip_prefix("This runner applied "))
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap();
    }
    assert_eq!(applied, 3, "each tenant applied by one runner");
    repo.assert_plan_empty();
}

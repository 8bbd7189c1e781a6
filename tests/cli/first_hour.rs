//! A platform engineer's first hour: `init`, `new-tenant`, the schema an editor checks tenant
//! files with (checked here by an independent validator, check-jsonschema), completions and
//! the man page, running from a subfolder, and what the rough edges now say.

use std::process::Command;

use crate::git::{committed_example, git};
use crate::support::{redact, text, Repo};

fn bin() -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("tenant-reconcile"));
    c.env("NO_COLOR", "1")
        .env_remove("TENANT_RECONCILE_MASTER_KEY");
    c
}

fn empty() -> Repo {
    Repo {
        dir: tempfile::TempDir::new().unwrap(),
        env: Vec::new(),
    }
}

#[test]
fn init_makes_a_repo_that_validates_and_applies_at_once() {
    let repo = empty();
    let out = bin()
        .args(["init", "acme-saas"])
        .current_dir(repo.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    insta::assert_snapshot!("init", redact(&repo, &text(&out.stdout)));
    let dir = repo.path().join("acme-saas");
    for file in [
        "tenants/example-co.yaml",
        "plans/standard.hcl",
        "templates/files/namespace.yaml.tera",
        "templates/seed.yaml.tera",
        "migrations/0001_create_projects.sql",
        "tenant-reconcile.hcl",
        ".gitignore",
        "tenant.schema.json",
    ] {
        assert!(dir.join(file).is_file(), "{file}");
    }
    let tenant = std::fs::read_to_string(dir.join("tenants/example-co.yaml")).unwrap();
    assert!(tenant.starts_with("# yaml-language-server: $schema=../tenant.schema.json\n"));

    let run = |args: &[&str]| bin().arg("-C").arg(&dir).args(args).output().unwrap();
    let out = run(&["validate"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        "Success! 1 tenant, 1 plan, 2 templates and 1 migration are valid.\n"
    );
    // What the CI recipes write in the checkout is never committed by accident.
    let ignored = std::fs::read_to_string(dir.join(".gitignore")).unwrap();
    for entry in ["/.tenant-reconcile/", "/tenant-plan.json", "/plan.md"] {
        assert!(ignored.lines().any(|l| l == entry), "{entry}:\n{ignored}");
    }
    let out = run(&["apply", "--auto-approve"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 tenant reconciled"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // A second init changes nothing.
    let before = std::fs::read_to_string(dir.join("plans/standard.hcl")).unwrap();
    let out = bin().arg("init").arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("already holds tenants, plans"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("plans/standard.hcl")).unwrap(),
        before
    );
}

#[test]
fn new_tenant_writes_a_file_validate_accepts_and_refuses_what_it_would_refuse() {
    let repo = Repo::example();
    let out = repo.run(&[
        "new-tenant",
        "hooli",
        "--plan",
        "growth",
        "--owner",
        "ops@hooli.example",
        "--region",
        "eu-west-1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "Wrote tenants/hooli.yaml; `tenant-reconcile plan` shows what it adds.\n"
    );
    let file = std::fs::read_to_string(repo.path().join("tenants/hooli.yaml")).unwrap();
    assert_eq!(
        file,
        "slug: hooli\nname: \"Hooli\"\nplan: \"growth\"\nowner:\n  email: \"ops@hooli.example\"\nregion: \"eu-west-1\"\n"
    );
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(plan.contains("# hooli will be provisioned"), "{plan}");

    // Started in a folder of tenants/, the file goes in that folder.
    std::fs::create_dir_all(repo.path().join("tenants/eu")).unwrap();
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("tenant-reconcile"))
        .current_dir(repo.path().join("tenants/eu"))
        .env("NO_COLOR", "1")
        .args([
            "new-tenant",
            "pied-piper",
            "--plan",
            "growth",
            "--owner",
            "ops@piper.example",
            "--region",
            "eu-west-1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "Wrote tenants/eu/pied-piper.yaml; `tenant-reconcile plan` shows what it adds.\n"
    );
    assert!(repo.path().join("tenants/eu/pied-piper.yaml").is_file());
    assert!(!repo.path().join("tenants/pied-piper.yaml").exists());
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(plan.contains("# pied-piper will be provisioned"), "{plan}");

    let refused = |args: &[&str], says: &str| {
        let out = repo.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(says), "{args:?}: {says} not in:\n{err}");
    };
    let base = [
        "--plan",
        "growth",
        "--owner",
        "o@x.example",
        "--region",
        "eu-west-1",
    ];
    refused(
        &[&["new-tenant", "Bad_Slug"][..], &base].concat(),
        "is not a tenant slug",
    );
    refused(
        &[&["new-tenant", "acme"][..], &base].concat(),
        "the slug acme is taken by tenants/acme.yaml",
    );
    refused(
        &[
            "new-tenant",
            "newco",
            "--plan",
            "growht",
            "--owner",
            "o@x.example",
            "--region",
            "eu-west-1",
        ],
        "did you mean \"growth\"?",
    );
    refused(
        &[
            "new-tenant",
            "newco",
            "--plan",
            "growth",
            "--owner",
            "not-an-email",
            "--region",
            "eu-west-1",
        ],
        "tenants/newco.yaml",
    );
    assert!(
        !repo.path().join("tenants/newco.yaml").exists(),
        "a refused file is not left"
    );
    // Text given on the command line stays text: no YAML structure gets in.
    refused(
        &[
            "new-tenant",
            "initrode",
            "--name",
            "Initrode\nplan: enterprise",
            "--plan",
            "starter",
            "--owner",
            "o@initrode.example",
            "--region",
            "us-east-1",
        ],
        "no control characters",
    );
    assert!(!repo.path().join("tenants/initrode.yaml").exists());
    let out = repo.run(&[
        "new-tenant",
        "initrode",
        "--name",
        "Initrode\", plan: \"enterprise",
        "--plan",
        "starter",
        "--owner",
        "o@initrode.example",
        "--region",
        "us-east-1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let show = text(&repo.run(&["plan", "--tenant", "initrode"]).stdout);
    assert!(show.contains("+ plan      = \"starter\""), "{show}");
}

/// check-jsonschema from the test virtualenv, over `files`, against `schema`: its exit code
/// and what it said.
fn check_jsonschema(schema: &std::path::Path, files: &[std::path::PathBuf]) -> (i32, String) {
    let python = std::env::var("TENANT_RECONCILE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "the schema tests need the test virtualenv with check-jsonschema: run ./scripts/test"
        )
    });
    let out = Command::new(python)
        .args(["-m", "check_jsonschema", "--schemafile"])
        .arg(schema)
        .args(files)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout) + &text(&out.stderr),
    )
}

#[test]
fn the_tenant_schema_accepts_the_example_and_refuses_what_validate_refuses() {
    let repo = Repo::example();
    let out = repo.run(&["schema", "tenant"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let schema = repo.path().join("tenant.schema.json");
    std::fs::write(&schema, &out.stdout).unwrap();
    let examples: Vec<_> = ["acme", "globex", "initech", "umbrella-labs"]
        .iter()
        .map(|s| repo.path().join(format!("tenants/{s}.yaml")))
        .collect();
    let (code, said) = check_jsonschema(&schema, &examples);
    assert_eq!(
        code, 0,
        "the example does not validate against its schema:\n{said}"
    );

    let base = "slug: newco\nname: Newco\nplan: growth\nowner:\n  email: o@newco.example\nregion: eu-west-1\n";
    for (name, file) in [
        (
            "a misspelt field",
            base.replace("plan: growth", "plann: growth"),
        ),
        (
            "an unknown plan",
            base.replace("plan: growth", "plan: platinum"),
        ),
        ("a bad slug", base.replace("slug: newco", "slug: New_Co")),
        (
            "a flag growth does not declare",
            format!("{base}features:\n  white_label: true\n"),
        ),
        (
            "a quota that is not a number",
            format!("{base}quotas:\n  seats: many\n"),
        ),
        ("an unknown status", format!("{base}status: paused\n")),
    ] {
        repo.write("tenants/newco.yaml", &file);
        let validate = repo.run(&["validate"]);
        assert_eq!(validate.status.code(), Some(1), "validate took {name}");
        let (code, said) = check_jsonschema(&schema, &[repo.path().join("tenants/newco.yaml")]);
        assert_ne!(code, 0, "the schema took {name}:\n{said}");
    }
    let out = repo.run(&["schema", "config"]);
    assert!(out.status.success());
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(config["properties"]["targets"].is_object(), "{config}");
}

#[test]
fn completions_and_the_man_page_come_from_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = bin().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = text(&out.stdout);
        for word in ["new-tenant", "plan", "apply", "detailed-exitcode"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let out = bin().arg("man").output().unwrap();
    let page = text(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH tenant-reconcile"),
        "{page}"
    );
    assert!(page.contains("new\\-tenant"), "{page}");
}

#[test]
fn the_readme_install_lines_work_on_a_fresh_home() {
    let readme = std::fs::read_to_string(crate::support::project_root().join("README.md")).unwrap();
    let section = readme.split("\n## Installing\n").nth(1).unwrap();
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    // Everything after the install itself, with the binary this test run built.
    let script: String = block
        .lines()
        .filter(|l| !l.starts_with("cargo install"))
        .map(|l| format!("{l}\n"))
        .collect();
    let home = tempfile::TempDir::new().unwrap();
    let bin_dir = assert_cmd::cargo::cargo_bin("tenant-reconcile")
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("bash")
        .args(["--norc", "--noprofile", "-e", "-c", &script])
        .env("HOME", home.path())
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}\n{}", text(&out.stderr));
    let completion = home
        .path()
        .join(".local/share/bash-completion/completions/tenant-reconcile");
    assert!(std::fs::read_to_string(completion)
        .unwrap()
        .contains("_tenant__reconcile"));
    // The tool's page, and every page it refers to.
    let pages = home.path().join(".local/share/man/man1");
    let main = std::fs::read_to_string(pages.join("tenant-reconcile.1")).unwrap();
    assert!(main.contains(".TH"));
    let referred: Vec<&str> = main
        .split("tenant\\-reconcile\\-")
        .skip(1)
        .filter_map(|rest| rest.split_once("(1)").map(|(name, _)| name))
        .filter(|name| !name.contains(' '))
        .collect();
    assert!(referred.contains(&"plan"), "{main}");
    for name in referred {
        let file = pages.join(format!("tenant-reconcile-{}.1", name.replace("\\-", "-")));
        assert!(
            file.is_file(),
            "the page refers to {} which is not there",
            file.display()
        );
    }
}

/// What bash completes after `words` (the last one being completed), with the script
/// `completions bash` prints sourced as a shell's completion setup sources it.
fn bash_completes(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let line = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={}\nCOMP_LINE='{}'\nCOMP_POINT=${{#COMP_LINE}}\n_tenant__reconcile tenant-reconcile '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" "),
        words.len() - 1,
        words.join(" "),
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let out = std::process::Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &line])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn bash_completes_the_flags_of_every_subcommand() {
    let dir = tempfile::TempDir::new().unwrap();
    let script = dir.path().join("tenant-reconcile.bash");
    let out = bin().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    std::fs::write(&script, &out.stdout).unwrap();
    let help = text(&bin().arg("--help").output().unwrap().stdout);
    let commands: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() > 15, "{commands:?}");
    for command in &commands {
        let got = bash_completes(&script, &["tenant-reconcile", command, "--"]);
        assert!(
            got.iter().any(|w| w == "--help"),
            "`tenant-reconcile {command} --` completes {got:?}"
        );
    }
    let got = bash_completes(&script, &["tenant-reconcile", "plan", "--"]);
    for flag in [
        "--detailed-exitcode",
        "--out",
        "--changed-since",
        "--tenant",
    ] {
        assert!(got.iter().any(|w| w == flag), "plan lacks {flag}: {got:?}");
    }
    let got = bash_completes(&script, &["tenant-reconcile", "events", "deliver", "--"]);
    assert!(got.iter().any(|w| w == "--follow"), "{got:?}");
}

#[test]
fn run_from_a_subfolder_the_repo_root_is_found_as_git_finds_its_own() {
    let repo = committed_example();
    repo.apply();
    let out = bin()
        .args(["plan", "--detailed-exitcode"])
        .current_dir(repo.path().join("tenants"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("No changes."));
}

#[test]
fn what_people_read_says_it_in_their_words() {
    let repo = committed_example();
    // A misspelt field: named once, with the one meant.
    repo.write(
        "tenants/newco.yaml",
        "slug: newco\nname: Newco\nplann: growth\nowner:\n  email: o@newco.example\nregion: eu-west-1\n",
    );
    let typo = text(&repo.run(&["validate"]).stderr);
    // A quota that is not a number, in words.
    repo.write(
        "tenants/newco.yaml",
        "slug: newco\nname: Newco\nplan: growth\nowner:\n  email: o@newco.example\nregion: eu-west-1\nquotas:\n  seats: many\n",
    );
    let number = text(&repo.run(&["validate"]).stderr);
    // A quota the plan does not declare, close to one it does.
    repo.write(
        "tenants/newco.yaml",
        "slug: newco\nname: Newco\nplan: growth\nowner:\n  email: o@newco.example\nregion: eu-west-1\nquotas:\n  seat: 3\n",
    );
    let quota = text(&repo.run(&["validate"]).stderr);
    repo.remove("tenants/newco.yaml");
    // terraform's spelling of a flag.
    let out = repo.run(&["plan", "-out=tenants.tfplan"]);
    let flag = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!(
        "rough_edges_input",
        format!(
            "{typo}\n{number}\n{quota}\n{}",
            flag.lines().last().unwrap_or_default()
        )
    );
    assert!(flag.contains("`--out tenants.tfplan`"), "{flag}");

    // One tenant applied: singulars.
    let out = repo.run(&["apply", "--auto-approve", "--tenant", "globex"]);
    let progress = text(&out.stderr);
    assert!(
        progress.contains("globex: done (") && !progress.contains("(1 steps)"),
        "{progress}"
    );
    let drift = text(
        &repo
            .run(&["plan", "--refresh-only", "--tenant", "globex"])
            .stdout,
    );
    assert_eq!(
        drift,
        "No drift: the live resources of 1 tenant match the recorded state.\n"
    );
    let out = repo.run(&["plan", "--changed-since", "HEAD"]);
    assert!(
        text(&out.stdout).contains("No changes. The tenants the changed inputs reach match their files; other tenants were not planned."),
        "{}",
        text(&out.stdout)
    );

    // A suspended tenant's login says it is refused.
    repo.apply();
    let globex = std::fs::read_to_string(repo.path().join("tenants/globex.yaml")).unwrap();
    repo.write(
        "tenants/globex.yaml",
        &format!("{globex}status: suspended\n"),
    );
    repo.apply();
    let out = repo.run(&["credentials", "globex"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stderr),
        "note: globex is suspended: its login is refused until it is resumed (its file's status: active, then apply)\n"
    );

    // Without refresh a rendered file's change says why it shows no diff.
    let file = std::fs::read_to_string(repo.path().join("tenants/acme.yaml")).unwrap();
    repo.write(
        "tenants/acme.yaml",
        &file.replace("team: emea", "team: apac"),
    );
    let plan = text(
        &repo
            .run(&["plan", "--no-refresh", "--tenant", "acme"])
            .stdout,
    );
    assert!(
        plan.contains(
            "# the state keeps only the file's digest; a plan with refresh shows the diff"
        ),
        "{plan}"
    );
    let plan = text(&repo.run(&["plan", "--tenant", "acme"]).stdout);
    assert!(
        plan.contains("-    team: \"emea\"") || plan.contains("-    team: emea"),
        "{plan}"
    );
}

#[test]
fn many_uncommitted_files_are_counted_by_folder() {
    let repo = committed_example();
    for i in 0..20 {
        repo.write(
            &format!("tenants/bulk-{i:02}.yaml"),
            &format!("slug: bulk-{i:02}\nname: Bulk {i}\nplan: starter\nowner:\n  email: o{i}@bulk.example\nregion: eu-west-1\n"),
        );
    }
    let out = repo.run(&["apply", "--auto-approve"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let warning: String = text(&out.stderr)
        .lines()
        .skip_while(|l| !l.starts_with("warning: 20 input files"))
        .take(4)
        .map(|l| format!("{l}\n"))
        .collect();
    let warning = warning
        .split(" which does not hold them")
        .next()
        .unwrap()
        .to_string()
        + &warning
            .lines()
            .skip(1)
            .map(|l| format!("\n{l}"))
            .collect::<String>();
    // The commit is new on every run.
    let warning = match warning.find("record commit ") {
        Some(i) => {
            let at = i + "record commit ".len();
            format!("{}[COMMIT]{}", &warning[..at], &warning[at + 12..])
        }
        None => warning,
    };
    insta::assert_snapshot!("uncommitted_grouped", warning);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "bulk"]);
    repo.assert_plan_empty();
}

#[test]
fn the_missing_files_rule_is_said_exactly() {
    let repo = Repo::example();
    repo.apply();
    repo.remove("tenants/acme.yaml");
    // One of four (25%) is allowed: one missing file always is.
    let out = repo.run(&["plan"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    repo.remove("tenants/globex.yaml");
    let out = repo.run(&["plan"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("2 of 4 recorded tenants (50%) have no file any more; a plan is refused when more than one tenant file is missing and they are more than 20% of the recorded tenants (safety.max_missing_share)"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn validate_notices_a_stale_tenant_schema() {
    let repo = empty();
    let out = bin()
        .args(["init", "shop"])
        .current_dir(repo.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = repo.path().join("shop");
    let run = |args: &[&str]| bin().arg("-C").arg(&dir).args(args).output().unwrap();
    let out = run(&["validate"]);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        text(&out.stderr)
    );
    // A plan added: the schema written by init does not know it.
    let standard = std::fs::read_to_string(dir.join("plans/standard.hcl")).unwrap();
    std::fs::write(dir.join("plans/premium.hcl"), standard).unwrap();
    let out = run(&["validate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("tenant.schema.json is stale")
            && err.contains("`tenant-reconcile schema tenant > tenant.schema.json`"),
        "{err}"
    );
    let schema = run(&["schema", "tenant"]);
    std::fs::write(dir.join("tenant.schema.json"), &schema.stdout).unwrap();
    let out = run(&["validate"]);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        text(&out.stderr)
    );
}

//! Smoke tests gating ACTIVE, `check`, and hooks (billing retried apart), on the local
//! target, through the real binary. Postgres's own checks are in `pipeline_pg.rs`.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use crate::support::{request_path, respond, text, Repo};

/// An HTTP server of the test's own on a free loopback port: it answers every request with
/// the status it is set to, and keeps the paths it was asked for.
struct Health {
    port: u16,
    status: Arc<AtomicU16>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Health {
    fn start(status: u16) -> Health {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let code = Arc::new(AtomicU16::new(status));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (c, p) = (code.clone(), paths.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if let Some(path) = request_path(&stream) {
                    p.lock().unwrap().push(path);
                }
                respond(stream, c.load(Ordering::SeqCst));
            }
        });
        Health {
            port,
            status: code,
            paths,
        }
    }
}

/// The example with only acme, on the growth plan, so each test reads one tenant's story.
fn one_tenant() -> Repo {
    let repo = Repo::example();
    for slug in ["globex", "initech", "umbrella-labs"] {
        repo.remove(&format!("tenants/{slug}.yaml"));
    }
    repo
}

fn add_check(repo: &Repo, block: &str) {
    let path = repo.path().join("plans/growth.hcl");
    let mut plan = std::fs::read_to_string(&path).unwrap();
    plan.push('\n');
    plan.push_str(block);
    std::fs::write(path, plan).unwrap();
}

fn lifecycle(repo: &Repo, slug: &str) -> (String, String) {
    let row = repo.query(
        "control.sqlite",
        &format!("SELECT lifecycle, coalesce(step, '-') FROM tenants WHERE slug = '{slug}'"),
    );
    (row[0][0].clone(), row[0][1].clone())
}

#[test]
fn a_failing_http_check_keeps_a_new_tenant_provisioning_until_it_passes() {
    let server = Health::start(503);
    let repo = one_tenant();
    add_check(
        &repo,
        &format!(
            "check \"app\" {{\n  http = \"http://127.0.0.1:{}/{{{{ tenant.slug }}}}/healthz\"\n  timeout = \"2s\"\n}}\n",
            server.port
        ),
    );
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains(
            "> acme/smoke_test  # before it becomes active: the built-in checks, and app (http)"
        ),
        "{plan}"
    );

    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("acme/smoke_test: smoke tests failed: app: http://127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("answered 503, expected 200"), "{err}");
    assert_eq!(server.paths.lock().unwrap()[0], "/acme/healthz");
    // Provisioned, and held at the gate: the registry says where.
    assert_eq!(
        lifecycle(&repo, "acme"),
        ("provisioning".into(), "smoke_test".into())
    );
    assert_eq!(
        repo.count(
            "control.sqlite",
            "SELECT count(*) FROM outbox WHERE type = 'TenantProvisioningFailed' \
             AND json_extract(payload, '$.detail.failed_checks[0]') = 'app'"
        ),
        1
    );
    assert_eq!(
        repo.count(
            "control.sqlite",
            "SELECT count(*) FROM outbox WHERE type = 'TenantProvisioned'"
        ),
        0
    );
    let show = text(&repo.run(&["show"]).stdout);
    assert!(show.contains("UNHEALTHY: app"), "{show}");
    assert!(show.contains("FAILED at smoke_test"), "{show}");

    // The next plan has only the move to active, the login it opens and the checks:
    // nothing is provisioned again.
    let data = repo.fingerprint();
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("Plan: 0 to add, 2 to change, 0 to destroy. Then smoke tests for 1 tenant.")
            && plan.contains("~ acme/role  # its login opens once it is active, after its smoke tests and gating hooks\n      ~ login = false → true\n"),
        "{plan}"
    );
    assert!(plan.contains("~ acme/registry"), "{plan}");
    assert!(
        plan.contains("> acme/smoke_test  # before it becomes active; last time smoke tests failed: app: http://127.0.0.1:"),
        "{plan}"
    );
    server.status.store(200, Ordering::SeqCst);
    let out = repo.apply();
    assert!(text(&out.stdout).contains("Apply complete!"));
    assert_eq!(lifecycle(&repo, "acme"), ("active".into(), "-".into()));
    // Only the control plane moved: the tenant's data and files are as they were.
    let after = repo.fingerprint();
    for (file, digest) in &data {
        if file.starts_with("data/")
            || file.starts_with("rendered/")
            || file.starts_with("buckets/")
        {
            assert_eq!(after.get(file), Some(digest), "{file} changed");
        }
    }
    assert_eq!(
        repo.count(
            "control.sqlite",
            "SELECT count(*) FROM outbox WHERE type = 'TenantProvisioned'"
        ),
        1
    );
    repo.assert_plan_empty();
    let show = text(&repo.run(&["show"]).stdout);
    assert!(show.contains("healthy at "), "{show}");
}

#[test]
fn an_sql_check_returning_false_gates_and_an_advisory_one_does_not() {
    let repo = one_tenant();
    add_check(
        &repo,
        "check \"many_projects\" {\n  sql = \"select count(*) > 100 from projects\"\n}\ncheck \"nice_to_have\" {\n  sql = \"select 1 = 0\"\n  advisory = true\n}\n",
    );
    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("many_projects: returned false"), "{err}");
    assert_eq!(lifecycle(&repo, "acme").0, "provisioning");

    // The check is mended in the plan file: the next apply runs the checks and activates.
    let path = repo.path().join("plans/growth.hcl");
    let mended = std::fs::read_to_string(&path)
        .unwrap()
        .replace("count(*) > 100", "count(*) > 0");
    std::fs::write(&path, mended).unwrap();
    repo.apply();
    assert_eq!(lifecycle(&repo, "acme").0, "active");
    // The state keeps what failed (the advisory check) and counts what passed.
    let state = text(&repo.run(&["state", "show", "acme"]).stdout);
    assert!(state.contains("passed; failed:"), "{state}");
    assert!(state.contains("nice_to_have  advisory"), "{state}");
    assert!(!state.contains("many_projects"), "{state}");
    let out = repo.run(&["check", "acme", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "an advisory failure is healthy");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = report[0]["checks"].as_array().unwrap();
    let verdict = |name: &str| {
        let c = checks.iter().find(|c| c["name"] == name).unwrap();
        (
            c["ok"].as_bool().unwrap(),
            c["advisory"].as_bool().unwrap_or(false),
        )
    };
    assert_eq!(verdict("many_projects"), (true, false));
    assert_eq!(verdict("nice_to_have"), (false, true));
    repo.assert_plan_empty();
}

#[test]
fn check_reports_health_and_exits_by_it() {
    let repo = Repo::example();
    repo.apply();
    let out = repo.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("3 tenants healthy."), "{table}");
    // The suspended tenant is not checked, and the table says so.
    assert!(table.contains("\n  umbrella-labs: suspended\n"), "{table}");

    // Someone deletes a rendered file and a bucket folder by hand.
    std::fs::remove_file(repo.state_dir().join("rendered/acme/namespace.yaml")).unwrap();
    std::fs::remove_dir_all(repo.state_dir().join("buckets/globex")).unwrap();
    let out = repo.run(&["check", "--format", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_slug = |slug: &str| {
        report
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["slug"] == slug)
            .unwrap()
            .clone()
    };
    assert_eq!(by_slug("acme")["healthy"], false);
    assert_eq!(by_slug("initech")["healthy"], true);
    let files = by_slug("acme")["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "files")
        .unwrap()
        .clone();
    assert_eq!(files["message"], "namespace.yaml is missing");
    let show = text(&repo.run(&["show"]).stdout);
    assert!(show.contains("UNHEALTHY: files"), "{show}");
    assert!(show.contains("UNHEALTHY: bucket"), "{show}");

    let out = repo.run(&["check", "acme"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).contains("1 of 1 tenant unhealthy: acme."));
    // A suspended tenant asked for by name is not checked, and that is no failure.
    let out = repo.run(&["check", "umbrella-labs"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("  umbrella-labs: suspended\n"),
        "{}",
        text(&out.stdout)
    );

    // Apply repairs what was removed; the tenants are healthy again.
    repo.apply();
    repo.assert_plan_empty();
    assert_eq!(repo.run(&["check"]).status.code(), Some(0));
}

#[test]
fn check_names_the_tenants_it_did_not_check_and_fails_for_one_stuck_on_its_way() {
    let repo = Repo::example();
    // The starter tier's tenant (initech) fails its smoke test and stays provisioning.
    let path = repo.path().join("plans/starter.hcl");
    let mut plan = std::fs::read_to_string(&path).unwrap();
    plan.push_str("\ncheck \"warm\" {\n  sql = \"select 1 = 0\"\n}\n");
    std::fs::write(&path, plan).unwrap();
    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(lifecycle(&repo, "initech").0, "provisioning");

    let out = repo.run(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let tail: String = table
        .lines()
        .skip_while(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    insta::assert_snapshot!("check_not_checked", tail);

    let out = repo.run(&["check", "--format", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let initech = report
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["slug"] == "initech")
        .unwrap();
    assert_eq!(initech["checked"], false);
    assert_eq!(initech["healthy"], false);
    assert_eq!(initech["reason"], "provisioning, failed at smoke_test");

    // Mended, applied: every tenant that should be active is, and the check passes.
    let mended = std::fs::read_to_string(&path)
        .unwrap()
        .replace("select 1 = 0", "select 1 = 1");
    std::fs::write(&path, mended).unwrap();
    repo.apply();
    repo.assert_plan_empty();
    let out = repo.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("\n3 tenants healthy.\n"));
}

/// The example's billing hook with `retry_after` and `timeout` of the test's choosing.
fn billing(repo: &Repo, retry_after: &str, extra: &str) {
    let config = std::fs::read_to_string(repo.path().join("tenant-reconcile.hcl"))
        .unwrap()
        .replace(
            "retry_after = \"1m\"",
            &format!("retry_after = \"{retry_after}\"\n  {extra}"),
        );
    repo.write("tenant-reconcile.hcl", &config);
}

fn ledger(repo: &Repo) -> Vec<Vec<String>> {
    std::fs::read_to_string(repo.state_dir().join("billing.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(' ').map(str::to_string).collect())
        .collect()
}

#[test]
fn billing_failing_twice_leaves_the_tenant_active_and_is_retried_on_one_key() {
    let mut repo = Repo::example_with_hooks();
    for slug in ["globex", "initech", "umbrella-labs"] {
        repo.remove(&format!("tenants/{slug}.yaml"));
    }
    billing(&repo, "0s", "");
    repo.env.push(("BILLING_FAIL_FIRST".into(), "2".into()));

    for attempt in 1..=2 {
        let out = repo.apply();
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("Warning: acme: hook billing (provisioned) failed, try {attempt}: exited with status 1; its stderr ends: billing is unavailable (try {attempt})")),
            "{err}"
        );
        // Active throughout: billing is reconciled apart.
        assert_eq!(lifecycle(&repo, "acme").0, "active");
        let plan = text(&repo.run(&["plan"]).stdout);
        assert!(
            plan.contains(&format!(
                "~ acme/hook/billing  # provisioned: failed {attempt} time{}, tried again now",
                if attempt == 1 { "" } else { "s" }
            )),
            "{plan}"
        );
        assert!(plan.contains("Then 1 hook run."), "{plan}");
    }
    let out = repo.apply();
    assert!(
        !text(&out.stderr).contains("Warning"),
        "{}",
        text(&out.stderr)
    );
    repo.assert_plan_empty();

    // Three tries, one key, one customer.
    let lines = ledger(&repo);
    let tries: Vec<&Vec<String>> = lines.iter().filter(|l| l[0] == "try").collect();
    assert_eq!(tries.len(), 3, "{lines:?}");
    assert!(
        tries
            .iter()
            .all(|l| l[2] == tries[0][2] && l[3] == "provisioned"),
        "{lines:?}"
    );
    assert_eq!(lines.iter().filter(|l| l[0] == "done").count(), 1);

    // Its output is on the tenant: state, registry, and what templates see.
    let id = repo.query(
        "control.sqlite",
        "SELECT tenant_id FROM tenants WHERE slug = 'acme'",
    )[0][0]
        .clone();
    let customer = format!("cus_{}", &id.replace('-', "")[..12]);
    let state = text(&repo.run(&["state", "show", "acme"]).stdout);
    assert!(
        state.contains(&format!("billing_customer_id = \"{customer}\"")),
        "{state}"
    );
    assert!(
        state.contains("hook billing done (provisioned) at"),
        "{state}"
    );
    assert_eq!(
        repo.query(
            "control.sqlite",
            "SELECT json_extract(outputs, '$.billing_customer_id') FROM tenants"
        )[0][0],
        customer
    );
}

#[test]
fn a_hook_still_waiting_is_shown_and_is_no_change() {
    let mut repo = Repo::example_with_hooks();
    for slug in ["globex", "initech", "umbrella-labs"] {
        repo.remove(&format!("tenants/{slug}.yaml"));
    }
    billing(&repo, "1h", "");
    repo.env.push(("BILLING_FAIL_FIRST".into(), "1".into()));
    repo.apply();
    let out = repo.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let plan = text(&out.stdout);
    assert!(
        plan.contains("# acme/hook/billing provisioned: failed 1 time, next try after "),
        "{plan}"
    );
    // Nothing runs before its time.
    repo.apply();
    assert_eq!(ledger(&repo).iter().filter(|l| l[0] == "try").count(), 1);
    let show = text(&repo.run(&["show"]).stdout);
    assert!(
        show.contains("acme/hook/billing (provisioned): failed 1 try"),
        "{show}"
    );
}

#[test]
fn a_gating_hook_that_fails_stops_its_step() {
    let repo = one_tenant();
    repo.write(
        "hooks/crm.sh",
        "#!/bin/sh\ncat > /dev/null\nif [ -f ./crm-down ]; then echo 'crm refused' >&2; exit 3; fi\necho '{\"outputs\": {\"crm_id\": \"crm-7\"}}'\n",
    );
    make_executable(&repo.path().join("hooks/crm.sh"));
    repo.write("crm-down", "");
    repo.write(
        "tenant-reconcile.hcl",
        "hook \"crm\" {\n  on = [\"provisioned\"]\n  command = [\"./hooks/crm.sh\"]\n  gating = true\n}\n",
    );
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("> acme/hook/crm  # provisioned: runs before the tenant moves on; a failure stops it there"),
        "{plan}"
    );
    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("acme/hook/crm: hook crm (provisioned) failed, try 1: exited with status 3; its stderr ends: crm refused"),
        "{err}"
    );
    assert_eq!(lifecycle(&repo, "acme").0, "provisioning");
    repo.remove("crm-down");
    repo.apply();
    assert_eq!(lifecycle(&repo, "acme").0, "active");
    assert!(text(&repo.run(&["state", "show", "acme"]).stdout).contains("crm_id = \"crm-7\""));
    repo.assert_plan_empty();
}

fn make_executable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn killed_during_a_hook_the_rerun_gives_it_the_same_key() {
    let mut repo = Repo::example_with_hooks();
    for slug in ["globex", "initech", "umbrella-labs"] {
        repo.remove(&format!("tenants/{slug}.yaml"));
    }
    billing(&repo, "0s", "");
    repo.env.push(("BILLING_SLEEP".into(), "2".into()));
    let mut child = repo.spawn_apply(1);
    let started = std::time::Instant::now();
    while ledger(&repo).is_empty() {
        assert!(started.elapsed().as_secs() < 60, "the hook never ran");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: nothing after the hook's start is recorded
    child.wait().unwrap();
    // The hook finishes on its own meanwhile, as a real one would after its caller died.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    repo.env.retain(|(k, _)| k != "BILLING_SLEEP");
    repo.apply();
    repo.assert_plan_empty();
    let lines = ledger(&repo);
    let tries: Vec<&Vec<String>> = lines.iter().filter(|l| l[0] == "try").collect();
    assert_eq!(tries.len(), 2, "{lines:?}");
    assert_eq!(
        tries[0][2], tries[1][2],
        "the rerun used another key: {lines:?}"
    );
    assert_eq!(
        lines.iter().filter(|l| l[0] == "done").count(),
        1,
        "{lines:?}"
    );
    assert_eq!(lifecycle(&repo, "acme").0, "active");
}

#[test]
fn a_hook_gets_tenant_text_on_stdin_only_and_a_clean_environment() {
    let mut repo = one_tenant();
    let hostile = "Acme\\\"; touch pwned; echo \\\"$(id)";
    let tenant = std::fs::read_to_string(repo.path().join("tenants/acme.yaml"))
        .unwrap()
        .replace("name: Acme Corporation", &format!("name: \"{hostile}\""));
    repo.write("tenants/acme.yaml", &tenant);
    repo.write(
        "hooks/dump.sh",
        "#!/bin/sh\nprintf '%s\\n' \"$@\" > args.txt\ncat > stdin.json\nenv > env.txt\n",
    );
    make_executable(&repo.path().join("hooks/dump.sh"));
    repo.write(
        "tenant-reconcile.hcl",
        "hook \"dump\" {\n  on = [\"provisioned\"]\n  command = [\"./hooks/dump.sh\", \"--fixed\"]\n  env = { REGION_API = \"https://example.invalid\" }\n}\n",
    );
    repo.env
        .push(("SECRET_OF_THE_RUNNER".into(), "hunter2".into()));
    repo.apply();
    assert!(!repo.path().join("pwned").exists());
    let args = std::fs::read_to_string(repo.path().join("args.txt")).unwrap();
    assert_eq!(args, "--fixed\n");
    let stdin: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo.path().join("stdin.json")).unwrap())
            .unwrap();
    assert_eq!(stdin["tenant"]["name"], "Acme\"; touch pwned; echo \"$(id)");
    assert_eq!(stdin["moment"], "provisioned");
    assert_eq!(stdin["hook"], "dump");
    let key = stdin["idempotency_key"].as_str().unwrap().to_string();
    let env = std::fs::read_to_string(repo.path().join("env.txt")).unwrap();
    assert!(
        env.contains(&format!("TENANT_RECONCILE_IDEMPOTENCY_KEY={key}")),
        "{env}"
    );
    assert!(env.contains("TENANT_RECONCILE_TENANT_SLUG=acme"), "{env}");
    assert!(env.contains("REGION_API=https://example.invalid"), "{env}");
    assert!(!env.contains("hunter2"), "{env}");
    repo.assert_plan_empty();
}

#[test]
fn a_hook_that_hangs_is_killed_at_its_timeout() {
    let repo = one_tenant();
    repo.write(
        "hooks/hang.sh",
        "#!/bin/sh\nsleep 300 &\necho $! > hang-child.pid\nwait\n",
    );
    make_executable(&repo.path().join("hooks/hang.sh"));
    repo.write(
        "tenant-reconcile.hcl",
        "hook \"hang\" {\n  on = [\"provisioned\"]\n  command = [\"./hooks/hang.sh\"]\n  timeout = \"1s\"\n  retry_after = \"1h\"\n}\n",
    );
    let out = repo.apply();
    let err = text(&out.stderr);
    assert!(
        err.contains("hook hang (provisioned) failed, try 1: was killed after its timeout of 1s"),
        "{err}"
    );
    assert_eq!(lifecycle(&repo, "acme").0, "active");
    repo.assert_plan_empty();
    // Its child went with it: the `sleep 300` it started is dead (gone, or a zombie left for
    // init to reap). SIGKILL is delivered as the kernel schedules it, so it is given a moment.
    let pid = std::fs::read_to_string(repo.path().join("hang-child.pid")).unwrap();
    let stat = format!("/proc/{}/stat", pid.trim());
    let started = std::time::Instant::now();
    let dead = loop {
        let state = std::fs::read_to_string(&stat).ok();
        // The state is the field after the command's closing parenthesis.
        let running = state
            .as_deref()
            .and_then(|s| s.rsplit(") ").next()?.chars().next());
        if !matches!(running, Some(c) if c != 'Z' && c != 'X') {
            break true;
        }
        if started.elapsed().as_secs() >= 10 {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(dead, "the hook's child {} is left running", pid.trim());
}

#[test]
fn bad_check_and_hook_blocks_name_file_line_and_field() {
    let repo = one_tenant();
    add_check(
        &repo,
        "check \"app\" {\n  http = \"file:///etc/passwd\"\n}\n",
    );
    repo.write(
        "tenant-reconcile.hcl",
        "\n\nhook \"billing\" {\n  on = [\"created\"]\n  command = [\"./hooks/billing.sh\"]\n}\n",
    );
    let before = repo.fingerprint();
    let out = repo.run(&["plan"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "tenant-reconcile.hcl:4:3: field `hook.billing.on`: \"created\" is not a moment"
        ),
        "{err}"
    );
    assert!(err.contains("plans/growth.hcl:"), "{err}");
    assert!(
        err.contains(
            "field `check.app.http`: \"file:///etc/passwd\" is not an http:// or https:// URL"
        ),
        "{err}"
    );
    assert_eq!(repo.fingerprint(), before);
}

#[test]
fn a_hooks_output_reaches_templates_and_its_change_is_an_update() {
    let repo = Repo::example_with_hooks();
    for slug in ["globex", "initech", "umbrella-labs"] {
        repo.remove(&format!("tenants/{slug}.yaml"));
    }
    repo.write(
        "templates/files/billing.txt.tera",
        "customer: {{ tenant.outputs.billing_customer_id | default(value=\"(not yet)\") }}\n",
    );
    repo.apply();
    let rendered = repo.state_dir().join("rendered/acme/billing.txt");
    assert_eq!(
        std::fs::read_to_string(&rendered).unwrap(),
        "customer: (not yet)\n"
    );
    // The hook gave its output after the files were rendered: the next plan renders it.
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(plan.contains("~ acme/file/billing.txt"), "{plan}");
    assert!(plan.contains("+customer: cus_"), "{plan}");
    repo.apply();
    assert!(std::fs::read_to_string(&rendered)
        .unwrap()
        .starts_with("customer: cus_"));
    repo.assert_plan_empty();
}

/// Latencies vary from run to run, in their digits too: each `   12 ms` is `  N ms`; the rest
/// of what people read is snapshotted.
fn steady(s: &str) -> String {
    let mut out = String::new();
    for line in s.lines() {
        let mut line = line.to_string();
        if let Some(at) = line.find(" ms ") {
            let head = line[..at].trim_end_matches(|c: char| c.is_ascii_digit());
            let digits = at - head.len();
            if digits > 0 {
                line = format!("{}  N{}", head.trim_end(), &line[at..]);
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[test]
fn plan_and_check_read_as_people_read_them() {
    let repo = Repo::example_with_hooks();
    let out = repo.run(&["plan", "--tenant", "globex"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    let steps: String = plan
        .lines()
        .filter(|l| l.starts_with("  >") || l.starts_with("  #") || l.starts_with("Plan:"))
        .map(|l| format!("{l}\n"))
        .collect();
    insta::assert_snapshot!("plan_steps", steps);
    repo.apply();
    let out = repo.run(&["check"]);
    assert_eq!(out.status.code(), Some(0));
    insta::assert_snapshot!("check_table", steady(&text(&out.stdout)));
}

/// A hook script that appends its moment and key to `<name>.log` and fails while
/// `<name>-down` exists.
fn logging_hook(repo: &Repo, name: &str) {
    repo.write(
        &format!("hooks/{name}.sh"),
        &format!(
            "#!/bin/sh\ncat > /dev/null\necho \"$TENANT_RECONCILE_MOMENT $TENANT_RECONCILE_IDEMPOTENCY_KEY\" >> {name}.log\nif [ -f ./{name}-down ]; then echo \"{name} refused, token $TOKEN\" >&2; exit 1; fi\n"
        ),
    );
    make_executable(&repo.path().join(format!("hooks/{name}.sh")));
}

fn log_lines(repo: &Repo, name: &str) -> Vec<String> {
    std::fs::read_to_string(repo.path().join(format!("{name}.log")))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_gating_hook_that_succeeded_is_not_run_again_when_a_later_step_fails() {
    let repo = one_tenant();
    logging_hook(&repo, "crm");
    logging_hook(&repo, "erp");
    repo.write("erp-down", "");
    repo.write(
        "tenant-reconcile.hcl",
        "hook \"crm\" {\n  on = [\"provisioned\"]\n  command = [\"./hooks/crm.sh\"]\n  gating = true\n}\nhook \"erp\" {\n  on = [\"provisioned\"]\n  command = [\"./hooks/erp.sh\"]\n  gating = true\n}\n",
    );
    assert_eq!(
        repo.run(&["apply", "--auto-approve"]).status.code(),
        Some(1)
    );
    assert_eq!(lifecycle(&repo, "acme").0, "provisioning");
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        !plan.contains("acme/hook/crm"),
        "crm is done and must not run again:\n{plan}"
    );
    assert!(
        plan.contains("~ acme/hook/erp  # provisioned: failed 1 time, tried again now"),
        "{plan}"
    );
    repo.remove("erp-down");
    repo.apply();
    assert_eq!(lifecycle(&repo, "acme").0, "active");
    assert_eq!(
        log_lines(&repo, "crm").len(),
        1,
        "{:?}",
        log_lines(&repo, "crm")
    );
    let erp = log_lines(&repo, "erp");
    assert_eq!(erp.len(), 2);
    assert_eq!(erp[0], erp[1], "erp's tries used one key");
    repo.assert_plan_empty();
}

#[test]
fn a_run_owed_for_a_move_called_off_is_dropped_and_a_hooks_tokens_are_not_kept() {
    let mut repo = one_tenant();
    logging_hook(&repo, "erp");
    repo.write(
        "tenant-reconcile.hcl",
        "hook \"erp\" {\n  on = [\"suspended\"]\n  command = [\"./hooks/erp.sh\"]\n  gating = true\n  pass_env = [\"TOKEN\"]\n}\n",
    );
    repo.env.push(("TOKEN".into(), "tok-s3cr3t-value".into()));
    repo.apply();
    let tenant = repo.path().join("tenants/acme.yaml");
    let active = std::fs::read_to_string(&tenant).unwrap();
    std::fs::write(&tenant, format!("{active}status: suspended\n")).unwrap();
    repo.write("erp-down", "");
    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("erp refused, token [redacted]"), "{err}");
    assert_eq!(lifecycle(&repo, "acme").0, "active");
    assert!(
        !repo.state_text().contains("tok-s3cr3t-value"),
        "the state holds the token"
    );
    // The suspension is called off: what it revoked is given back, and nothing is owed
    // for it any more.
    std::fs::write(&tenant, active).unwrap();
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(plan.contains("~ acme/role"), "{plan}");
    assert!(!plan.contains("hook/erp"), "{plan}");
    repo.apply();
    repo.assert_plan_empty();
    assert_eq!(log_lines(&repo, "erp").len(), 1);
    assert!(!text(&repo.run(&["show"]).stdout).contains("Hooks owed"));
}

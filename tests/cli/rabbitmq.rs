//! The RabbitMQ broker target through the real binary, checked from outside: the management
//! API (curl, as the administrator) and a tenant's application (pika, with the tenant's own
//! credentials as `credentials SLUG` prints them). Vhosts and users are global on the
//! server, so every test names them with a prefix of its own and removes them at the end.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::offboarding::offboard;
use crate::purge::no_hold;
use crate::support::{project_root, text, Repo};

pub const API_ENV: &str = "TENANT_RECONCILE_TEST_RABBITMQ_API";

pub struct Broker {
    pub api: String,
    /// Every vhost and user of this test starts with it.
    pub prefix: String,
    python: String,
}

impl Broker {
    pub fn new() -> Broker {
        let api = std::env::var(API_ENV).unwrap_or_else(|_| {
            panic!(
                "the broker tests need RabbitMQ's management API and {API_ENV} naming it.\n  \
                 ./scripts/test enables the plugin itself; by hand:\n  \
                 rabbitmq-plugins enable rabbitmq_management\n  \
                 {API_ENV}=http://127.0.0.1:15672 cargo test"
            )
        });
        let python = std::env::var("TENANT_RECONCILE_TEST_PYTHON").unwrap_or_else(|_| {
            panic!("the broker tests need the test virtualenv with pika: run ./scripts/test, or set TENANT_RECONCILE_TEST_PYTHON")
        });
        let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let broker = Broker {
            api,
            prefix: format!("trt{id}_"),
            python,
        };
        let (status, _) = broker.call("GET", "overview", None);
        assert_eq!(
            status, 200,
            "RabbitMQ's management API does not answer at {}",
            broker.api
        );
        broker
    }

    /// One management API call as the administrator: its status and its JSON (or null).
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut c = Command::new("curl");
        c.args([
            "-s",
            "-u",
            "guest:guest",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ])
        .args(["-H", "content-type: application/json"]);
        if let Some(b) = body {
            c.args(["-d", &b.to_string()]);
        }
        let out = c.arg(format!("{}/api/{path}", self.api)).output().unwrap();
        let out = text(&out.stdout);
        let (body, status) = out.rsplit_once('\n').unwrap();
        (
            status.trim().parse().unwrap(),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }

    pub fn name(&self, slug: &str) -> String {
        format!("{}{slug}", self.prefix)
    }

    /// The example with vhosts on this broker, growth's plan given broker quotas.
    pub fn repo(&self) -> Repo {
        let mut repo = Repo::example();
        repo.write("tenant-reconcile.hcl", &self.config(""));
        let growth = std::fs::read_to_string(repo.path().join("plans/growth.hcl")).unwrap();
        repo.write(
            "plans/growth.hcl",
            &growth.replace(
                "quotas = {\n",
                "quotas = {\n  broker_connections = 5\n  broker_queues = 20\n",
            ),
        );
        repo.env = vec![
            ("RABBITMQ_API_URL".into(), self.api.clone()),
            ("RABBITMQ_API_USER".into(), "guest".into()),
            ("RABBITMQ_API_PASSWORD".into(), "guest".into()),
        ];
        repo
    }

    pub fn config(&self, extra: &str) -> String {
        format!(
            "targets {{\n  broker = \"rabbitmq\"\n}}\nrabbitmq {{\n  vhost_prefix = \"{p}\"\n  user_prefix  = \"{p}\"\n}}\n{extra}",
            p = self.prefix
        )
    }

    /// The tenant's AMQP URL, as `credentials` prints it.
    pub fn url_of(&self, repo: &Repo, slug: &str) -> String {
        let out = repo.run(&["credentials", slug]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .find(|l| l.starts_with("amqp://"))
            .unwrap_or_else(|| panic!("no AMQP URL in: {}", text(&out.stdout)))
            .to_string()
    }

    /// `amqp_tenant.py MODE URL ARGS…`: its exit code and what it printed.
    pub fn tenant(&self, mode: &str, url: &str, args: &[&str]) -> (i32, String) {
        let out = Command::new(&self.python)
            .arg(project_root().join("tests/peers/amqp_tenant.py"))
            .args([mode, url])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            text(&out.stdout) + &text(&out.stderr),
        )
    }

    fn ours<'a>(&self, list: &'a Value) -> Vec<&'a str> {
        list.as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str())
            .filter(|n| n.starts_with(&self.prefix))
            .collect()
    }

    pub fn vhosts(&self) -> Vec<String> {
        let (_, list) = self.call("GET", "vhosts?columns=name", None);
        self.ours(&list).into_iter().map(str::to_string).collect()
    }

    pub fn users(&self) -> Vec<String> {
        let (_, list) = self.call("GET", "users?columns=name", None);
        self.ours(&list).into_iter().map(str::to_string).collect()
    }

    /// This test's vhosts that some node does not run, as the API says.
    pub fn not_running(&self) -> Vec<String> {
        let (_, list) = self.call("GET", "vhosts?columns=name,cluster_state", None);
        let ours = self.ours(&list);
        list.as_array()
            .unwrap()
            .iter()
            .filter(|v| ours.contains(&v["name"].as_str().unwrap()))
            .filter(|v| {
                let states = v["cluster_state"].as_object().unwrap();
                states.is_empty() || states.values().any(|s| s != "running")
            })
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        for v in self.vhosts() {
            self.call("DELETE", &format!("vhosts/{v}"), None);
        }
        for u in self.users() {
            self.call("DELETE", &format!("users/{u}"), None);
        }
    }
}

#[test]
fn each_tenant_gets_its_own_vhost_and_user_and_is_refused_the_others() {
    let broker = Broker::new();
    let repo = broker.repo();
    repo.apply();

    let mut vhosts = broker.vhosts();
    vhosts.sort();
    assert_eq!(
        vhosts,
        ["acme", "globex", "initech", "umbrella-labs"].map(|s| broker.name(s))
    );
    let acme = broker.name("acme");
    let (_, vhost) = broker.call("GET", &format!("vhosts/{acme}"), None);
    assert!(
        vhost["description"]
            .as_str()
            .unwrap()
            .starts_with("tenant-reconcile state=default lineage="),
        "{vhost}"
    );
    // Its user may do everything in its vhost and nothing anywhere else; no management tag.
    let (_, perms) = broker.call("GET", &format!("users/{acme}/permissions"), None);
    assert_eq!(
        perms,
        json!([{"user": acme, "vhost": acme, "configure": ".*", "write": ".*", "read": ".*"}])
    );
    let (_, user) = broker.call("GET", &format!("users/{acme}"), None);
    let tags: Vec<&str> = user["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        tags.iter()
            .all(|t| t.starts_with("tenant-reconcile-password=")),
        "{tags:?}"
    );
    // Limits from growth's quotas; starter (globex) sets none.
    let (_, limits) = broker.call("GET", &format!("vhost-limits/{acme}"), None);
    assert_eq!(
        limits[0]["value"],
        json!({"max-connections": 5, "max-queues": 20})
    );
    let (_, limits) = broker.call(
        "GET",
        &format!("vhost-limits/{}", broker.name("globex")),
        None,
    );
    assert!(
        limits[0]["value"].as_object().is_none_or(|m| m.is_empty()),
        "{limits}"
    );

    // Each tenant works in its own vhost with its own login, and no two logins are alike.
    let acme_url = broker.url_of(&repo, "acme");
    let globex_url = broker.url_of(&repo, "globex");
    assert_eq!(broker.tenant("roundtrip", &acme_url, &[]).0, 0);
    assert_eq!(broker.tenant("roundtrip", &globex_url, &[]).0, 0);
    let password = |u: &str| {
        u.split(':')
            .nth(2)
            .unwrap()
            .split('@')
            .next()
            .unwrap()
            .to_string()
    };
    assert_ne!(password(&acme_url), password(&globex_url));
    // acme's login on globex's vhost is refused.
    let crossed = acme_url.replace(&format!("/{acme}"), &format!("/{}", broker.name("globex")));
    let (code, said) = broker.tenant("roundtrip", &crossed, &[]);
    assert_eq!(code, 3, "acme reached globex's vhost: {said}");
    assert!(said.contains("refused"), "{said}");

    // The password is never on the wire, nor in the state.
    assert!(!repo.state_text().contains(&password(&acme_url)));
    // Its smoke tests pass and the plan is empty.
    let check = repo.run(&["check", "acme"]);
    assert!(
        text(&check.stdout).contains("broker_isolation"),
        "{}",
        text(&check.stdout)
    );
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
    repo.assert_plan_empty();
}

#[test]
fn suspension_closes_the_connection_and_refuses_new_ones_until_resumed() {
    let broker = Broker::new();
    let repo = broker.repo();
    repo.apply();
    let url = broker.url_of(&repo, "acme");

    let mut held = Command::new(&broker.python)
        .arg(project_root().join("tests/peers/amqp_tenant.py"))
        .args(["hold", &url])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(held.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "connected");

    let file = std::fs::read_to_string(repo.path().join("tenants/acme.yaml")).unwrap();
    repo.write("tenants/acme.yaml", &format!("{file}status: suspended\n"));
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("~ permissions = \"configure=.* write=.* read=.*\" → \"none\""),
        "{plan}"
    );
    repo.apply();
    let closed = lines.next().unwrap().unwrap();
    assert!(
        closed.starts_with("closed"),
        "the open connection was not closed: {closed}"
    );
    held.wait().unwrap();
    let (code, said) = broker.tenant("roundtrip", &url, &[]);
    assert_eq!(code, 3, "a suspended tenant connected: {said}");
    let (_, perms) = broker.call(
        "GET",
        &format!("users/{}/permissions", broker.name("acme")),
        None,
    );
    assert_eq!(perms, json!([]));
    repo.assert_plan_empty();

    repo.write("tenants/acme.yaml", &file);
    repo.apply();
    assert_eq!(broker.tenant("roundtrip", &url, &[]).0, 0);
    repo.assert_plan_empty();
}

#[test]
fn drift_shows_field_by_field_and_apply_puts_it_back() {
    let broker = Broker::new();
    let repo = broker.repo();
    repo.apply();
    let url = broker.url_of(&repo, "acme");
    let (acme, globex, initech) = (
        broker.name("acme"),
        broker.name("globex"),
        broker.name("initech"),
    );

    // By hand: a new password and a management tag, a grant on another tenant's vhost, a
    // limit raised, a vhost deleted, a user deleted.
    broker.call(
        "PUT",
        &format!("users/{acme}"),
        Some(json!({"password": "by-hand", "tags": "administrator"})),
    );
    broker.call(
        "PUT",
        &format!("permissions/{globex}/{acme}"),
        Some(json!({"configure": ".*", "write": ".*", "read": ".*"})),
    );
    broker.call(
        "PUT",
        &format!("vhost-limits/{acme}/max-queues"),
        Some(json!({"value": 999})),
    );
    broker.call("DELETE", &format!("vhosts/{initech}"), None);
    broker.call("DELETE", &format!("users/{globex}"), None);

    let drift = text(&repo.run(&["plan", "--refresh-only"]).stdout);
    for line in [
        "~ max_queues           = 20 → 999",
        &format!("~ other_vhosts         = [] → [\"{globex}\"]"),
        "→ \"(changed outside tenant-reconcile)\"",
        "~ user_tags            = [] → [\"administrator\"]",
        "~ permissions = \"configure=.* write=.* read=.*\" → \"none\"",
    ] {
        assert!(drift.contains(line), "{line} not in:\n{drift}");
    }
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains(&format!("+ vhost       = \"{initech}\"")),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("+ user                 = \"{globex}\"")),
        "{plan}"
    );
    assert!(!plan.contains("forces replacement"), "{plan}");

    repo.apply();
    let (_, perms) = broker.call("GET", &format!("users/{acme}/permissions"), None);
    assert_eq!(perms.as_array().unwrap().len(), 1, "{perms}");
    let (_, limits) = broker.call("GET", &format!("vhost-limits/{acme}"), None);
    assert_eq!(limits[0]["value"]["max-queues"], json!(20));
    assert_eq!(
        broker.tenant("roundtrip", &url, &[]).0,
        0,
        "acme's own password works again"
    );
    assert_eq!(
        broker
            .tenant("roundtrip", &broker.url_of(&repo, "initech"), &[])
            .0,
        0
    );
    assert_eq!(
        broker
            .tenant("roundtrip", &broker.url_of(&repo, "globex"), &[])
            .0,
        0
    );
    repo.assert_plan_empty();
}

/// Runs `expr` (Erlang, naming `vhost`) in the broker's node through `rabbitmqctl eval`.
fn rabbitmqctl_eval(vhost: &str, expr: &str) {
    assert!(
        vhost
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "{vhost}"
    );
    let out = std::process::Command::new("rabbitmqctl")
        .args(["eval", expr])
        .output()
        .expect("rabbitmqctl (RabbitMQ's own command line, beside the server) must be installed");
    assert!(
        out.status.success(),
        "rabbitmqctl eval: {}",
        text(&out.stderr)
    );
}

/// Stops `vhost` on the node as a crash of its processes would: the vhost stays listed,
/// and refuses every connection until it is started again.
fn stop_vhost(vhost: &str) {
    rabbitmqctl_eval(
        vhost,
        &format!("rabbit_vhost_sup_sup:stop_and_delete_vhost(<<\"{vhost}\">>)."),
    );
}

/// Takes `vhost`'s default exchange away, as a run killed while the broker made the vhost
/// leaves it: listed, running, and refusing every publish.
fn half_make(vhost: &str) {
    rabbitmqctl_eval(
        vhost,
        &format!(
            "rabbit_exchange:delete(rabbit_misc:r(<<\"{vhost}\">>, exchange, <<>>), false, <<\"test\">>)."
        ),
    );
}

#[test]
fn a_vhost_whose_creation_was_cut_off_is_made_again_when_next_applied() {
    let broker = Broker::new();
    let repo = broker.repo();
    repo.apply();
    let acme = broker.name("acme");
    let url = broker.url_of(&repo, "acme");
    half_make(&acme);
    let (status, _) = broker.call("GET", &format!("exchanges/{acme}/amq.default"), None);
    assert_eq!(status, 404);
    assert_ne!(
        broker.tenant("roundtrip", &url, &[]).0,
        0,
        "nothing publishes"
    );

    // The next change that reaches the vhost finds it half made and makes it again, with
    // its permissions and limits.
    let file = std::fs::read_to_string(repo.path().join("tenants/acme.yaml")).unwrap();
    repo.write(
        "tenants/acme.yaml",
        &file.replace("  seats: 80\n", "  seats: 80\n  broker_connections: 7\n"),
    );
    let out = repo.run(&["apply", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no default exchange"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(broker.tenant("roundtrip", &url, &[]).0, 0);
    let (_, limits) = broker.call("GET", &format!("vhost-limits/{acme}"), None);
    assert_eq!(limits[0]["value"]["max-connections"], json!(7), "{limits}");
    repo.assert_plan_empty();
}

#[test]
fn a_vhost_that_is_not_running_shows_in_the_plan_and_apply_starts_it() {
    let broker = Broker::new();
    let repo = broker.repo();
    repo.apply();
    let acme = broker.name("acme");
    let url = broker.url_of(&repo, "acme");
    stop_vhost(&acme);
    let (_, row) = broker.call("GET", &format!("vhosts/{acme}"), None);
    assert_ne!(
        row["cluster_state"].as_object().unwrap().values().next(),
        Some(&json!("running")),
        "{row}"
    );
    assert_ne!(
        broker.tenant("roundtrip", &url, &[]).0,
        0,
        "a stopped vhost refuses its tenant"
    );

    let drift = text(&repo.run(&["plan", "--refresh-only"]).stdout);
    assert!(
        drift.contains("~ state = \"running\" → \"stopped on rabbit@"),
        "{drift}"
    );
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(plan.contains("→ \"running\""), "{plan}");
    assert!(!plan.contains("forces replacement"), "{plan}");

    repo.apply();
    assert_eq!(broker.not_running(), Vec::<String>::new());
    assert_eq!(broker.tenant("roundtrip", &url, &[]).0, 0);
    repo.assert_plan_empty();
}

#[test]
fn an_apply_killed_anywhere_converges_on_the_rerun() {
    let broker = Broker::new();
    let repo = broker.repo();
    for i in 0..12 {
        repo.write(
            &format!("tenants/bulk-{i:02}.yaml"),
            &format!("slug: bulk-{i:02}\nname: Bulk {i}\nplan: growth\nowner:\n  email: o{i}@bulk.example\nregion: eu-west-1\n"),
        );
    }
    for (lines, ms) in [(2, 0), (5, 30)] {
        repo.kill_apply(4, lines, std::time::Duration::from_millis(ms));
    }
    repo.apply();
    assert_eq!(broker.vhosts().len(), 16);
    assert_eq!(broker.not_running(), Vec::<String>::new());
    assert_eq!(broker.users().len(), 16);
    assert_eq!(
        broker
            .tenant("roundtrip", &broker.url_of(&repo, "bulk-07"), &[])
            .0,
        0
    );
    repo.assert_plan_empty();
}

#[test]
fn a_vhost_made_by_someone_else_is_a_conflict_until_imported() {
    let broker = Broker::new();
    let repo = broker.repo();
    let (acme, globex) = (broker.name("acme"), broker.name("globex"));
    broker.call(
        "PUT",
        &format!("vhosts/{acme}"),
        Some(json!({"description": "the payments team's"})),
    );
    // A user of globex's name, with no vhost: someone's login, not to be given a new password.
    broker.call(
        "PUT",
        &format!("users/{globex}"),
        Some(json!({"password": "theirs", "tags": ""})),
    );

    let out = repo.run(&["plan"]);
    let plan = text(&out.stdout) + &text(&out.stderr);
    assert!(plan.contains(&format!("vhost {acme}")), "{plan}");
    assert!(plan.contains("not managed by this state"), "{plan}");
    assert!(plan.contains(&format!("broker user {globex}")), "{plan}");
    let out = repo.run(&["apply", "--auto-approve"]);
    assert_ne!(out.status.code(), Some(0));
    let theirs = format!("amqp://{globex}:theirs@127.0.0.1:5672/%2F");
    // Its password still logs in (the default vhost, not its, is what is refused).
    let (_, said) = broker.tenant("roundtrip", &theirs, &[]);
    assert!(
        said.contains("NOT_ALLOWED"),
        "its password was changed: {said}"
    );
    let (_, vhost) = broker.call("GET", &format!("vhosts/{acme}"), None);
    assert_eq!(
        vhost["description"],
        json!("the payments team's"),
        "left as it was"
    );
    let (status, _) = broker.call("GET", &format!("users/{acme}"), None);
    assert_eq!(status, 404, "no user was made beside it");

    let out = repo.run(&[
        "apply",
        "--auto-approve",
        "--import",
        "acme",
        "--import",
        "globex",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (_, vhost) = broker.call("GET", &format!("vhosts/{acme}"), None);
    assert!(vhost["description"]
        .as_str()
        .unwrap()
        .starts_with("tenant-reconcile state="));
    // Imported, the user has the tenant's password, and the old one is refused.
    assert_eq!(
        broker
            .tenant("roundtrip", &broker.url_of(&repo, "globex"), &[])
            .0,
        0
    );
    let (_, said) = broker.tenant("roundtrip", &theirs, &[]);
    assert!(
        said.contains("ACCESS_REFUSED"),
        "the old password still logs in: {said}"
    );
    repo.assert_plan_empty();
}

#[test]
fn a_config_that_stops_naming_the_broker_leaves_the_vhosts_as_they_are() {
    let broker = Broker::new();
    let repo = broker.repo();
    repo.apply();
    repo.remove("tenant-reconcile.hcl");
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(plan.contains("No changes."), "{plan}");
    assert_eq!(broker.vhosts().len(), 4, "nothing was removed");
    repo.assert_plan_empty();
}

/// A purge needs every target of the tenant's resources to be able to purge. With the broker
/// named `none` after its vhost was made, the purge is put off when the plan is made, and
/// nothing of the tenant is destroyed (not its slice either, which comes first in a purge).
#[test]
fn a_purge_a_target_named_none_cannot_finish_is_put_off_at_plan_time_and_destroys_nothing() {
    let broker = Broker::new();
    let repo = broker.repo();
    no_hold(&repo);
    repo.apply();
    let acme = broker.name("acme");
    offboard(&repo, "acme");
    repo.apply();
    let slice = repo.path().join(".tenant-reconcile/data/acme.sqlite");
    assert!(slice.exists(), "exported and held, not purged yet");
    // A plan saved while the broker was named, applied after it no longer is.
    let saved = repo.path().join("purge.json");
    let out = repo.run(&["plan", "--out", saved.to_str().unwrap()]);
    assert!(
        text(&out.stdout).contains("- acme/vhost"),
        "{}",
        text(&out.stdout)
    );

    repo.remove("tenant-reconcile.hcl");
    let out = repo.run(&["apply", saved.to_str().unwrap()]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_ne!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("its vhost cannot be purged through targets.broker; nothing was done"),
        "{said}"
    );
    assert!(slice.exists(), "the saved plan's purge destroyed nothing");
    let show = text(&repo.run(&["state", "show", "acme"]).stdout);
    assert!(
        !show.contains("being purged"),
        "its purge did not begin: {show}"
    );

    let out = repo.run(&["plan"]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        said.contains("acme: its vhost cannot be purged through targets.broker; nothing is purged"),
        "{said}"
    );
    assert!(!said.contains("- acme/"), "no purge is planned: {said}");
    repo.apply();
    assert!(slice.exists(), "nothing of the tenant is destroyed");
    let (status, _) = broker.call("GET", &format!("vhosts/{acme}"), None);
    assert_eq!(status, 200, "the vhost stands");

    // Named again, the broker lets the purge run, and every resource goes.
    repo.write("tenant-reconcile.hcl", &broker.config(""));
    repo.apply();
    assert!(!slice.exists(), "the slice is purged");
    let (status, _) = broker.call("GET", &format!("vhosts/{acme}"), None);
    assert_eq!(status, 404, "the vhost is purged");
    repo.assert_plan_empty();
}

#[test]
fn bad_broker_settings_name_the_file_line_and_field_and_change_nothing() {
    let broker = Broker::new();
    let repo = broker.repo();
    repo.write(
        "tenant-reconcile.hcl",
        "targets {\n  broker = \"rabbitmq\"\n}\nrabbitmq {\n  vhost_prefix = \"t/../\"\n  amqp_url = \"amqp://admin:pw@host:5672/x\"\n}\n",
    );
    let out = repo.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("tenant-reconcile.hcl:5"), "{err}");
    assert!(err.contains("rabbitmq.vhost_prefix"), "{err}");
    assert!(err.contains("rabbitmq.amqp_url"), "{err}");
    // Without the API's variables the plan says which to set, and nothing is made.
    let mut repo = broker.repo();
    repo.env.clear();
    let out = repo.run(&["plan"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("RABBITMQ_API_URL"),
        "{}",
        text(&out.stderr)
    );
    assert!(broker.vhosts().is_empty());
}

//! The quotas slot's Redis target through the real binary, against the Redis 7 server on
//! 127.0.0.1:6379, checked from outside with `redis-cli`: as the admin, and logged in as
//! the tenant with the URL `credentials` prints. Each test uses key and user prefixes of its
//! own and removes what they name at the end.

use std::process::Command;

use crate::offboarding::offboard;
use crate::purge::no_hold;
use crate::support::{text, Repo};

const SERVER: [&str; 4] = ["-h", "127.0.0.1", "-p", "6379"];

/// A test's own names on the shared server.
pub struct Redis {
    /// Every key of this test's tenants starts with this: `trq1a2b3c4d5e:`.
    pub key_prefix: String,
    /// Every user of this test's tenants starts with this: `trq1a2b3c4d5e_`.
    pub user_prefix: String,
}

/// `redis-cli ARGS…` as the server's admin (the machine's default user): what it printed.
pub fn admin(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(SERVER)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("the Redis tests need redis-cli on the PATH: {e}"));
    assert!(
        out.status.success(),
        "redis-cli {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `redis-cli -u URL ARGS…` as a tenant: what it printed, errors included.
pub fn as_tenant(url: &str, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["--no-auth-warning", "-u", url])
        .args(args)
        .output()
        .unwrap();
    text(&out.stdout) + &text(&out.stderr)
}

impl Redis {
    pub fn new() -> Redis {
        let pong = Command::new("redis-cli").args(SERVER).arg("PING").output();
        match pong {
            Ok(out) if text(&out.stdout).trim() == "PONG" => {}
            _ => panic!(
                "the Redis tests need Redis 7 on 127.0.0.1:6379 and redis-cli: start it with `redis-server --daemonize yes`"
            ),
        }
        let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
        Redis {
            key_prefix: format!("trq{id}:"),
            user_prefix: format!("trq{id}_"),
        }
    }

    pub fn config(&self) -> String {
        format!(
            "targets {{\n  quotas = \"redis\"\n}}\nredis {{\n  url         = \"redis://127.0.0.1:6379\"\n  key_prefix  = \"{}\"\n  user_prefix = \"{}\"\n}}\n",
            self.key_prefix, self.user_prefix
        )
    }

    pub fn repo(&self) -> Repo {
        let repo = Repo::example();
        repo.write("tenant-reconcile.hcl", &self.config());
        repo
    }

    pub fn key(&self, slug: &str) -> String {
        format!("{}{slug}:limits", self.key_prefix)
    }

    pub fn user(&self, slug: &str) -> String {
        format!("{}{slug}", self.user_prefix)
    }

    /// The user's rules as `ACL LIST` writes them, or `None`.
    pub fn acl(&self, slug: &str) -> Option<String> {
        let prefix = format!("user {} ", self.user(slug));
        admin(&["ACL", "LIST"])
            .lines()
            .find(|l| l.starts_with(&prefix))
            .map(str::to_string)
    }

    /// The hash's fields and values, one `field=value` each, sorted.
    pub fn hash(&self, slug: &str) -> Vec<String> {
        let words: Vec<String> = admin(&["HGETALL", &self.key(slug)])
            .lines()
            .map(str::to_string)
            .collect();
        let mut pairs: Vec<String> = words
            .chunks(2)
            .filter(|p| p.len() == 2)
            .map(|p| format!("{}={}", p[0], p[1]))
            .collect();
        pairs.sort();
        pairs
    }

    /// This test's keys on the server.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> =
            admin(&["--scan", "--pattern", &format!("{}*", self.key_prefix)])
                .lines()
                .map(str::to_string)
                .collect();
        keys.sort();
        keys
    }

    /// The tenant's Redis URL, as `credentials` prints it.
    pub fn url_of(&self, repo: &Repo, slug: &str) -> String {
        let out = repo.run(&["credentials", slug]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .find(|l| l.starts_with("redis://"))
            .unwrap_or_else(|| panic!("no Redis URL in: {}", text(&out.stdout)))
            .to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        for line in admin(&["ACL", "LIST"]).lines() {
            if let Some(user) = line
                .strip_prefix("user ")
                .and_then(|l| l.split(' ').next())
                .filter(|u| u.starts_with(&self.user_prefix))
            {
                admin(&["ACL", "DELUSER", user]);
            }
        }
        for key in self.keys() {
            admin(&["DEL", &key]);
        }
    }
}

#[test]
fn each_tenant_gets_its_limits_and_a_login_that_reaches_only_its_own_keys() {
    let redis = Redis::new();
    let repo = redis.repo();
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains(
            "+ acme/limits\n      + channels             = []\n      + commands             = ["
        ),
        "{plan}"
    );
    assert!(
        plan.contains(&format!(
            "+ key                  = \"{}\"",
            redis.key("acme")
        )),
        "{plan}"
    );
    repo.apply();

    // acme's plan is growth: its quotas, with our mark and password record beside them.
    let hash = redis.hash("acme");
    for limit in ["api_calls_per_month=1000000", "seats=80", "storage_gb=200"] {
        assert!(hash.contains(&limit.to_string()), "{hash:?}");
    }
    assert!(
        hash.iter()
            .any(|f| f.starts_with("_managed_by=tenant-reconcile state=default lineage=")),
        "{hash:?}"
    );
    let acl = redis.acl("acme").expect("acme's user");
    assert!(acl.contains(" on "), "{acl}");
    let prefix = format!("{}acme:", redis.key_prefix);
    assert!(
        acl.contains(&format!("%R~{prefix}* resetchannels -@all")),
        "{acl}"
    );
    // umbrella-labs is suspended: its user exists, turned off.
    assert!(redis.acl("umbrella-labs").unwrap().contains(" off "));

    // As acme: its limits and its usage (counted by the quota service, as the admin) read,
    // anything else refused, its own usage counted down included.
    let url = redis.url_of(&repo, "acme");
    assert_eq!(
        as_tenant(&url, &["HGET", &redis.key("acme"), "seats"]).trim(),
        "80"
    );
    let usage = format!("{prefix}usage:api_calls");
    admin(&["INCRBY", &usage, "5"]);
    assert_eq!(as_tenant(&url, &["GET", &usage]).trim(), "5");
    for refused in [
        vec!["HGETALL", &redis.key("globex")],
        vec!["HSET", &redis.key("acme"), "seats", "5000"],
        vec!["INCRBY", &usage, "-5"],
        vec!["SET", &format!("{prefix}usage:new"), "1"],
        vec!["GET", "unrelated"],
        vec!["KEYS", "*"],
        vec!["ACL", "LIST"],
    ] {
        let out = as_tenant(&url, &refused);
        assert!(out.contains("NOPERM"), "{refused:?}: {out}");
    }
    // globex's login cannot read acme's.
    let globex = redis.url_of(&repo, "globex");
    assert!(as_tenant(&globex, &["HGET", &redis.key("acme"), "seats"]).contains("NOPERM"));
    assert_eq!(
        as_tenant(&globex, &["HGET", &redis.key("globex"), "seats"]).trim(),
        "1000"
    );
    repo.assert_plan_empty();
}

#[test]
fn a_limit_edited_by_hand_and_a_widened_user_are_put_back() {
    let redis = Redis::new();
    let repo = redis.repo();
    repo.apply();
    let key = redis.key("acme");
    admin(&["HSET", &key, "seats", "5000", "bonus", "1"]);
    admin(&["ACL", "SETUSER", &redis.user("acme"), "~*", "+set"]);
    admin(&["ACL", "SETUSER", &redis.user("initech"), "nopass"]);

    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("~ acme/limits  # changed outside tenant-reconcile"),
        "{plan}"
    );
    assert!(plan.contains("~ limits"), "{plan}");
    assert!(
        plan.contains("{\"api_calls_per_month\":1000000,\"bonus\":1,\"seats\":5000,"),
        "{plan}"
    );
    assert!(plan.contains("~*"), "{plan}");
    assert!(plan.contains("~ initech/limits"), "{plan}");
    assert!(
        plan.contains("(changed outside tenant-reconcile)"),
        "a password set by hand shows: {plan}"
    );
    repo.apply();

    let hash = redis.hash("acme");
    assert!(hash.contains(&"seats=80".to_string()), "{hash:?}");
    assert!(!hash.iter().any(|f| f.starts_with("bonus=")), "{hash:?}");
    let acl = redis.acl("acme").unwrap();
    assert!(!acl.contains(" ~* ") && !acl.contains("+set"), "{acl}");
    assert!(!redis.acl("initech").unwrap().contains("nopass"));
    // initech's own password logs in again.
    let url = redis.url_of(&repo, "initech");
    assert_eq!(as_tenant(&url, &["PING"]).trim(), "PONG");
    repo.assert_plan_empty();
}

#[test]
fn suspension_turns_the_user_off_and_resuming_turns_it_on() {
    let redis = Redis::new();
    let repo = redis.repo();
    repo.apply();
    let url = redis.url_of(&repo, "acme");
    assert_eq!(as_tenant(&url, &["PING"]).trim(), "PONG");

    let file = repo.path().join("tenants/acme.yaml");
    let active = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{active}status: suspended\n")).unwrap();
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("# acme will be suspended (active → suspended)")
            && plan.contains("~ acme/limits\n"),
        "{plan}"
    );
    repo.apply();
    assert!(redis.acl("acme").unwrap().contains(" off "));
    let out = as_tenant(&url, &["PING"]);
    assert!(out.contains("WRONGPASS") || out.contains("AUTH"), "{out}");
    repo.assert_plan_empty();

    std::fs::write(&file, active).unwrap();
    repo.apply();
    assert_eq!(as_tenant(&url, &["PING"]).trim(), "PONG");
    repo.assert_plan_empty();
}

#[test]
fn bad_redis_settings_are_refused_naming_the_line_and_field() {
    let redis = Redis::new();
    let repo = redis.repo();
    repo.write(
        "tenant-reconcile.hcl",
        "targets {\n  quotas = \"redis\"\n}\nredis {\n  url        = \"redis://admin:hunter2@127.0.0.1:6379\"\n  key_prefix = \"q*\"\n  colour     = \"blue\"\n}\n",
    );
    let out = repo.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("redis.colour"), "{err}");
    assert!(err.contains("tenant-reconcile.hcl:7"), "{err}");
    repo.write(
        "tenant-reconcile.hcl",
        "targets {\n  quotas = \"redis\"\n}\nredis {\n  url        = \"redis://admin:hunter2@127.0.0.1:6379\"\n  key_prefix = \"q*\"\n}\n",
    );
    let err = text(&repo.run(&["validate"]).stderr);
    for (field, line) in [("redis.url", 5), ("redis.key_prefix", 6)] {
        assert!(err.contains(field), "{field}: {err}");
        assert!(
            err.contains(&format!("tenant-reconcile.hcl:{line}")),
            "{err}"
        );
    }
    assert!(
        !err.contains("hunter2"),
        "the password is not repeated: {err}"
    );
    repo.write(
        "tenant-reconcile.hcl",
        "targets {\n  quotas = \"memcached\"\n}\n",
    );
    let err = text(&repo.run(&["validate"]).stderr);
    assert!(err.contains("targets.quotas"), "{err}");
    assert!(err.contains("can be: none, redis"), "{err}");
    // An empty prefix would reach the application's own keys, or the default user; a
    // database other than 0 cannot be selected by a tenant's login.
    repo.write(
        "tenant-reconcile.hcl",
        "targets {\n  quotas = \"redis\"\n}\nredis {\n  url         = \"redis://127.0.0.1:6379/3\"\n  key_prefix  = \"\"\n  user_prefix = \"\"\n}\n",
    );
    let err = text(&repo.run(&["validate"]).stderr);
    for (field, line) in [
        ("redis.url", 5),
        ("redis.key_prefix", 6),
        ("redis.user_prefix", 7),
    ] {
        assert!(err.contains(field), "{field}: {err}");
        assert!(
            err.contains(&format!("tenant-reconcile.hcl:{line}")),
            "{err}"
        );
    }
    assert!(err.contains("database other than 0"), "{err}");
    assert!(redis.keys().is_empty(), "nothing was written");
}

#[test]
fn an_apply_killed_anywhere_converges_on_the_rerun() {
    let redis = Redis::new();
    let repo = redis.repo();
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
    let users: Vec<String> = admin(&["ACL", "LIST"])
        .lines()
        .filter(|l| l.starts_with(&format!("user {}", redis.user_prefix)))
        .map(str::to_string)
        .collect();
    assert_eq!(users.len(), 16, "{users:?}");
    let limits = redis.keys();
    assert_eq!(limits.len(), 16, "one hash each, no other key: {limits:?}");
    let url = redis.url_of(&repo, "bulk-07");
    assert_eq!(
        as_tenant(&url, &["HGET", &redis.key("bulk-07"), "seats"]).trim(),
        "50"
    );
    repo.assert_plan_empty();
}

#[test]
fn turned_on_for_a_fleet_that_exists_each_tenant_is_smoke_tested_through_its_new_login() {
    let redis = Redis::new();
    let repo = Repo::example();
    repo.apply();
    repo.write("tenant-reconcile.hcl", &redis.config());
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("> acme/smoke_test  # what it is used through is built anew (limits)"),
        "{plan}"
    );
    // The smoke tests log in as each active tenant; one that failed would fail the apply.
    repo.apply();
    let url = redis.url_of(&repo, "acme");
    assert_eq!(
        as_tenant(&url, &["HGET", &redis.key("acme"), "seats"]).trim(),
        "80"
    );
    repo.assert_plan_empty();
}

#[test]
fn a_config_that_stops_naming_redis_leaves_the_limits_and_users_as_they_are() {
    let redis = Redis::new();
    let repo = redis.repo();
    repo.apply();
    repo.remove("tenant-reconcile.hcl");
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(plan.contains("No changes."), "{plan}");
    assert_eq!(redis.keys().len(), 4, "nothing was removed");
    assert!(redis.acl("acme").is_some());
    repo.assert_plan_empty();
}

#[test]
fn a_deleted_user_is_made_again_and_a_new_key_prefix_takes_the_counters_along() {
    let redis = Redis::new();
    let repo = redis.repo();
    repo.apply();
    admin(&["ACL", "DELUSER", &redis.user("globex")]);
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("~ globex/limits  # changed outside tenant-reconcile")
            && !plan.contains("-/+"),
        "an update, not another user: {plan}"
    );
    repo.apply();
    assert!(redis.acl("globex").unwrap().contains(" on "));
    repo.assert_plan_empty();

    // The quota service's count under the old prefix goes along to the new one.
    let old_usage = format!("{}acme:usage:api_calls", redis.key_prefix);
    admin(&["INCRBY", &old_usage, "7"]);
    let moved = Redis {
        key_prefix: format!("{}v2:", redis.key_prefix),
        user_prefix: redis.user_prefix.clone(),
    };
    repo.write("tenant-reconcile.hcl", &moved.config());
    let out = repo.run(&["apply", "--auto-approve"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let new_usage = format!("{}acme:usage:api_calls", moved.key_prefix);
    assert_eq!(admin(&["GET", &new_usage]).trim(), "7");
    assert_eq!(admin(&["EXISTS", &old_usage]).trim(), "0");
    assert_eq!(
        admin(&["EXISTS", &redis.key("acme")]).trim(),
        "0",
        "the old hash is gone"
    );
    let url = moved.url_of(&repo, "acme");
    assert_eq!(as_tenant(&url, &["GET", &new_usage]).trim(), "7");
    repo.assert_plan_empty();
    // `moved` names keys under this test's prefix: `redis` removes them all.
    std::mem::forget(moved);
}

#[test]
fn an_offboarding_waits_while_the_slot_holding_some_of_the_tenant_is_set_to_none() {
    let redis = Redis::new();
    let repo = redis.repo();
    no_hold(&repo);
    repo.apply();
    admin(&[
        "INCRBY",
        &format!("{}acme:usage:api_calls", redis.key_prefix),
        "9",
    ]);
    // The config stops naming Redis, then acme leaves: its export would leave its counts out,
    // and the purge, put off until Redis is named again, would then destroy them unexported.
    repo.remove("tenant-reconcile.hcl");
    offboard(&repo, "acme");
    let out = repo.run(&["plan"]);
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(
        said.contains("acme: its limits cannot be exported through targets.quotas"),
        "{said}"
    );
    repo.apply();
    assert!(!repo.path().join(".tenant-reconcile/exports/acme").exists());
    assert!(
        redis.acl("acme").unwrap().contains(" on "),
        "nothing was revoked"
    );

    // Named again: revoked, exported with its counts, then purged.
    repo.write("tenant-reconcile.hcl", &redis.config());
    repo.apply();
    let export = repo.path().join(".tenant-reconcile/exports/acme");
    let exported = std::fs::read_to_string(export.join("quotas/redis.json")).unwrap();
    assert!(exported.contains("\"9\""), "{exported}");
    repo.apply();
    assert!(redis.acl("acme").is_none());
    repo.assert_plan_empty();
}

//! One scenario every implementation of a slot goes through, against its real server, with
//! what it has of its own said by its [`Implementation`]: create → empty plan → drift seen
//! and repaired → a resource someone else made refused → imported → exported → purged and
//! audited → empty plan. A target's own tests keep only what is particular to it.

use std::path::Path;

use serde_json::json;

use crate::dns::Zone;
use crate::moto::S3;
use crate::offboarding::{offboard, verified};
use crate::pg::Pg;
use crate::purge::no_hold;
use crate::rabbitmq::Broker;
use crate::redis::{admin, as_tenant, Redis};
use crate::support::{text, Repo};

/// The example's tenants; then the scenario adds one that meets someone else's resource, and
/// one beside it that must go ahead all the same.
const TENANTS: [&str; 4] = ["acme", "globex", "initech", "umbrella-labs"];
const NEWCOMER: &str = "newco";
const BESIDE: &str = "freshco";

/// What the scenario asks of one implementation of a slot.
pub trait Implementation {
    /// The example repo with the slot set to this implementation, on names of the test's own.
    fn repo(&self) -> Repo;
    /// The key of a tenant's resource in this slot: `dns`.
    fn key(&self) -> &'static str;
    /// What the first plan must show of acme's resource.
    fn planned(&self) -> Vec<String>;
    /// Asserts what the fleet's first apply made as a whole, from outside.
    fn assert_fleet(&self, _slugs: &[&str]) {}
    /// Asserts, from outside, that the tenant's resource stands as its file asks, marked ours.
    fn assert_made(&self, repo: &Repo, slug: &str);
    /// Changes some tenants' resources by hand: what the plan must then show.
    fn drift(&self, repo: &Repo) -> Vec<String>;
    /// Makes a resource of the tenant's name that is someone else's: how the plan names it.
    /// `None` for a target that keeps no marks of ownership (the local targets, whose
    /// folder is this tool's alone): there is nothing to refuse or import.
    fn make_foreign(&self, repo: &Repo, slug: &str) -> Option<String>;
    /// Asserts that the foreign resource was left as it was.
    fn assert_foreign(&self, _repo: &Repo, _slug: &str) {}
    /// Puts some of the tenant's own data in, for its export to hold.
    fn fill(&self, _repo: &Repo, _slug: &str) {}
    /// Asserts, once the tenant is offboarded and before its purge, that its access is revoked
    /// and its export (a verified folder) holds its data.
    fn assert_exported(&self, _repo: &Repo, _export: &Path, _slug: &str) {}
    /// The start of the purge's plan line.
    fn purge_line(&self, slug: &str) -> String;
    /// Asserts that the tenant's resource is gone and that `others`' stand.
    fn assert_purged(&self, repo: &Repo, slug: &str, others: &[&str]);
}

fn tenant_file(slug: &str) -> String {
    format!("slug: {slug}\nname: New Co\nplan: growth\nowner:\n  email: owner@{slug}.example\nregion: eu-west-1\n")
}

pub fn conformance(imp: &dyn Implementation) {
    let repo = imp.repo();
    no_hold(&repo);
    let key = imp.key();

    // Create.
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(plan.contains(&format!("+ acme/{key}\n")), "{plan}");
    for line in imp.planned() {
        assert!(plan.contains(&line), "{line:?} not in:\n{plan}");
    }
    repo.apply();
    for slug in TENANTS {
        imp.assert_made(&repo, slug);
    }
    imp.assert_fleet(&TENANTS);
    repo.assert_plan_empty();

    // Drift, seen and put back.
    let shows = imp.drift(&repo);
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(
        plan.contains("# changed outside tenant-reconcile"),
        "{plan}"
    );
    for line in shows {
        assert!(plan.contains(&line), "{line:?} not in:\n{plan}");
    }
    repo.apply();
    for slug in TENANTS {
        imp.assert_made(&repo, slug);
    }
    repo.assert_plan_empty();

    // Someone else's resource of a new tenant's name: refused, left as it was, until imported.
    for slug in [NEWCOMER, BESIDE] {
        repo.write(&format!("tenants/{slug}.yaml"), &tenant_file(slug));
    }
    if let Some(named) = imp.make_foreign(&repo, NEWCOMER) {
        let out = repo.run(&["plan"]);
        let plan = text(&out.stdout) + &text(&out.stderr);
        assert!(plan.contains(&named), "{named:?} not in:\n{plan}");
        assert!(plan.contains("not managed by this state"), "{plan}");
        let out = repo.run(&["apply", "--auto-approve"]);
        assert_ne!(out.status.code(), Some(0));
        imp.assert_foreign(&repo, NEWCOMER);
        // The other new tenant went ahead.
        imp.assert_made(&repo, BESIDE);
        let out = repo.run(&["apply", "--auto-approve", "--import", NEWCOMER]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    } else {
        repo.apply();
        imp.assert_made(&repo, BESIDE);
    }
    imp.assert_made(&repo, NEWCOMER);
    repo.assert_plan_empty();

    // Offboarded: revoked and exported, then purged and audited.
    imp.fill(&repo, "acme");
    offboard(&repo, "acme");
    repo.apply();
    let export = repo.path().join(".tenant-reconcile/exports/acme");
    verified(&export);
    imp.assert_exported(&repo, &export, "acme");
    let plan = text(&repo.run(&["plan"]).stdout);
    assert!(plan.contains(&imp.purge_line("acme")), "{plan}");
    repo.apply();
    imp.assert_purged(
        &repo,
        "acme",
        &["globex", "initech", "umbrella-labs", NEWCOMER, BESIDE],
    );
    let out = repo.run(&["audit", "acme", "--json"]);
    let audit: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e["address"] == format!("acme/{key}") && !e["purged_at"].is_null()),
        "{audit:?}"
    );
    repo.assert_plan_empty();
}

impl Implementation for Zone {
    fn repo(&self) -> Repo {
        Zone::repo(self)
    }

    fn key(&self) -> &'static str {
        "dns"
    }

    fn planned(&self) -> Vec<String> {
        vec![format!(
            "+ acme/dns\n      + name  = \"{}\"\n      + ttl   = 60\n      + type  = \"CNAME\"\n      + value = \"ingress.example.com\"",
            self.record("acme")
        )]
    }

    fn assert_fleet(&self, slugs: &[&str]) {
        let records = self.records();
        assert_eq!(
            records.len(),
            2 * slugs.len(),
            "a record and its mark each: {records:?}"
        );
    }

    fn assert_made(&self, _repo: &Repo, slug: &str) {
        let records = self.records();
        assert_eq!(
            records.get(&self.record(slug)),
            Some(&("CNAME".to_string(), vec!["ingress.example.com".to_string()])),
            "{slug}: {records:?}"
        );
        let (kind, mark) = &records[&format!("_tenant-reconcile.{}", self.record(slug))];
        assert_eq!(kind, "TXT");
        assert!(
            mark[0].starts_with("\"tenant-reconcile state=default lineage="),
            "{mark:?}"
        );
    }

    fn drift(&self, _repo: &Repo) -> Vec<String> {
        // acme's record deleted, globex's pointed elsewhere.
        use aws_sdk_route53::types::{ChangeAction, RrType};
        let cname = RrType::Cname;
        let acme = self.record("acme");
        self.change(
            ChangeAction::Delete,
            &acme,
            cname.clone(),
            "ingress.example.com",
        );
        let globex = self.record("globex");
        self.change(
            ChangeAction::Upsert,
            &globex,
            cname,
            "elsewhere.example.net",
        );
        vec![
            "+ acme/dns  # changed outside tenant-reconcile".into(),
            "~ value = \"elsewhere.example.net\" → \"ingress.example.com\"".into(),
        ]
    }

    fn make_foreign(&self, _repo: &Repo, slug: &str) -> Option<String> {
        // external-dns's record of the name, with its own ownership record beside it.
        use aws_sdk_route53::types::{ChangeAction, RrType};
        let name = self.record(slug);
        self.change(
            ChangeAction::Create,
            &name,
            RrType::Cname,
            "payments.example.net",
        );
        self.change(
            ChangeAction::Create,
            &format!("cname-{name}"),
            RrType::Txt,
            "\"heritage=external-dns,external-dns/owner=default\"",
        );
        Some(format!("record {name}"))
    }

    fn assert_foreign(&self, _repo: &Repo, slug: &str) {
        let records = self.records();
        let name = self.record(slug);
        assert_eq!(records[&name].1, ["payments.example.net"], "left as it was");
        assert!(!records.contains_key(&format!("_tenant-reconcile.{name}")));
    }

    fn purge_line(&self, slug: &str) -> String {
        let name = self.record(slug);
        format!("- {slug}/dns  # record {name} CNAME: points to ingress.example.com")
    }

    fn assert_purged(&self, _repo: &Repo, slug: &str, others: &[&str]) {
        let records = self.records();
        let name = self.record(slug);
        assert!(!records.contains_key(&name));
        assert!(!records.contains_key(&format!("_tenant-reconcile.{name}")));
        // external-dns's TXT record of newco's name stays: it was never ours.
        assert_eq!(records.len(), 2 * others.len() + 1, "{records:?}");
        for other in others {
            assert!(records.contains_key(&self.record(other)), "{other}");
        }
    }
}

impl Implementation for Redis {
    fn repo(&self) -> Repo {
        Redis::repo(self)
    }

    fn key(&self) -> &'static str {
        "limits"
    }

    fn planned(&self) -> Vec<String> {
        vec![
            format!("+ key                  = \"{}\"", self.key("acme")),
            format!("+ user                 = \"{}\"", self.user("acme")),
            "+ password_fingerprint = (known after apply)".into(),
        ]
    }

    fn assert_made(&self, repo: &Repo, slug: &str) {
        let hash = self.hash(slug);
        assert!(
            hash.iter()
                .any(|f| f.starts_with("_managed_by=tenant-reconcile state=default lineage=")),
            "{slug}: {hash:?}"
        );
        let seats = hash.iter().find_map(|f| f.strip_prefix("seats=")).unwrap();
        let acl = self
            .acl(slug)
            .unwrap_or_else(|| panic!("{slug} has no user"));
        let prefix = format!("{}{slug}:", self.key_prefix);
        assert!(
            acl.contains(&format!("%R~{prefix}* resetchannels -@all")),
            "{acl}"
        );
        if slug == "umbrella-labs" {
            // Suspended: its user is off.
            assert!(acl.contains(" off "), "{acl}");
        } else {
            let url = self.url_of(repo, slug);
            assert_eq!(
                as_tenant(&url, &["HGET", &self.key(slug), "seats"]).trim(),
                seats
            );
        }
    }

    fn drift(&self, _repo: &Repo) -> Vec<String> {
        admin(&["HSET", &self.key("globex"), "seats", "3"]);
        vec![
            "~ globex/limits  # changed outside tenant-reconcile".into(),
            "\"seats\":3".into(),
        ]
    }

    fn make_foreign(&self, _repo: &Repo, slug: &str) -> Option<String> {
        let theirs = self.user(slug);
        admin(&[
            "ACL",
            "SETUSER",
            &theirs,
            "on",
            ">their-own",
            "~elsewhere:*",
            "+get",
        ]);
        Some(format!("limits {}", self.key(slug)))
    }

    fn assert_foreign(&self, _repo: &Repo, slug: &str) {
        let acl = self.acl(slug).unwrap();
        assert!(acl.contains("~elsewhere:*"), "left as it was: {acl}");
        assert!(self.hash(slug).is_empty(), "no hash was made beside it");
    }

    fn fill(&self, repo: &Repo, slug: &str) {
        // The quota service counts, as the admin; the tenant reads its count.
        let usage = format!("{}{slug}:usage:api_calls", self.key_prefix);
        admin(&["INCRBY", &usage, "42"]);
        let url = self.url_of(repo, slug);
        assert_eq!(as_tenant(&url, &["GET", &usage]).trim(), "42");
    }

    fn assert_exported(&self, _repo: &Repo, export: &Path, slug: &str) {
        assert!(self.acl(slug).unwrap().contains(" off "), "access revoked");
        let exported: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(export.join("quotas/redis.json")).unwrap(),
        )
        .unwrap();
        let usage = format!("{}{slug}:usage:api_calls", self.key_prefix);
        assert_eq!(exported[&usage], "42", "{exported}");
        assert_eq!(exported[self.key(slug)]["seats"], "80", "{exported}");
        assert!(exported[self.key(slug)].get("_managed_by").is_none());
    }

    fn purge_line(&self, slug: &str) -> String {
        format!(
            "- {slug}/limits  # limits {} and user {}: 3 limits",
            self.key(slug),
            self.user(slug)
        )
    }

    fn assert_purged(&self, _repo: &Repo, slug: &str, others: &[&str]) {
        assert!(self.acl(slug).is_none());
        let keys = self.keys();
        assert!(
            !keys.iter().any(|k| k.contains(&format!(":{slug}:"))),
            "{keys:?}"
        );
        for other in others {
            assert!(keys.contains(&self.key(other)), "{other}: {keys:?}");
        }
    }
}

impl Implementation for Broker {
    fn repo(&self) -> Repo {
        Broker::repo(self)
    }

    fn key(&self) -> &'static str {
        "vhost"
    }

    fn planned(&self) -> Vec<String> {
        vec![format!("vhost                = \"{}\"", self.name("acme"))]
    }

    fn assert_made(&self, repo: &Repo, slug: &str) {
        let name = self.name(slug);
        let (status, vhost) = self.call("GET", &format!("vhosts/{name}"), None);
        assert_eq!(status, 200, "{slug}'s vhost");
        assert!(
            vhost["description"]
                .as_str()
                .unwrap_or_default()
                .starts_with("tenant-reconcile state="),
            "{vhost}"
        );
        let (status, _) = self.call("GET", &format!("users/{name}"), None);
        assert_eq!(status, 200, "{slug}'s user");
        if slug != "umbrella-labs" {
            assert_eq!(self.tenant("roundtrip", &self.url_of(repo, slug), &[]).0, 0);
        }
    }

    fn drift(&self, _repo: &Repo) -> Vec<String> {
        let globex = self.name("globex");
        self.call(
            "PUT",
            &format!("vhost-limits/{globex}/max-queues"),
            Some(json!({"value": 999})),
        );
        vec![
            "~ globex/vhost  # changed outside tenant-reconcile".into(),
            "~ max_queues = 999 → ".into(),
        ]
    }

    fn make_foreign(&self, _repo: &Repo, slug: &str) -> Option<String> {
        let name = self.name(slug);
        self.call(
            "PUT",
            &format!("vhosts/{name}"),
            Some(json!({"description": "the payments team's"})),
        );
        Some(format!("vhost {name}"))
    }

    fn assert_foreign(&self, _repo: &Repo, slug: &str) {
        let name = self.name(slug);
        let (_, vhost) = self.call("GET", &format!("vhosts/{name}"), None);
        assert_eq!(
            vhost["description"],
            json!("the payments team's"),
            "left as it was"
        );
        let (status, _) = self.call("GET", &format!("users/{name}"), None);
        assert_eq!(status, 404, "no user was made beside it");
    }

    fn fill(&self, repo: &Repo, slug: &str) {
        let url = self.url_of(repo, slug);
        assert_eq!(self.tenant("declare", &url, &["orders"]).0, 0);
    }

    fn assert_exported(&self, repo: &Repo, export: &Path, slug: &str) {
        // Revoked first, then exported: the queue it declared is in the definitions.
        assert_eq!(self.tenant("roundtrip", &self.url_of(repo, slug), &[]).0, 3);
        let definitions = std::fs::read_to_string(export.join("broker/definitions.json")).unwrap();
        assert!(definitions.contains("\"orders\""), "{definitions}");
        let manifest = std::fs::read_to_string(export.join("manifest.json")).unwrap();
        assert!(manifest.contains("broker/definitions.json"), "{manifest}");
    }

    fn purge_line(&self, slug: &str) -> String {
        // (The message count is the broker's statistics, which may lag by seconds.)
        let name = self.name(slug);
        format!("- {slug}/vhost  # vhost {name} and user {name}: 1 queue, ")
    }

    fn assert_purged(&self, _repo: &Repo, slug: &str, others: &[&str]) {
        let name = self.name(slug);
        let (status, _) = self.call("GET", &format!("vhosts/{name}"), None);
        assert_eq!(status, 404, "the vhost is gone");
        let (status, _) = self.call("GET", &format!("users/{name}"), None);
        assert_eq!(status, 404, "the user is gone");
        assert_eq!(
            self.vhosts().len(),
            others.len(),
            "the others are untouched"
        );
    }
}

/// Where the example's tenants' buckets are; the scenario's new tenants are in eu-west-1.
fn region(slug: &str) -> &'static str {
    match slug {
        "globex" => "us-east-1",
        "initech" => "us-west-2",
        "umbrella-labs" => "eu-central-1",
        _ => "eu-west-1",
    }
}

impl Implementation for S3 {
    fn repo(&self) -> Repo {
        S3::repo(self, "")
    }

    fn key(&self) -> &'static str {
        "bucket"
    }

    fn planned(&self) -> Vec<String> {
        vec![format!("= \"{}\"", self.bucket("acme", "eu-west-1"))]
    }

    fn assert_made(&self, _repo: &Repo, slug: &str) {
        let bucket = self.bucket(slug, region(slug));
        assert!(
            self.buckets().contains(&bucket),
            "{slug}: {:?}",
            self.buckets()
        );
        let tags = self.tags(&bucket);
        assert_eq!(
            tags.get("tenant").map(String::as_str),
            Some(slug),
            "{tags:?}"
        );
        assert_eq!(self.encryption(&bucket).as_deref(), Some("AES256"));
        assert!(self.public_access_blocked(&bucket));
    }

    fn drift(&self, _repo: &Repo) -> Vec<String> {
        let globex = self.bucket("globex", region("globex"));
        self.block_on(
            self.client
                .delete_bucket_encryption()
                .bucket(&globex)
                .send(),
        )
        .unwrap();
        vec!["~ globex/bucket  # changed outside tenant-reconcile".into()]
    }

    fn make_foreign(&self, _repo: &Repo, slug: &str) -> Option<String> {
        let bucket = self.bucket(slug, region(slug));
        self.block_on(
            self.client
                .create_bucket()
                .bucket(&bucket)
                .create_bucket_configuration(
                    aws_sdk_s3::types::CreateBucketConfiguration::builder()
                        .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest1)
                        .build(),
                )
                .send(),
        )
        .unwrap();
        Some(format!("bucket {bucket}"))
    }

    fn assert_foreign(&self, _repo: &Repo, slug: &str) {
        let bucket = self.bucket(slug, region(slug));
        assert!(self.tags(&bucket).is_empty(), "left as it was");
        assert_eq!(self.encryption(&bucket), None, "left as it was");
    }

    fn fill(&self, _repo: &Repo, slug: &str) {
        let bucket = self.bucket(slug, region(slug));
        self.block_on(
            self.client
                .put_object()
                .bucket(&bucket)
                .key("reports/q3.csv")
                .body(b"month,total\n7,42\n".to_vec().into())
                .send(),
        )
        .unwrap();
    }

    fn assert_exported(&self, _repo: &Repo, export: &Path, _slug: &str) {
        let object = std::fs::read_to_string(export.join("objects/reports/q3.csv")).unwrap();
        assert_eq!(object, "month,total\n7,42\n");
    }

    fn purge_line(&self, slug: &str) -> String {
        format!(
            "- {slug}/bucket  # bucket {}",
            self.bucket(slug, region(slug))
        )
    }

    fn assert_purged(&self, _repo: &Repo, slug: &str, others: &[&str]) {
        let buckets = self.buckets();
        assert!(
            !buckets.contains(&self.bucket(slug, region(slug))),
            "{buckets:?}"
        );
        for other in others {
            assert!(
                buckets.contains(&self.bucket(other, region(other))),
                "{other}"
            );
        }
    }
}

impl Pg {
    /// The catalog's comment on a tenant's slice (its mark), as its isolation makes it: a
    /// database (enterprise), a schema (growth), or rows in the shared schema (starter,
    /// whose role carries the mark).
    fn slice_mark(&self, slug: &str) -> Option<String> {
        let name = self.name(slug);
        let sql = match slug {
            "globex" => format!(
                "SELECT shobj_description(oid, 'pg_database') AS mark FROM pg_database WHERE datname = '{name}'"
            ),
            "initech" => format!(
                "SELECT shobj_description(oid, 'pg_authid') AS mark FROM pg_roles WHERE rolname = '{name}'"
            ),
            _ => format!(
                "SELECT obj_description(oid, 'pg_namespace') AS mark FROM pg_namespace WHERE nspname = '{name}'"
            ),
        };
        let rows = self.query(&sql);
        rows.first()
            .and_then(|r| r["mark"].as_str())
            .map(str::to_string)
    }
}

impl Implementation for Pg {
    fn repo(&self) -> Repo {
        Pg::repo(self)
    }

    fn key(&self) -> &'static str {
        "database"
    }

    fn planned(&self) -> Vec<String> {
        vec![format!("= \"{}\"", self.name("acme"))]
    }

    fn assert_made(&self, _repo: &Repo, slug: &str) {
        let mark = self.slice_mark(slug);
        assert!(
            mark.as_deref()
                .is_some_and(|m| m.starts_with("tenant-reconcile state=default lineage=")),
            "{slug}: {mark:?}"
        );
        if slug != "umbrella-labs" {
            // Its own login reads its own data.
            let (role, db) = (
                self.name(slug),
                if slug == "globex" {
                    self.name(slug)
                } else {
                    self.db.clone()
                },
            );
            let table = match slug {
                "globex" => "projects".to_string(),
                "initech" => "tenants_shared.projects".to_string(),
                _ => format!("\"{role}\".projects"),
            };
            let rows = self.query_as(&role, &db, &format!("SELECT count(*) AS n FROM {table}"));
            assert!(rows.is_ok(), "{slug}: {rows:?}");
        }
    }

    fn drift(&self, _repo: &Repo) -> Vec<String> {
        let acme = self.name("acme");
        self.exec(&format!(
            "REVOKE USAGE ON SCHEMA \"{acme}\" FROM \"{acme}\""
        ));
        vec![
            "~ acme/database  # changed outside tenant-reconcile".into(),
            "~ access = \"missing\" → \"granted\"".into(),
        ]
    }

    fn make_foreign(&self, _repo: &Repo, slug: &str) -> Option<String> {
        let name = self.name(slug);
        self.exec(&format!(
            "CREATE SCHEMA \"{name}\"; CREATE TABLE \"{name}\".notes (body text); INSERT INTO \"{name}\".notes VALUES ('keep me');"
        ));
        Some(format!("schema {name}"))
    }

    fn assert_foreign(&self, _repo: &Repo, slug: &str) {
        let name = self.name(slug);
        assert_eq!(self.slice_mark(slug), None, "left as it was");
        assert_eq!(
            self.query(&format!("SELECT body FROM \"{name}\".notes")),
            vec![json!({"body": "keep me"})]
        );
    }

    fn fill(&self, _repo: &Repo, slug: &str) {
        let name = self.name(slug);
        self.exec(&format!(
            "INSERT INTO \"{name}\".projects (name) VALUES ('conformance')"
        ));
    }

    fn assert_exported(&self, _repo: &Repo, export: &Path, slug: &str) {
        let e = self
            .query_as(&self.name(slug), &self.db, "SELECT 1")
            .unwrap_err();
        assert!(e.contains("not permitted to log in"), "access revoked: {e}");
        let projects = std::fs::read_to_string(export.join("tables/projects.csv")).unwrap();
        assert!(projects.contains("conformance"), "{projects}");
    }

    fn purge_line(&self, slug: &str) -> String {
        format!(
            "- {slug}/database  # schema {}: 2 tables, ",
            self.name(slug)
        )
    }

    fn assert_purged(&self, _repo: &Repo, slug: &str, others: &[&str]) {
        let name = self.name(slug);
        assert_eq!(
            self.count(&format!(
                "SELECT count(*) FROM pg_namespace WHERE nspname = '{name}'"
            )),
            0
        );
        assert_eq!(
            self.count(&format!(
                "SELECT count(*) FROM pg_roles WHERE rolname = '{name}'"
            )),
            0
        );
        for other in others {
            assert!(self.slice_mark(other).is_some(), "{other}'s slice stays");
        }
    }
}

/// The local data target: a SQLite file per tenant under the repo's `.tenant-reconcile/`.
pub struct LocalData;

impl Implementation for LocalData {
    fn repo(&self) -> Repo {
        Repo::example()
    }

    fn key(&self) -> &'static str {
        "database"
    }

    fn planned(&self) -> Vec<String> {
        Vec::new()
    }

    fn assert_made(&self, repo: &Repo, slug: &str) {
        let file = format!("data/{slug}.sqlite");
        assert!(
            repo.count(&file, "SELECT COUNT(*) FROM projects") >= 1,
            "{slug}"
        );
    }

    fn drift(&self, repo: &Repo) -> Vec<String> {
        std::fs::remove_file(repo.state_dir().join("data/globex.sqlite")).unwrap();
        vec!["+ globex/database  # changed outside tenant-reconcile".into()]
    }

    fn make_foreign(&self, _repo: &Repo, _slug: &str) -> Option<String> {
        None
    }

    fn fill(&self, repo: &Repo, slug: &str) {
        repo.query(
            &format!("data/{slug}.sqlite"),
            "INSERT INTO projects (name) VALUES ('conformance')",
        );
    }

    fn assert_exported(&self, repo: &Repo, export: &Path, slug: &str) {
        assert!(
            repo.state_dir()
                .join(format!("data/{slug}.sqlite"))
                .exists(),
            "kept until the purge"
        );
        let projects = std::fs::read_to_string(export.join("tables/projects.csv")).unwrap();
        assert!(projects.contains("conformance"), "{projects}");
    }

    fn purge_line(&self, slug: &str) -> String {
        format!("- {slug}/database  # database file data/{slug}.sqlite: 2 tables, ")
    }

    fn assert_purged(&self, repo: &Repo, slug: &str, others: &[&str]) {
        let data = repo.state_dir().join("data");
        assert!(!data.join(format!("{slug}.sqlite")).exists());
        for other in others {
            assert!(data.join(format!("{other}.sqlite")).exists(), "{other}");
        }
    }
}

/// The local buckets target: a folder per tenant under the repo's `.tenant-reconcile/`.
pub struct LocalBuckets;

impl Implementation for LocalBuckets {
    fn repo(&self) -> Repo {
        Repo::example()
    }

    fn key(&self) -> &'static str {
        "bucket"
    }

    fn planned(&self) -> Vec<String> {
        vec!["+ name          = \"acme\"".into()]
    }

    fn assert_made(&self, repo: &Repo, slug: &str) {
        let settings = repo
            .state_dir()
            .join(format!("buckets/{slug}/.bucket.json"));
        let text = std::fs::read_to_string(&settings).unwrap_or_else(|e| panic!("{slug}: {e}"));
        assert!(text.contains("AES256"), "{slug}: {text}");
    }

    fn drift(&self, repo: &Repo) -> Vec<String> {
        std::fs::remove_file(repo.state_dir().join("buckets/globex/.bucket.json")).unwrap();
        vec![
            "~ globex/bucket  # changed outside tenant-reconcile".into(),
            "+ encryption    = \"AES256\"".into(),
        ]
    }

    fn make_foreign(&self, _repo: &Repo, _slug: &str) -> Option<String> {
        None
    }

    fn fill(&self, repo: &Repo, slug: &str) {
        let dir = repo.state_dir().join(format!("buckets/{slug}/reports"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("q3.csv"), "month,total\n7,42\n").unwrap();
    }

    fn assert_exported(&self, _repo: &Repo, export: &Path, _slug: &str) {
        let object = std::fs::read_to_string(export.join("objects/reports/q3.csv")).unwrap();
        assert_eq!(object, "month,total\n7,42\n");
    }

    fn purge_line(&self, slug: &str) -> String {
        format!("- {slug}/bucket  # bucket {slug}: 1 object, 17 bytes")
    }

    fn assert_purged(&self, repo: &Repo, slug: &str, others: &[&str]) {
        let buckets = repo.state_dir().join("buckets");
        assert!(!buckets.join(slug).exists());
        for other in others {
            assert!(buckets.join(other).exists(), "{other}");
        }
    }
}

/// The rendered files target: each tenant's files under `.tenant-reconcile/rendered/<slug>/`,
/// marked by a file beside them that lists them.
pub struct RenderedFiles;

fn rendered(repo: &Repo, slug: &str) -> std::path::PathBuf {
    repo.state_dir().join(format!("rendered/{slug}"))
}

impl Implementation for RenderedFiles {
    fn repo(&self) -> Repo {
        Repo::example()
    }

    fn key(&self) -> &'static str {
        "file/namespace.yaml"
    }

    fn planned(&self) -> Vec<String> {
        vec!["+# Rendered by tenant-reconcile for tenant acme".into()]
    }

    fn assert_made(&self, repo: &Repo, slug: &str) {
        let dir = rendered(repo, slug);
        let body = std::fs::read_to_string(dir.join("namespace.yaml")).unwrap();
        assert!(
            body.starts_with(&format!(
                "# Rendered by tenant-reconcile for tenant {slug};"
            )),
            "{slug}: {body}"
        );
        let mark = std::fs::read_to_string(dir.join(".tenant-reconcile-state")).unwrap();
        assert!(
            mark.starts_with("tenant-reconcile state=default lineage="),
            "{mark}"
        );
        assert!(mark.ends_with("\nnamespace.yaml\n"), "{mark}");
    }

    fn drift(&self, repo: &Repo) -> Vec<String> {
        std::fs::write(
            rendered(repo, "globex").join("namespace.yaml"),
            "edited by hand\n",
        )
        .unwrap();
        vec![
            "~ globex/file/namespace.yaml  # changed outside tenant-reconcile".into(),
            "-edited by hand".into(),
        ]
    }

    fn make_foreign(&self, repo: &Repo, slug: &str) -> Option<String> {
        let dir = rendered(repo, slug);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("namespace.yaml"),
            "# written by hand\nkind: Namespace\n",
        )
        .unwrap();
        Some(format!(
            "file {slug}/namespace.yaml has no mark of ownership"
        ))
    }

    fn assert_foreign(&self, repo: &Repo, slug: &str) {
        let body = std::fs::read_to_string(rendered(repo, slug).join("namespace.yaml")).unwrap();
        assert_eq!(
            body, "# written by hand\nkind: Namespace\n",
            "left as it was"
        );
    }

    fn purge_line(&self, slug: &str) -> String {
        format!("- {slug}/file/namespace.yaml  # file {slug}/namespace.yaml")
    }

    fn assert_purged(&self, repo: &Repo, slug: &str, others: &[&str]) {
        assert!(!rendered(repo, slug).exists());
        for other in others {
            assert!(
                rendered(repo, other).join("namespace.yaml").exists(),
                "{other}"
            );
        }
    }
}

/// A control plane's rows of a tenant, as its feature flags show them: `local` in the repo's
/// `control.sqlite`, `postgres` in the admin schema. A slug someone else registered is
/// refused as taken, not as a conflict (`released.rs`), so the scenario's refusal is left out.
pub enum ControlPlane {
    Local,
    Postgres(Pg),
}

impl ControlPlane {
    /// How many of the tenant's flags there are, with `where_` added (`AND enabled`).
    fn flags(&self, repo: &Repo, slug: &str, where_: &str) -> i64 {
        match self {
            ControlPlane::Local => repo.count(
                "control.sqlite",
                &format!("SELECT COUNT(*) FROM feature_flags WHERE tenant_id = (SELECT tenant_id FROM tenants WHERE slug = '{slug}') {where_}"),
            ),
            ControlPlane::Postgres(pg) => pg.count(&format!(
                "SELECT count(*) FROM tenant_reconcile.feature_flags WHERE tenant_id = (SELECT tenant_id FROM tenant_reconcile.tenants WHERE slug = '{slug}') {where_}"
            )),
        }
    }
}

impl Implementation for ControlPlane {
    fn repo(&self) -> Repo {
        match self {
            ControlPlane::Local => Repo::example(),
            ControlPlane::Postgres(pg) => pg.repo(),
        }
    }

    fn key(&self) -> &'static str {
        "features"
    }

    fn planned(&self) -> Vec<String> {
        vec!["+ sso".into()]
    }

    fn assert_made(&self, repo: &Repo, slug: &str) {
        assert!(self.flags(repo, slug, "") > 0, "{slug} has its flags");
    }

    fn drift(&self, repo: &Repo) -> Vec<String> {
        let sql = "UPDATE {schema}feature_flags SET enabled = false WHERE flag = 'sso' AND tenant_id = (SELECT tenant_id FROM {schema}tenants WHERE slug = 'acme')";
        match self {
            ControlPlane::Local => {
                repo.query("control.sqlite", &sql.replace("{schema}", ""));
            }
            ControlPlane::Postgres(pg) => pg.exec(&sql.replace("{schema}", "tenant_reconcile.")),
        }
        vec![
            "~ acme/features  # changed outside tenant-reconcile".into(),
            "~ sso = false → true".into(),
        ]
    }

    fn make_foreign(&self, _repo: &Repo, _slug: &str) -> Option<String> {
        None
    }

    fn purge_line(&self, slug: &str) -> String {
        format!("- {slug}/features  # feature flags: ")
    }

    fn assert_purged(&self, repo: &Repo, slug: &str, others: &[&str]) {
        assert_eq!(self.flags(repo, slug, ""), 0, "{slug}'s flags are gone");
        for other in others {
            assert!(self.flags(repo, other, "") > 0, "{other}'s flags stay");
        }
    }
}

#[test]
fn control_plane_local() {
    conformance(&ControlPlane::Local);
}

#[test]
fn control_plane_postgres() {
    conformance(&ControlPlane::Postgres(Pg::new()));
}

#[test]
fn files_local() {
    conformance(&RenderedFiles);
}

#[test]
fn data_local() {
    conformance(&LocalData);
}

#[test]
fn buckets_local() {
    conformance(&LocalBuckets);
}

#[test]
fn data_postgres() {
    conformance(&Pg::new());
}

#[test]
fn buckets_s3() {
    conformance(&S3::new());
}

#[test]
fn dns_route53() {
    conformance(&Zone::new());
}

#[test]
fn quotas_redis() {
    conformance(&Redis::new());
}

#[test]
fn broker_rabbitmq() {
    conformance(&Broker::new());
}

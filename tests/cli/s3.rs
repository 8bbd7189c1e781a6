//! The S3 target and the s3 state backend against moto's S3 server. What the binary did is
//! checked through the S3 API, never through its own state; every scenario ends with a
//! plan that must be empty.

use std::time::Duration;

use serde_json::json;

use crate::faulty::FaultyProxy;
use crate::moto::S3;
use crate::support::{text, Repo};

/// (slug, region, plan) of the example repo's tenants.
const EXAMPLE: &[(&str, &str)] = &[
    ("acme", "eu-west-1"),
    ("globex", "us-east-1"),
    ("initech", "us-west-2"),
    ("umbrella-labs", "eu-central-1"),
];

fn example_buckets(s3: &S3) -> Vec<String> {
    let mut names: Vec<String> = EXAMPLE.iter().map(|(s, r)| s3.bucket(s, r)).collect();
    names.sort();
    names
}

#[test]
fn apply_creates_each_bucket_as_its_plan_asks() {
    let s3 = S3::new();
    let repo = s3.repo("");
    repo.apply();
    assert_eq!(s3.buckets(), example_buckets(&s3));

    for (slug, region) in EXAMPLE {
        let b = s3.bucket(slug, region);
        assert_eq!(s3.encryption(&b).as_deref(), Some("AES256"), "{b}");
        assert!(s3.public_access_blocked(&b), "{b}");
        let location = s3
            .block_on(s3.client.get_bucket_location().bucket(&b).send())
            .unwrap();
        let location = location
            .location_constraint()
            .map(|c| c.as_str().to_string())
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "us-east-1".into());
        assert_eq!(&location, region, "{b} is in its tenant's region");
    }

    let acme = s3.bucket("acme", "eu-west-1");
    let mut tags = s3.tags(&acme);
    // The mark of ownership: this state, by name and lineage.
    let mark = tags.remove("tenant-reconcile-state").unwrap_or_default();
    assert!(
        mark.starts_with("tenant-reconcile state=default lineage="),
        "{mark:?}"
    );
    assert_eq!(
        tags,
        [
            ("managed-by", "tenant-reconcile"),
            ("plan", "growth"),
            ("tenant", "acme")
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into()
    );
    assert_eq!(s3.versioning(&acme).as_deref(), Some("Enabled"));
    assert_eq!(s3.lifecycle(&acme), [(Some(30), vec![])]);

    // Enterprise: old versions for 90 days, objects to cheaper classes as they age.
    let globex = s3.bucket("globex", "us-east-1");
    assert_eq!(
        s3.lifecycle(&globex),
        [
            (None, vec![(30, "STANDARD_IA".to_string())]),
            (None, vec![(180, "GLACIER_IR".to_string())]),
            (Some(90), vec![]),
        ]
    );

    // Starter: no versioning, no lifecycle rules, no policy.
    let initech = s3.bucket("initech", "us-west-2");
    assert_eq!(s3.versioning(&initech), None);
    assert!(s3.lifecycle(&initech).is_empty());
    assert_eq!(s3.policy(&initech), None);

    // umbrella-labs is suspended in the example: its bucket denies access.
    let umbrella = s3.bucket("umbrella-labs", "eu-central-1");
    let policy = s3
        .policy(&umbrella)
        .expect("a suspended tenant's bucket has a policy");
    let statement = &policy["Statement"][0];
    assert_eq!(statement["Sid"], json!("TenantReconcileSuspended"));
    assert_eq!(statement["Effect"], json!("Deny"));

    repo.assert_plan_empty();
}

#[test]
fn drift_shows_field_by_field_and_apply_repairs_it() {
    let s3 = S3::new();
    let repo = s3.repo("");
    repo.apply();
    let acme = s3.bucket("acme", "eu-west-1");
    let globex = s3.bucket("globex", "us-east-1");
    let initech = s3.bucket("initech", "us-west-2");
    let umbrella = s3.bucket("umbrella-labs", "eu-central-1");
    s3.block_on(async {
        let c = &s3.client;
        c.delete_bucket_encryption()
            .bucket(&acme)
            .send()
            .await
            .unwrap();
        c.delete_public_access_block()
            .bucket(&acme)
            .send()
            .await
            .unwrap();
        c.delete_bucket_lifecycle()
            .bucket(&globex)
            .send()
            .await
            .unwrap();
        let tag = |k: &str, v: &str| {
            aws_sdk_s3::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .unwrap()
        };
        // Ours changed, and one of someone else's, which is theirs to keep.
        let tags = aws_sdk_s3::types::Tagging::builder()
            .tag_set(tag("plan", "free"))
            .tag_set(tag("cost-center", "4711"))
            .build()
            .unwrap();
        c.put_bucket_tagging()
            .bucket(&globex)
            .tagging(tags)
            .send()
            .await
            .unwrap();
        c.delete_bucket_policy()
            .bucket(&umbrella)
            .send()
            .await
            .unwrap();
    });
    s3.delete_bucket(&initech);

    let out = repo.run(&["plan", "--detailed-exitcode"]);
    let plan = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{plan}");
    assert!(
        !plan.contains("cost-center"),
        "others' tags are not ours to compare:\n{plan}"
    );
    for expected in [
        "~ acme/bucket",
        r#""none" → "AES256""#,
        r#""open" → "blocked""#,
        "~ globex/bucket",
        r#"lifecycle  = [] → ["expire noncurrent versions after 90 days","#,
        r#"tags       = {"plan":"free"} → {"managed-by":"tenant-reconcile","plan":"enterprise","tenant":"globex"}"#,
        // Its tags were replaced, the mark of ownership with them: apply puts it back.
        "+ managed_by = \"state default\"",
        "+ initech/bucket",
        "~ umbrella-labs/bucket",
        r#"access = "open" → "denied""#,
        "Plan: 1 to add, 3 to change, 0 to destroy.",
    ] {
        assert!(plan.contains(expected), "missing {expected:?} in:\n{plan}");
    }

    repo.apply();
    assert_eq!(s3.buckets(), example_buckets(&s3));
    assert_eq!(s3.encryption(&acme).as_deref(), Some("AES256"));
    assert!(s3.public_access_blocked(&acme));
    assert_eq!(s3.lifecycle(&globex).len(), 3);
    assert_eq!(s3.tags(&globex)["plan"], "enterprise");
    assert_eq!(
        s3.tags(&globex)["cost-center"],
        "4711",
        "others' tags are kept"
    );
    assert!(
        s3.public_access_blocked(&initech),
        "the recreated bucket is complete"
    );
    assert_eq!(s3.tags(&initech)["tenant"], "initech");
    assert!(s3.policy(&umbrella).is_some());
    repo.assert_plan_empty();
}

#[test]
fn suspend_and_resume_touch_only_our_policy_statement() {
    let s3 = S3::new();
    let repo = s3.repo("  app_principal = \"arn:aws:iam::123456789012:role/app\"\n");
    repo.apply();
    let acme = s3.bucket("acme", "eu-west-1");
    // Someone else's statement on the bucket, which suspending must not disturb.
    let theirs = json!({
        "Sid": "AnalyticsRead",
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::123456789012:role/analytics"},
        "Action": "s3:GetObject",
        "Resource": format!("arn:aws:s3:::{acme}/*"),
    });
    let policy = json!({"Version": "2012-10-17", "Statement": [theirs]});
    s3.block_on(
        s3.client
            .put_bucket_policy()
            .bucket(&acme)
            .policy(policy.to_string())
            .send(),
    )
    .unwrap();
    repo.assert_plan_empty();

    let file = std::fs::read_to_string(repo.path().join("tenants/acme.yaml")).unwrap();
    repo.write("tenants/acme.yaml", &format!("{file}status: suspended\n"));
    repo.apply();
    let statements = s3.policy(&acme).unwrap()["Statement"].clone();
    assert_eq!(statements.as_array().unwrap().len(), 2, "{statements}");
    assert_eq!(statements[0], theirs);
    assert_eq!(statements[1]["Effect"], json!("Deny"));
    assert_eq!(
        statements[1]["Principal"],
        json!({"AWS": "arn:aws:iam::123456789012:role/app"})
    );
    repo.assert_plan_empty();

    repo.write("tenants/acme.yaml", &file);
    repo.apply();
    assert_eq!(s3.policy(&acme).unwrap()["Statement"], json!([theirs]));
    repo.assert_plan_empty();
}

#[test]
fn a_bucket_owned_by_another_account_fails_that_tenant_only() {
    let s3 = S3::new();
    let repo = s3.repo("");
    let acme = s3.bucket("acme", "eu-west-1");
    s3.create_as_stranger(&acme);

    let out = repo.run(&["apply", "--auto-approve"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the bucket {acme} exists and belongs to another account"
        )),
        "{stderr}"
    );
    // The other tenants were provisioned all the same.
    let ours: Vec<String> = s3.buckets().into_iter().filter(|b| *b != acme).collect();
    let mut expected = example_buckets(&s3);
    expected.retain(|b| *b != acme);
    assert_eq!(ours, expected);
    assert!(
        s3.tags(&acme).is_empty(),
        "the stranger's bucket was not touched"
    );

    // With a prefix of its own the tenant gets a bucket nobody else has.
    repo.write(
        "tenant-reconcile.hcl",
        &s3.config("  bucket_name = \"{prefix}-{slug}-{region}-b\"\n"),
    );
    let out = repo.run(&["plan", "--allow-replace"]);
    assert!(
        text(&out.stdout).contains("-/+ globex/bucket"),
        "{}",
        text(&out.stdout)
    );
    repo.run(&["apply", "--auto-approve", "--allow-replace"]);
    assert_eq!(s3.tags(&format!("{acme}-b"))["tenant"], "acme");
    repo.assert_plan_empty();
}

#[test]
fn validate_refuses_bucket_names_s3_would_refuse_before_any_call() {
    let repo = Repo::example();
    repo.write(
        "tenant-reconcile.hcl",
        "targets {\n  buckets = \"s3\"\n}\ns3 {\n  bucket_name = \"{prefix}-{slug}-{region}-s3alias\"\n}\n",
    );
    let out = repo.run(&["validate"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "tenants/acme.yaml:1:1: field `slug`: the bucket name \"tenant-acme-eu-west-1-s3alias\" ends with \"-s3alias\", which S3 reserves"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.matches("which S3 reserves").count(), 4, "{stderr}");
    // Nothing is planned or touched with a name S3 would refuse.
    let before = repo.fingerprint();
    assert_eq!(repo.run(&["plan"]).status.code(), Some(1));
    assert_eq!(repo.fingerprint(), before);
}

/// The s3 state backend on a bucket of the test's own, keyed `env/prod.json`.
fn state_repo(s3: &S3) -> (Repo, String) {
    state_repo_with(s3, "")
}

/// [`state_repo`], with `extra` lines in the state block.
fn state_repo_with(s3: &S3, extra: &str) -> (Repo, String) {
    let bucket = format!("{}-state", s3.prefix);
    s3.block_on(s3.client.create_bucket().bucket(&bucket).send())
        .unwrap();
    let mut repo = s3.repo("");
    let config = format!(
        "state {{\n  backend = \"s3\"\n  bucket = \"{bucket}\"\n  key = \"env/prod.json\"\n{extra}}}\n{}",
        s3.config("")
    );
    repo.write("tenant-reconcile.hcl", &config);
    repo.env = s3.env();
    (repo, bucket)
}

/// The state's objects: the header, and a record per tenant of `slugs`.
fn state_objects(slugs: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> = slugs
        .iter()
        .map(|s| format!("env/prod.json.tenants/{s}"))
        .collect();
    keys.push("env/prod.json".into());
    keys.sort();
    keys
}

const EXAMPLE_SLUGS: [&str; 4] = ["acme", "globex", "initech", "umbrella-labs"];

/// Each object's ETag, by key.
fn etags(s3: &S3, bucket: &str) -> std::collections::BTreeMap<String, String> {
    let out = s3
        .block_on(s3.client.list_objects_v2().bucket(bucket).send())
        .unwrap();
    out.contents()
        .iter()
        .map(|o| (o.key().unwrap().to_string(), o.e_tag().unwrap().to_string()))
        .collect()
}

#[test]
fn state_in_s3_is_locked_and_a_stale_lock_is_released_by_its_id() {
    let s3 = S3::new();
    let (repo, bucket) = state_repo(&s3);
    repo.apply();
    // The header and a record per tenant; no lock left behind.
    assert_eq!(s3.keys(&bucket), state_objects(&EXAMPLE_SLUGS));
    let header = s3.get_json(&bucket, "env/prod.json");
    assert_eq!(header["format_version"], json!(2));
    assert_eq!(header["live"], json!(4));
    assert_eq!(header["records"], json!("env/prod.json.tenants/"));
    assert!(header.get("tenants").is_none(), "{header}");
    let acme = s3.get_json(&bucket, "env/prod.json.tenants/acme");
    assert_eq!(acme["tenant"]["lifecycle"], json!("active"));
    assert!(acme["generation"].as_u64().unwrap() > 1, "{acme}");
    repo.assert_plan_empty();

    // A lock left by a run that is gone.
    let stale = json!({
        "id": "0f9e6c1a-stale", "operation": "apply", "who": "ci@runner-7", "host": "runner-7",
        "pid": 4242, "created": "2026-11-23T10:00:00Z", "version": "0.1.0"
    });
    s3.put(&bucket, "env/prod.json.lock", &stale.to_string());
    let out = repo.run(&["apply", "--auto-approve", "--lock-timeout", "1s"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("ci@runner-7 (pid 4242)"), "{stderr}");
    assert!(
        stderr.contains("tenant-reconcile force-unlock 0f9e6c1a-stale"),
        "{stderr}"
    );

    let out = repo.run(&["force-unlock", "some-other-id"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("the lock is not some-other-id"),
        "{}",
        text(&out.stderr)
    );
    assert!(s3.keys(&bucket).contains(&"env/prod.json.lock".to_string()));

    let out = repo.run(&["force-unlock", "0f9e6c1a-stale"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Released the lock"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(s3.keys(&bucket), state_objects(&EXAMPLE_SLUGS));

    let out = repo.run(&["force-unlock", "0f9e6c1a-stale"]);
    assert!(
        text(&out.stderr).contains("is not locked"),
        "{}",
        text(&out.stderr)
    );
    repo.assert_plan_empty();
}

#[test]
fn runners_cannot_claim_tenants_from_a_state_in_s3() {
    let s3 = S3::new();
    let (repo, bucket) = state_repo(&s3);
    repo.apply();
    repo.write(
        "tenants/zeta.yaml",
        "slug: zeta\nname: Zeta\nplan: starter\nowner:\n  email: o@zeta.example\nregion: eu-west-1\n",
    );
    let out = repo.run(&["plan", "--out", "zeta.plan"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = etags(&s3, &bucket);
    let out = repo.run(&["apply", "zeta.plan", "--claim"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("runners cannot claim tenants from the state in s3://"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(etags(&s3, &bucket), before, "nothing was written");
}

#[test]
fn a_second_apply_waits_for_the_s3_lock_and_names_its_holder() {
    let s3 = S3::new();
    let (repo, _bucket) = state_repo(&s3);
    add_tenants(&repo, 30);
    let mut first = repo.spawn_apply(1);
    // Wait until the first run holds the lock (it prints progress once it does).
    {
        use std::io::{BufRead, BufReader};
        let mut lines = BufReader::new(first.stderr.take().unwrap()).lines();
        lines.next();
        let out = repo.run(&["apply", "--auto-approve", "--lock-timeout", "0s"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("the state is locked by `apply`"),
            "{stderr}"
        );
        for _ in lines {}
    }
    assert!(first.wait().unwrap().success());
    repo.assert_plan_empty();
}

fn add_tenants(repo: &Repo, n: usize) {
    for i in 0..n {
        repo.write(
            &format!("tenants/bulk-{i:03}.yaml"),
            &format!(
                "slug: bulk-{i:03}\nname: Bulk {i}\nplan: starter\nowner:\n  email: ops@bulk-{i}.example\nregion: eu-west-1\n"
            ),
        );
    }
}

#[test]
fn killed_mid_apply_with_state_in_s3_a_rerun_converges_exactly_once() {
    let s3 = S3::new();
    let (repo, bucket) = state_repo(&s3);
    add_tenants(&repo, 20);
    for (lines, delay) in [(0, 300), (3, 0), (8, 40)] {
        repo.kill_apply(4, lines, Duration::from_millis(delay));
        // A request the run sent just before it was killed (the lock's own PUT, say) may
        // still be on its way through the server; let it land before looking.
        std::thread::sleep(Duration::from_millis(500));
        // A killed run leaves its lock behind; the next one names it and how to free it.
        let keys = s3.keys(&bucket);
        if keys.contains(&"env/prod.json.lock".to_string()) {
            let lock = s3.get_json(&bucket, "env/prod.json.lock");
            let out = repo.run(&["apply", "--auto-approve", "--lock-timeout", "0s"]);
            assert!(
                text(&out.stderr).contains("force-unlock"),
                "{}",
                text(&out.stderr)
            );
            let out = repo.run(&["force-unlock", lock["id"].as_str().unwrap()]);
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
    }
    repo.apply();
    let mut expected = example_buckets(&s3);
    expected.extend((0..20).map(|i| s3.bucket(&format!("bulk-{i:03}"), "eu-west-1")));
    expected.sort();
    let tenant_buckets: Vec<String> = s3.buckets().into_iter().filter(|b| *b != bucket).collect();
    assert_eq!(tenant_buckets, expected, "every bucket exactly once");
    for b in &expected {
        assert!(s3.public_access_blocked(b), "{b} is complete");
        assert_eq!(s3.encryption(b).as_deref(), Some("AES256"), "{b}");
    }
    assert_eq!(repo.state_json()["tenants"].as_object().unwrap().len(), 24);
    let mut slugs: Vec<String> = EXAMPLE_SLUGS.iter().map(|s| s.to_string()).collect();
    slugs.extend((0..20).map(|i| format!("bulk-{i:03}")));
    let slugs: Vec<&str> = slugs.iter().map(String::as_str).collect();
    assert_eq!(s3.keys(&bucket), state_objects(&slugs));
    assert_eq!(s3.get_json(&bucket, "env/prod.json")["live"], json!(24));
    repo.assert_plan_empty();
}

#[test]
fn slow_downs_timeouts_and_buckets_not_yet_visible_are_retried() {
    let s3 = S3::new();
    let proxy = FaultyProxy::start(&s3.endpoint);
    // The proxy holds some requests for 6 s: each such attempt times out and is sent again.
    // The timeout is 4 s, not less: on a machine busy with the rest of the suite (a fresh
    // clone's CI, runners applying fleets beside it, one moto server for every test) a
    // CreateBucket failed with its attempts timing out at 2 s.
    let mut repo = s3.repo("  request_timeout = \"4s\"\n");
    repo.env.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
    repo.env
        .push(("AWS_ENDPOINT_URL".into(), proxy.endpoint.clone()));
    repo.apply();
    use std::sync::atomic::Ordering::Relaxed;
    assert!(proxy.slow_downs.load(Relaxed) > 5, "SlowDown was injected");
    assert!(
        proxy.held.load(Relaxed) > 2,
        "requests were held past the timeout"
    );
    assert_eq!(
        proxy.not_yet_there.load(Relaxed),
        4,
        "each new bucket was at first not there"
    );
    assert_eq!(s3.buckets(), example_buckets(&s3));
    for (slug, region) in EXAMPLE {
        let b = s3.bucket(slug, region);
        assert!(s3.public_access_blocked(&b), "{b}");
        assert_eq!(s3.tags(&b)["tenant"], *slug);
    }
    repo.assert_plan_empty();
}

/// Starts an apply of `repo` at parallelism 1, does `meanwhile` once the run holds the lock
/// (it has printed a line), and asserts the run then stops, saying its lock was lost.
fn stops_when_its_lock_is_lost(repo: &Repo, meanwhile: impl FnOnce()) {
    use std::io::{BufRead, BufReader};
    let mut run = repo.spawn_apply(1);
    let mut lines = BufReader::new(run.stderr.take().unwrap()).lines();
    lines.next();
    meanwhile();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let rest = rest.join("\n");
    assert!(
        rest.contains("this run's lock on the state was removed"),
        "{rest}"
    );
    assert_eq!(run.wait().unwrap().code(), Some(1));
}

#[test]
fn a_run_whose_lock_was_taken_away_stops_without_writing_the_state() {
    let s3 = S3::new();
    let (repo, bucket) = state_repo(&s3);
    add_tenants(&repo, 30);
    stops_when_its_lock_is_lost(&repo, || {
        // Someone decides the run is gone and frees its lock.
        let lock = s3.get_json(&bucket, "env/prod.json.lock");
        let out = repo.run(&["force-unlock", lock["id"].as_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    });
    // What it did is in its records; a new run takes over and converges.
    repo.apply();
    assert!(!s3.keys(&bucket).contains(&"env/prod.json.lock".to_string()));
    assert_eq!(s3.get_json(&bucket, "env/prod.json")["live"], json!(34));
    repo.assert_plan_empty();
}

#[test]
fn a_missing_state_bucket_is_a_clear_error_and_nothing_is_made() {
    let s3 = S3::new();
    let mut repo = s3.repo("");
    let bucket = format!("{}-nostate", s3.prefix);
    repo.write(
        "tenant-reconcile.hcl",
        &format!(
            "state {{\n  backend = \"s3\"\n  bucket = \"{bucket}\"\n}}\n{}",
            s3.config("")
        ),
    );
    repo.env = s3.env();
    for args in [&["plan"][..], &["apply", "--auto-approve"]] {
        let out = repo.run(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("NoSuchBucket")
                && stderr.contains("hint: the state bucket must exist before the first run"),
            "{args:?}: {stderr}"
        );
    }
    assert!(
        s3.buckets().is_empty(),
        "nothing was created: {:?}",
        s3.buckets()
    );
}

#[test]
fn smoke_tests_probe_each_bucket_and_leave_nothing_in_it() {
    let s3 = S3::new();
    let repo = s3.repo("");
    repo.apply();
    let out = repo.run(&["check", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The suspended tenant is listed as not checked.
    for t in report
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["checked"] != false)
    {
        let bucket = t["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "bucket")
            .unwrap_or_else(|| panic!("no bucket check: {t}"));
        assert_eq!(bucket["ok"], true, "{bucket}");
    }
    // Versioned (acme's growth plan) or not, the probe left no version or delete marker.
    for (slug, region) in EXAMPLE {
        let b = s3.bucket(slug, region);
        let versions = s3
            .block_on(s3.client.list_object_versions().bucket(&b).send())
            .unwrap();
        assert!(versions.versions().is_empty(), "{b}: {versions:?}");
        assert!(versions.delete_markers().is_empty(), "{b}: {versions:?}");
    }
    // A bucket deleted by hand fails its tenant's check.
    let acme = s3.bucket("acme", "eu-west-1");
    s3.delete_bucket(&acme);
    let out = repo.run(&["check", "acme"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stdout).contains("bucket    FAILED"),
        "{}",
        text(&out.stdout)
    );
    repo.apply();
    repo.assert_plan_empty();
}

/// The state in S3 on a bucket of the test's own; the targets local, so every request the
/// binary sends to S3 is the state's.
fn state_only_repo(s3: &S3) -> (Repo, String) {
    let bucket = format!("{}-state", s3.prefix);
    s3.block_on(s3.client.create_bucket().bucket(&bucket).send())
        .unwrap();
    let mut repo = Repo::example();
    repo.write(
        "tenant-reconcile.hcl",
        &format!(
            "state {{\n  backend = \"s3\"\n  bucket = \"{bucket}\"\n  key = \"env/prod.json\"\n}}\ns3 {{\n  force_path_style = true\n}}\n"
        ),
    );
    repo.env = s3.env();
    repo.env.push((
        "TENANT_RECONCILE_LOG".into(),
        "tenant_reconcile=debug".into(),
    ));
    (repo, bucket)
}

/// The requests to S3 a run logged.
fn s3_requests(stderr: &str) -> usize {
    let line = stderr
        .lines()
        .find(|l| l.contains("s3 requests: "))
        .unwrap_or_else(|| panic!("no S3 requests logged:\n{stderr}"));
    let count = line.split("s3 requests: ").nth(1).unwrap();
    count
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or_else(|_| panic!("{line}"))
}

#[test]
fn a_tenants_change_writes_its_record_alone_and_its_plan_reads_its_record_alone() {
    let s3 = S3::new();
    let (repo, bucket) = state_only_repo(&s3);
    repo.apply();
    let before = etags(&s3, &bucket);
    let header = s3.get_json(&bucket, "env/prod.json");
    let acme = s3.get_json(&bucket, "env/prod.json.tenants/acme");
    let file = std::fs::read_to_string(repo.path().join("tenants/acme.yaml")).unwrap();
    repo.write("tenants/acme.yaml", &file.replace("seats: 80", "seats: 85"));

    // A plan of acme reads the header and acme's record, whatever the fleet.
    let plan_of_acme = |repo: &Repo| {
        let out = repo.run(&["plan", "--tenant", "acme"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("seats"), "{}", text(&out.stdout));
        s3_requests(&text(&out.stderr))
    };
    assert_eq!(plan_of_acme(&repo), 2);

    repo.apply();
    let after = etags(&s3, &bucket);
    let changed: Vec<&String> = after
        .iter()
        .filter(|(key, etag)| before.get(*key) != Some(etag))
        .map(|(key, _)| key)
        .collect();
    assert_eq!(
        changed,
        ["env/prod.json.tenants/acme"],
        "only acme's record was written"
    );
    let acme_after = s3.get_json(&bucket, "env/prod.json.tenants/acme");
    // Moved on by each of its writes: the step's, and the tenant's end.
    assert!(
        acme_after["generation"].as_u64() > acme["generation"].as_u64(),
        "{acme_after}"
    );
    assert_eq!(
        acme_after["tenant"]["resources"]["quotas"]["seats"],
        json!(85)
    );
    assert_eq!(s3.get_json(&bucket, "env/prod.json"), header);

    // Twenty more tenants, and the plan of acme still reads two objects; a full plan reads
    // the header, lists the records and reads each.
    add_tenants(&repo, 20);
    repo.apply();
    repo.write("tenants/acme.yaml", &file.replace("seats: 80", "seats: 86"));
    assert_eq!(plan_of_acme(&repo), 2);
    let out = repo.run(&["plan"]);
    assert_eq!(s3_requests(&text(&out.stderr)), 1 + 1 + 24);
    repo.write("tenants/acme.yaml", &file);
    repo.apply();

    // A run killed after it made tenants never wrote the header's count of them: the next
    // apply, with nothing to do, counts them again.
    let mut header = s3.get_json(&bucket, "env/prod.json");
    header["live"] = json!(3);
    s3.put(&bucket, "env/prod.json", &header.to_string());
    let out = repo.run(&["apply", "--auto-approve"]);
    assert!(
        text(&out.stdout).contains("No changes"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(s3.get_json(&bucket, "env/prod.json")["live"], json!(24));
    repo.assert_plan_empty();
}

#[test]
fn a_store_that_ignores_conditional_writes_is_refused_before_anything_is_written() {
    let careless = crate::moto::Server::start(&["--ignore-conditional-writes"]);
    let s3_careless = S3::at(&careless.endpoint);
    let (repo, bucket) = state_repo(&s3_careless);
    let out = repo.run(&["apply", "--auto-approve"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ignores conditional writes")
            && stderr.contains("`If-None-Match: *` that must fail")
            && stderr.contains("nothing was written"),
        "{stderr}"
    );
    assert!(
        s3_careless.keys(&bucket).is_empty(),
        "the lock is let go of, and no state written"
    );
    assert_eq!(
        s3_careless.buckets(),
        [bucket.as_str()],
        "no tenant's bucket was made"
    );
    // A plan only reads, and is not refused.
    let out = repo.run(&["plan"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_killed_runs_lock_is_taken_over_once_its_lease_ran_out() {
    let s3 = S3::new();
    let (repo, bucket) = state_repo_with(&s3, "  lock_lease = \"2s\"\n");
    add_tenants(&repo, 20);
    repo.kill_apply(4, 3, Duration::from_millis(0));
    // A request the run sent just before it was killed may still be on its way.
    std::thread::sleep(Duration::from_millis(500));
    let lock = s3.get_json(&bucket, "env/prod.json.lock");
    assert_eq!(lock["lease_seconds"], json!(2), "{lock}");

    // A run that does not wait is refused, told when the lock can be taken over.
    let out = repo.run(&["apply", "--auto-approve", "--lock-timeout", "0s"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("its lock is taken over from")
            && stderr.contains(&format!(
                "tenant-reconcile force-unlock {}",
                lock["id"].as_str().unwrap()
            )),
        "{stderr}"
    );
    // One that waits takes it over once it went unrenewed for two leases, and converges.
    let out = repo.run(&["apply", "--auto-approve", "--lock-timeout", "60s"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("took over the state's lock from `apply` run by"),
        "{stderr}"
    );
    let mut expected = example_buckets(&s3);
    expected.extend((0..20).map(|i| s3.bucket(&format!("bulk-{i:03}"), "eu-west-1")));
    expected.sort();
    let tenant_buckets: Vec<String> = s3.buckets().into_iter().filter(|b| *b != bucket).collect();
    assert_eq!(tenant_buckets, expected, "every bucket exactly once");
    assert!(!s3.keys(&bucket).contains(&"env/prod.json.lock".to_string()));
    repo.assert_plan_empty();
}

#[test]
fn a_run_whose_lock_another_run_took_over_stops_starting_tenants() {
    let s3 = S3::new();
    let (repo, bucket) = state_repo_with(&s3, "  lock_lease = \"1s\"\n");
    add_tenants(&repo, 40);
    stops_when_its_lock_is_lost(&repo, || {
        // The lock is written over by hand, as a run that took it over would: the first
        // run's next renewal finds another's version, and it starts no more tenants.
        let mut lock = s3.get_json(&bucket, "env/prod.json.lock");
        lock["id"] = json!("another-run");
        s3.put(&bucket, "env/prod.json.lock", &lock.to_string());
    });
    s3.delete(&bucket, "env/prod.json.lock");
    repo.apply();
    repo.assert_plan_empty();
}

#[test]
fn records_without_their_header_are_refused_not_planned_anew() {
    let s3 = S3::new();
    let (repo, bucket) = state_only_repo(&s3);
    repo.apply();
    let header = s3.get_json(&bucket, "env/prod.json");
    s3.delete(&bucket, "env/prod.json");
    let before = etags(&s3, &bucket);
    let local = repo.fingerprint();
    for args in [&["plan"][..], &["apply", "--auto-approve"]] {
        let out = repo.run(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("its header is missing, and tenants' records are there"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(etags(&s3, &bucket), before, "nothing was written");
    assert_eq!(repo.fingerprint(), local, "no tenant was touched");
    // The header put back, all is as it was.
    s3.put(&bucket, "env/prod.json", &header.to_string());
    repo.assert_plan_empty();
}

#[test]
fn an_apply_of_named_tenants_reads_and_writes_theirs_alone() {
    let s3 = S3::new();
    let (repo, bucket) = state_only_repo(&s3);
    repo.apply();
    let file = std::fs::read_to_string(repo.path().join("tenants/acme.yaml")).unwrap();
    let apply_acme = |repo: &Repo, seats: &str| {
        repo.write(
            "tenants/acme.yaml",
            &file.replace("seats: 80", &format!("seats: {seats}")),
        );
        let out = repo.run(&["apply", "--auto-approve", "--tenant", "acme"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        s3_requests(&text(&out.stderr))
    };
    let small = apply_acme(&repo, "81");
    add_tenants(&repo, 20);
    repo.apply();
    let large = apply_acme(&repo, "82");
    assert_eq!(
        small, large,
        "what an apply of acme sends grew with the fleet"
    );
    assert_eq!(
        s3.get_json(&bucket, "env/prod.json.tenants/acme")["tenant"]["resources"]["quotas"]
            ["seats"],
        json!(82)
    );

    // A tenant made by an apply of it alone is counted in the header, and a full plan
    // finds the count right.
    repo.write(
        "tenants/zeta.yaml",
        "slug: zeta\nname: Zeta\nplan: starter\nowner:\n  email: o@zeta.example\nregion: eu-west-1\n",
    );
    let out = repo.run(&["apply", "--auto-approve", "--tenant", "zeta"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(s3.get_json(&bucket, "env/prod.json")["live"], json!(25));
    repo.assert_plan_empty();
    let out = repo.run(&["apply", "--auto-approve"]);
    assert!(
        text(&out.stdout).contains("No changes"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(s3.get_json(&bucket, "env/prod.json")["live"], json!(25));
}

#[test]
fn a_tenant_released_from_the_state_leaves_its_record_and_the_count() {
    let s3 = S3::new();
    let (repo, bucket) = state_only_repo(&s3);
    repo.apply();
    repo.remove("tenants/acme.yaml");
    let out = repo.run(&["state", "rm", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        s3.keys(&bucket),
        state_objects(&["globex", "initech", "umbrella-labs"])
    );
    let header = s3.get_json(&bucket, "env/prod.json");
    assert_eq!(header["live"], json!(3), "{header}");
    assert_eq!(header["released"][0]["slug"], json!("acme"), "{header}");
    repo.assert_plan_empty();
}

//! Every problem of `tenant-reconcile.hcl` and of a plan file names the file, the line the
//! field is written on and the field's path, whatever the field and whichever check refuses
//! it: serde's (a value of the wrong type or range) or the loader's own (a bad duration).

use crate::support::{text, Repo};

/// Lines put before the block under test, so its line is not the file's first.
const LEAD: &str = "# a comment\n\n";

/// Runs validate on the example repo with `file` written as `content`: it must fail, with
/// `file:line:` and the field's path in its error, and plan must refuse it the same way.
fn refused_at(repo: &Repo, file: &str, content: &str, line: usize, field: &str) {
    repo.write(file, content);
    let out = repo.run(&["validate"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{file} with:\n{content}\n{err}");
    let place = format!("{file}:{line}:");
    let named = format!("field `{field}`");
    assert!(
        err.lines()
            .any(|l| l.contains(&place) && l.contains(&named)),
        "expected {place} … {named} for:\n{content}\ngot:\n{err}"
    );
}

/// A value of another type than the schema's: a list for a string, a string for the rest.
fn wrong_value(schema: &serde_json::Value) -> Option<&'static str> {
    let types: Vec<&str> = match &schema["type"] {
        serde_json::Value::String(t) => vec![t.as_str()],
        serde_json::Value::Array(ts) => ts.iter().filter_map(|t| t.as_str()).collect(),
        _ => return None,
    };
    if types.contains(&"string") {
        Some("[1]")
    } else if types
        .iter()
        .any(|t| ["integer", "number", "boolean", "array", "object"].contains(t))
    {
        Some("\"x\"")
    } else {
        None
    }
}

fn resolve<'a>(
    root: &'a serde_json::Value,
    schema: &'a serde_json::Value,
) -> &'a serde_json::Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap();
            &root["$defs"][name]
        }
        None => schema,
    }
}

#[test]
fn every_field_of_every_config_block_is_named_at_its_line() {
    let repo = Repo::example();
    let out = repo.run(&["schema", "config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let root: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut tried = Vec::new();
    for (block, prop) in root["properties"].as_object().unwrap() {
        let prop = resolve(&root, prop);
        if let Some(fields) = prop["properties"].as_object() {
            // `postgres { … }`
            for (field, schema) in fields {
                let Some(bad) = wrong_value(resolve(&root, schema)) else {
                    continue;
                };
                let content = format!("{LEAD}{block} {{\n  {field} = {bad}\n}}\n");
                refused_at(
                    &repo,
                    "tenant-reconcile.hcl",
                    &content,
                    4,
                    &format!("{block}.{field}"),
                );
                tried.push(format!("{block}.{field}"));
            }
        } else if let Some(each) = prop["additionalProperties"].as_object() {
            // `hook "name" { … }`
            let each = resolve(&root, &serde_json::Value::Object(each.clone())).clone();
            for (field, schema) in each["properties"].as_object().unwrap() {
                let Some(bad) = wrong_value(resolve(&root, schema)) else {
                    continue;
                };
                let content = format!("{LEAD}{block} \"one\" {{\n\n  {field} = {bad}\n}}\n");
                refused_at(
                    &repo,
                    "tenant-reconcile.hcl",
                    &content,
                    5,
                    &format!("{block}.one.{field}"),
                );
                tried.push(format!("{block}.one.{field}"));
            }
        } else if let Some(bad) = wrong_value(prop) {
            // `output_dir = …`
            let content = format!("{LEAD}\n{block} = {bad}\n");
            refused_at(&repo, "tenant-reconcile.hcl", &content, 4, block);
            tried.push(block.clone());
        }
    }
    for must in [
        "events.keep_days",
        "hook.one.retry_after",
        "hook.one.timeout",
        "check.one.expect_status",
        "postgres.max_connections",
        "route53.ttl",
        "output_dir",
    ] {
        assert!(
            tried.iter().any(|t| t == must),
            "{must} not tried: {tried:?}"
        );
    }
}

/// Values of the right type that the loader refuses: each at its own line, by its path.
#[test]
fn every_refused_config_value_is_named_at_its_line() {
    let repo = Repo::example();
    let route53 = "targets {\n  dns = \"route53\"\n}\n";
    let cases: &[(&str, &str, &str)] = &[
        ("", "events {\n  keep_days = -1 # bad\n}", "events.keep_days"),
        ("", "events {\n  retry_for = \"soon\" # bad\n}", "events.retry_for"),
        ("", "events {\n  schedule = [\"5s\", \"now\"] # bad\n}", "events.schedule[1]"),
        ("", "events {\n  parallelism = 0 # bad\n}", "events.parallelism"),
        ("", "state {\n  name = \"a b\" # bad\n}", "state.name"),
        ("", "state {\n  lock_lease = \"soon\" # bad\n}", "state.lock_lease"),
        ("", "targets {\n  data = \"mysql\" # bad\n}", "targets.data"),
        ("", "postgres {\n  schema = \"Bad-Name\" # bad\n}", "postgres.schema"),
        ("", "postgres {\n  max_connections = 0 # bad\n}", "postgres.max_connections"),
        ("", "safety {\n  max_missing_share = 2 # bad\n}", "safety.max_missing_share"),
        ("", "s3 {\n  encryption = \"rot13\" # bad\n}", "s3.encryption"),
        ("", "s3 {\n  concurrency = 0 # bad\n}", "s3.concurrency"),
        ("", "s3 {\n  request_timeout = \"soon\" # bad\n}", "s3.request_timeout"),
        ("", "rabbitmq {\n  amqp_url = \"http://x\" # bad\n}", "rabbitmq.amqp_url"),
        (route53, "route53 {\n  zone_id = \"Z1\"\n  target = \"ingress.example.com\"\n  ttl = -5 # bad\n}", "route53.ttl"),
        ("", "migrations_dir = \"../elsewhere\" # bad", "migrations_dir"),
        ("", "import = [\"acme\",\n  \"Not A Slug\" # bad\n]", "import[1]"),
        ("", "offboarding {\n  export_to = \"s3://Bad_Bucket\" # bad\n}", "offboarding.export_to"),
        (
            "",
            "hook \"billing\" {\n  on = [\"provisioned\"]\n  command = [\"./x\"]\n  retry_after = \"soon\" # bad\n}",
            "hook.billing.retry_after",
        ),
        (
            "",
            "hook \"billing\" {\n  on = [\"provisioned\"]\n  command = [\"./x\"]\n  timeout = \"0s\" # bad\n}",
            "hook.billing.timeout",
        ),
        (
            "",
            "check \"app\" {\n  http = \"https://x.example.com/\"\n  expect_status = 999 # bad\n}",
            "check.app.expect_status",
        ),
        (
            "",
            "check \"app\" {\n  sql = \"select true\"\n  timeout = \"1h\" # bad\n}",
            "check.app.timeout",
        ),
        (
            "",
            "webhook \"crm\" {\n  url = \"ftp://x\" # bad\n  secret_env = \"CRM_SECRET\"\n}",
            "webhook.crm.url",
        ),
        (
            "",
            "bus \"events\" {\n  amqp_url_env = \"AMQP_URL\"\n  exchange = \"a b\" # bad\n}",
            "bus.events.exchange",
        ),
    ];
    for (before, block, field) in cases {
        let content = format!("{LEAD}{before}{block}\n");
        let line = content.lines().position(|l| l.ends_with("# bad")).unwrap() + 1;
        refused_at(&repo, "tenant-reconcile.hcl", &content, line, field);
    }
}

#[test]
fn every_field_of_a_plan_file_is_named_at_its_line() {
    let repo = Repo::example();
    let base = std::fs::read_to_string(repo.path().join("plans/growth.hcl")).unwrap();
    let lines = base.lines().count();
    let cases: &[(&str, &str, &str)] = &[
        (
            "retention_days = 30",
            "retention_days = -1",
            "retention_days",
        ),
        (
            "isolation      = \"schema\"",
            "isolation = \"own\"",
            "isolation",
        ),
        ("  seats               = 50", "  seats = -3", "quotas.seats"),
        ("  sso            = true", "  sso = \"yes\"", "features.sso"),
        (
            "  versioning                         = true",
            "  versioning = 1",
            "bucket.versioning",
        ),
        (
            "  noncurrent_version_expiration_days = 30",
            "  noncurrent_version_expiration_days = 0",
            "bucket.noncurrent_version_expiration_days",
        ),
        (
            "description    = \"Growth: for companies running their business on the product\"",
            "description = 5",
            "description",
        ),
    ];
    for (from, to, field) in cases {
        assert!(base.contains(from), "{from:?} is not in plans/growth.hcl");
        let line = base.lines().position(|l| l == *from).unwrap() + 1;
        refused_at(
            &repo,
            "plans/growth.hcl",
            &base.replace(from, to),
            line,
            field,
        );
    }
    // Fields after the file's own: transitions, a check's.
    let more: &[(&str, &str)] = &[
        (
            "bucket {\n  transitions = [\n    { days = 90, storage_class = \"GLACIER_IR\" },\n    { days = -1, storage_class = \"GLACIER\" },\n  ]\n}",
            "bucket.transitions[1].days",
        ),
        (
            "bucket {\n  transitions = [\n    { days = 90, storage_class = \"GLACIER_IR\" },\n    { days = 120, storage_class = \"COLD\" },\n  ]\n}",
            "bucket.transitions[1].storage_class",
        ),
        ("check \"app\" {\n  http = \"https://x.example.com/\"\n  expect_status = 999\n}", "check.app.expect_status"),
        ("check \"app\" {\n  sql = \"select true\"\n  timeout = 5\n}", "check.app.timeout"),
    ];
    let without_bucket: String = base
        .split("# Each tenant's bucket")
        .next()
        .unwrap()
        .to_string();
    for (block, field) in more {
        let content = format!("{without_bucket}{block}\n");
        let line = content.lines().count() - 1 - usize::from(block.contains("transitions"));
        refused_at(&repo, "plans/growth.hcl", &content, line, field);
    }
    assert!(lines > 10);
}

#[test]
fn a_huge_number_and_a_field_written_twice_are_said_so_where_they_are() {
    let repo = Repo::example();
    let base = std::fs::read_to_string(repo.path().join("plans/growth.hcl")).unwrap();
    let line = base.lines().position(|l| l.starts_with("  seats")).unwrap() + 1;
    repo.write(
        "plans/growth.hcl",
        &base.replace(
            "seats               = 50",
            "seats = 99999999999999999999999",
        ),
    );
    let err = text(&repo.run(&["validate"]).stderr);
    assert!(
        err.contains(&format!("plans/growth.hcl:{line}:")) && err.contains("is too large"),
        "{err}"
    );
    repo.write(
        "plans/growth.hcl",
        &base.replace(
            "retention_days = 30",
            "retention_days = 30\nretention_days = 40",
        ),
    );
    let err = text(&repo.run(&["validate"]).stderr);
    let second = base
        .lines()
        .position(|l| l.starts_with("retention_days"))
        .unwrap()
        + 2;
    assert!(
        err.contains(&format!(
            "plans/growth.hcl:{second}:3: field `retention_days`: is written twice"
        )) || err.contains(&format!(
            "plans/growth.hcl:{second}:1: field `retention_days`: is written twice"
        )),
        "{err}"
    );
    repo.write(
        "tenant-reconcile.hcl",
        "hook \"b\" {\n  on = [\"provisioned\"]\n  command = [\"./x\"]\n}\n\nhook \"b\" {\n  on = [\"resumed\"]\n  command = [\"./y\"]\n}\n",
    );
    let err = text(&repo.run(&["validate"]).stderr);
    assert!(
        err.contains(
            "tenant-reconcile.hcl:6:1: field `hook.b`: is written twice (first at line 1)"
        ),
        "{err}"
    );
}

#[test]
fn a_route53_zone_id_as_aws_prints_it_is_taken() {
    let repo = Repo::example();
    repo.write(
        "tenant-reconcile.hcl",
        "targets {\n  dns = \"route53\"\n}\nroute53 {\n  zone_id = \"/hostedzone/Z0123456789ABCDEFGHIJ\"\n  target = \"ingress.example.com\"\n}\n",
    );
    let out = repo.run(&["validate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    repo.write(
        "tenant-reconcile.hcl",
        "targets {\n  dns = \"route53\"\n}\nroute53 {\n  zone_id = \"/elsewhere/Z0123\"\n  target = \"ingress.example.com\"\n}\n",
    );
    let out = repo.run(&["validate"]);
    assert!(
        text(&out.stderr).contains("tenant-reconcile.hcl:5:3: field `route53.zone_id`"),
        "{}",
        text(&out.stderr)
    );
}

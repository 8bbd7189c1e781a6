//! Hostile or malformed tenant files: each is a clear error naming the file, line and
//! field, and no command touches the state or any resource.

use crate::support::{text, Repo};

const BODY: &str = "name: Evil\nplan: growth\nowner:\n  email: x@evil.example\nregion: eu-west-1\n";

fn billion_laughs() -> String {
    let mut s = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
    let mut prev = "a";
    for n in names {
        s.push_str(&format!(
            "{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
        prev = n;
    }
    s.push_str("slug: *i\n");
    s
}

/// Writes `file` with `content` into an applied repo, then checks that validate, plan and
/// apply each fail with an error containing every one of `expect`, and change nothing.
fn refused(file: &str, content: &str, expect: &[&str]) {
    let repo = Repo::example();
    repo.apply();
    repo.write(file, content);
    let before = repo.fingerprint();
    for args in [
        &["validate"][..],
        &["plan"][..],
        &["apply", "--auto-approve"][..],
    ] {
        let out = repo.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?} on {file} should fail");
        let err = text(&out.stderr);
        for e in expect {
            assert!(
                err.contains(e),
                "{args:?} on {file}: expected {e:?} in:\n{err}"
            );
        }
        assert!(out.stdout.is_empty() || !text(&out.stdout).contains("Apply complete"));
    }
    assert_eq!(
        before,
        repo.fingerprint(),
        "bad input in {file} changed the state or a resource"
    );
}

#[test]
fn slug_with_a_quote_and_sql() {
    refused(
        "tenants/evil.yaml",
        &format!("slug: \"evil'; DROP TABLE tenants; --\"\n{BODY}"),
        &["tenants/evil.yaml:1:1: field `slug`: slug may only contain lowercase letters, digits and `-`, found '\\''"],
    );
}

#[test]
fn slug_with_a_semicolon() {
    refused(
        "tenants/evil.yaml",
        &format!("slug: \"ev;il\"\n{BODY}"),
        &["tenants/evil.yaml:1:1: field `slug`", "found ';'"],
    );
}

#[test]
fn slug_climbing_out_with_dot_dot() {
    refused(
        "tenants/evil.yaml",
        &format!("slug: ../../etc\n{BODY}"),
        &["tenants/evil.yaml:1:1: field `slug`", "found '.'"],
    );
}

#[test]
fn slug_with_a_slash() {
    refused(
        "tenants/evil.yaml",
        &format!("slug: evil/inner\n{BODY}"),
        &["field `slug`", "found '/'"],
    );
}

#[test]
fn uppercase_slug() {
    refused(
        "tenants/Evil.yaml",
        &format!("slug: Evil\n{BODY}"),
        &[
            "tenants/Evil.yaml:1:1: field `slug`",
            "found 'E'",
            "hint: a slug becomes a schema, role and bucket name",
        ],
    );
}

#[test]
fn unknown_plan() {
    refused(
        "tenants/hooli.yaml",
        "slug: hooli\nname: Hooli\nplan: platinum\nowner:\n  email: g@hooli.example\nregion: us-west-1\n",
        &["tenants/hooli.yaml:3:1: field `plan`: unknown plan \"platinum\"", "hint: plans in plans/: enterprise, growth, starter"],
    );
}

#[test]
fn slug_differs_from_file_name() {
    refused(
        "tenants/hooli.yaml",
        "slug: hooli-xyz\nname: Hooli\nplan: growth\nowner:\n  email: g@hooli.example\nregion: us-west-1\n",
        &["tenants/hooli.yaml:1:1: field `slug`: slug \"hooli-xyz\" differs from the file name \"hooli\""],
    );
}

#[test]
fn duplicate_slugs() {
    refused(
        "tenants/eu/acme.yaml",
        "slug: acme\nname: Acme again\nplan: growth\nowner:\n  email: ops@acme.example\nregion: eu-west-1\n",
        &["duplicate slug \"acme\": also defined in"],
    );
}

#[test]
fn override_of_a_flag_the_plan_does_not_declare() {
    refused(
        "tenants/hooli.yaml",
        "slug: hooli\nname: Hooli\nplan: starter\nowner:\n  email: g@hooli.example\nregion: us-west-1\nfeatures:\n  time_travel: true\n",
        &["tenants/hooli.yaml:8:3: field `features.time_travel`: plan starter declares no feature flag \"time_travel\""],
    );
}

#[test]
fn alias_bomb() {
    refused(
        "tenants/bomb.yaml",
        &billion_laughs(),
        &["tenants/bomb.yaml"],
    );
}

#[test]
fn ten_megabyte_file() {
    let big = format!(
        "slug: big\n{BODY}labels:\n  pad: \"{}\"\n",
        "x".repeat(10 * 1024 * 1024)
    );
    refused(
        "tenants/big.yaml",
        &big,
        &["tenants/big.yaml:1:1: file is 10485", "the limit is 65536"],
    );
}

#[test]
fn yaml_that_is_not_a_mapping() {
    refused(
        "tenants/list.yaml",
        "- a\n- b\n",
        &["tenants/list.yaml:1:1"],
    );
}

#[test]
fn a_symlinked_tenant_file_is_not_followed() {
    let repo = Repo::example();
    std::os::unix::fs::symlink("/etc/passwd", repo.path().join("tenants/passwd.yaml")).unwrap();
    let out = repo.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("tenants/passwd.yaml:1:1: symbolic links are not followed"));
}

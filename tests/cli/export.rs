//! `export SLUG`: a tenant's data, streamed into CSV files and object copies with a
//! manifest, checked from outside: every file against its sha256, and the tables loaded
//! back into a fresh database with psql, where they give the same rows and bytes again.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::pg::{Pg, SERVER};
use crate::support::text;

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// The manifest of the export in `dir`, with every file it names checked against its size
/// and sha256.
fn checked_manifest(dir: &Path) -> Value {
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    for entry in manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .chain(manifest["objects"].as_array().unwrap())
    {
        let file = dir.join(entry["file"].as_str().unwrap());
        assert_eq!(json!(sha256_of(&file)), entry["sha256"], "{file:?}");
    }
    manifest
}

fn export(repo: &crate::support::Repo, slug: &str, dir: &Path) -> std::process::Output {
    repo.cmd()
        .args(["export", slug, "--to"])
        .arg(dir)
        .output()
        .unwrap()
}

fn psql(db: &str, command: &str) {
    let out = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .arg(format!("{SERVER}/{db}"))
        .args(["-c", command])
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "{command}: {}", text(&out.stderr));
}

#[test]
fn an_export_of_each_isolation_mode_loads_back_with_the_same_rows_and_checksums() {
    let pg = Pg::new();
    let repo = pg.repo();
    repo.apply();
    let acme = pg.name("acme");
    // Values CSV has to quote, and a NULL.
    pg.exec(&format!(
        "INSERT INTO \"{acme}\".projects (name, description) VALUES
           ('Comma, \"quoted\"', E'two\\nlines'), ('nothing', NULL)"
    ));
    let migrations: Vec<String> = ["0001_create_projects.sql", "0002_create_settings.sql"]
        .iter()
        .map(|m| std::fs::read_to_string(repo.path().join("migrations").join(m)).unwrap())
        .collect();

    for (slug, rows) in [("acme", 3 + 2), ("globex", 1 + 2), ("initech", 1 + 2)] {
        let dir = repo.path().join(format!("export-{slug}"));
        let out = export(&repo, slug, &dir);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains(&format!("Exported {slug} to ")));
        let manifest = checked_manifest(&dir);
        assert_eq!(manifest["schema_version"], json!("0002_create_settings"));
        let total: u64 = manifest["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["rows"].as_u64().unwrap())
            .sum();
        assert_eq!(total, rows, "{slug}: {manifest:#}");

        // A fresh database with the repo's migrations takes the files back as they are.
        let fresh = format!("{}load_{}", pg.prefix, slug.replace('-', "_"));
        pg.exec_on("postgres", &format!("CREATE DATABASE \"{fresh}\""));
        for sql in &migrations {
            pg.exec_on(&fresh, sql);
        }
        if slug == "initech" {
            // Shared rows carry the tenant's id, as they were kept.
            pg.exec_on(
                &fresh,
                "ALTER TABLE projects ADD COLUMN tenant_id text; ALTER TABLE settings ADD COLUMN tenant_id text;",
            );
        }
        for t in manifest["tables"].as_array().unwrap() {
            let table = t["table"].as_str().unwrap();
            let file = dir.join(t["file"].as_str().unwrap());
            psql(
                &fresh,
                &format!(
                    "\\copy {table} FROM '{}' WITH (FORMAT csv, HEADER)",
                    file.display()
                ),
            );
            let again = dir.join(format!("{table}.again.csv"));
            psql(
                &fresh,
                &format!(
                    "\\copy {table} TO '{}' WITH (FORMAT csv, HEADER)",
                    again.display()
                ),
            );
            assert_eq!(json!(sha256_of(&again)), t["sha256"], "{slug}/{table}");
            let loaded = pg
                .query_as(
                    "postgres",
                    &fresh,
                    &format!("SELECT count(*) AS n FROM {table}"),
                )
                .unwrap();
            assert_eq!(loaded[0]["n"], t["rows"], "{slug}/{table}");
        }
    }
    // Only initech's own rows leave the shared tables.
    pg.exec(
        "SELECT set_config('app.tenant_id', 'someone-else', false);
         INSERT INTO tenants_shared.projects (name, tenant_id) VALUES ('Other tenant', 'someone-else');",
    );
    let dir = repo.path().join("export-initech-2");
    let out = export(&repo, "initech", &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let projects = std::fs::read_to_string(dir.join("tables/projects.csv")).unwrap();
    assert!(!projects.contains("Other tenant"), "{projects}");
    // An export never goes into a folder that holds something.
    let out = export(&repo, "initech", &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not empty"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_export_copies_the_buckets_objects_whatever_their_keys() {
    let s3 = crate::moto::S3::new();
    let repo = s3.repo("");
    repo.apply();
    let bucket = s3.bucket("acme", "eu-west-1");
    for (key, body) in [
        ("reports/q1.csv", "a,b\n1,2\n"),
        ("../../etc/passwd", "not a way out"),
    ] {
        s3.block_on(
            s3.client
                .put_object()
                .bucket(&bucket)
                .key(key)
                .body(aws_sdk_s3::primitives::ByteStream::from(
                    body.as_bytes().to_vec(),
                ))
                .send(),
        )
        .unwrap();
    }
    let dir = repo.path().join("export-acme");
    let out = export(&repo, "acme", &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let manifest = checked_manifest(&dir);
    let objects: Vec<(String, String, u64)> = manifest["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["key"].as_str().unwrap().to_string(),
                o["file"].as_str().unwrap().to_string(),
                o["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        objects,
        vec![
            (
                "../../etc/passwd".into(),
                "objects/%2E%2E/%2E%2E/etc/passwd".into(),
                13
            ),
            ("reports/q1.csv".into(), "objects/reports/q1.csv".into(), 8),
        ]
    );
    assert!(!repo.path().join("etc").exists());
}

#[test]
fn a_local_export_keeps_null_apart_from_empty_text_as_postgres_does() {
    let repo = crate::support::Repo::example();
    repo.apply();
    repo.query(
        "data/acme.sqlite",
        "INSERT INTO projects (name, description) VALUES ('', NULL), ('x', '')",
    );
    let dir = repo.path().join("export-acme");
    let out = export(&repo, "acme", &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let manifest = checked_manifest(&dir);
    assert_eq!(manifest["tables"][0]["rows"], json!(3));
    let projects = std::fs::read_to_string(dir.join("tables/projects.csv")).unwrap();
    assert_eq!(
        projects,
        "name,description\nBeispielprojekt,\"Willkommen, Acme Corporation\"\n\"\",\nx,\"\"\n"
    );
}

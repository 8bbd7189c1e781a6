//! Test support for the S3 target: moto's S3 server on loopback (`./scripts/test` starts
//! it and sets TENANT_RECONCILE_TEST_S3), a bucket prefix of the test's own, and an S3
//! client to check what the binary did through the S3 API itself.

use std::collections::BTreeMap;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::Client;
use serde_json::Value;

use crate::support::Repo;

pub const ENDPOINT_ENV: &str = "TENANT_RECONCILE_TEST_S3";
pub const MASTER_KEY: &str = "test-master-key-0123456789abcdef0123456789";
/// The account moto files requests under when no other is named.
pub const OTHER_ACCOUNT: &str = "333344445555";

/// A lifecycle rule as (noncurrent-version expiry days, [(transition days, storage class)]).
pub type Rule = (Option<i32>, Vec<(i32, String)>);

pub struct S3 {
    pub endpoint: String,
    /// Every bucket of this test starts with it, so tests never see each other's.
    pub prefix: String,
    pub client: Client,
    rt: tokio::runtime::Runtime,
}

impl S3 {
    pub fn new() -> S3 {
        let endpoint = std::env::var(ENDPOINT_ENV).unwrap_or_else(|_| {
            panic!(
                "the S3 tests need an S3 server and {ENDPOINT_ENV} naming it.\n  \
                 ./scripts/test installs and starts moto's server itself; by hand:\n  \
                 python3 -m venv ~/.cache/tenant-reconcile/venv && ~/.cache/tenant-reconcile/venv/bin/pip install 'moto[server]'\n  \
                 ~/.cache/tenant-reconcile/venv/bin/moto_server -H 127.0.0.1 -p 5055 &\n  \
                 {ENDPOINT_ENV}=http://127.0.0.1:5055 cargo test"
            )
        });
        S3::at(&endpoint)
    }

    /// The S3 server at `endpoint`, with a bucket prefix of this test's own.
    pub fn at(endpoint: &str) -> S3 {
        let endpoint = endpoint.to_string();
        let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .build();
        let s3 = S3 {
            endpoint,
            prefix: format!("t{id}"),
            client: Client::from_conf(config),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        // Fail here, with the hint, rather than inside the first apply.
        if let Err(e) = s3.block_on(s3.client.list_buckets().send()) {
            panic!(
                "no S3 server answers at {} ({ENDPOINT_ENV}): {}",
                s3.endpoint,
                aws_sdk_s3::error::DisplayErrorContext(e)
            );
        }
        s3
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The example repo with its buckets on this server (control plane and data stay
    /// local), `extra` lines added to the s3 block.
    pub fn repo(&self, extra: &str) -> Repo {
        let mut repo = Repo::example();
        repo.write("tenant-reconcile.hcl", &self.config(extra));
        repo.env = self.env();
        repo
    }

    pub fn config(&self, extra: &str) -> String {
        format!(
            "targets {{\n  buckets = \"s3\"\n}}\ns3 {{\n  force_path_style = true\n  bucket_prefix = \"{}\"\n{extra}}}\n",
            self.prefix
        )
    }

    /// The standard AWS variables the binary reads, pointing at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            // Keep a developer's own profile and config files out of the tests.
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("TENANT_RECONCILE_MASTER_KEY", MASTER_KEY),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The bucket a tenant of the example repo gets.
    pub fn bucket(&self, slug: &str, region: &str) -> String {
        format!("{}-{slug}-{region}", self.prefix)
    }

    /// This test's buckets, sorted.
    pub fn buckets(&self) -> Vec<String> {
        let out = self.block_on(self.client.list_buckets().send()).unwrap();
        let mut names: Vec<String> = out
            .buckets()
            .iter()
            .filter_map(|b| b.name())
            .filter(|n| n.starts_with(&self.prefix))
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }

    pub fn encryption(&self, bucket: &str) -> Option<String> {
        let out = self
            .block_on(self.client.get_bucket_encryption().bucket(bucket).send())
            .ok()?;
        let rule = out
            .server_side_encryption_configuration()?
            .rules()
            .first()?;
        Some(
            rule.apply_server_side_encryption_by_default()?
                .sse_algorithm()
                .as_str()
                .to_string(),
        )
    }

    pub fn tags(&self, bucket: &str) -> BTreeMap<String, String> {
        match self.block_on(self.client.get_bucket_tagging().bucket(bucket).send()) {
            Ok(out) => out
                .tag_set()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect(),
            Err(_) => BTreeMap::new(),
        }
    }

    /// Whether all four public-access-block switches are on.
    pub fn public_access_blocked(&self, bucket: &str) -> bool {
        let Ok(out) = self.block_on(self.client.get_public_access_block().bucket(bucket).send())
        else {
            return false;
        };
        let c = out.public_access_block_configuration().unwrap();
        [
            c.block_public_acls(),
            c.ignore_public_acls(),
            c.block_public_policy(),
            c.restrict_public_buckets(),
        ]
        .iter()
        .all(|s| *s == Some(true))
    }

    pub fn versioning(&self, bucket: &str) -> Option<String> {
        let out = self
            .block_on(self.client.get_bucket_versioning().bucket(bucket).send())
            .unwrap();
        out.status().map(|s| s.as_str().to_string())
    }

    /// The bucket's lifecycle rules, sorted.
    pub fn lifecycle(&self, bucket: &str) -> Vec<Rule> {
        let Ok(out) = self.block_on(
            self.client
                .get_bucket_lifecycle_configuration()
                .bucket(bucket)
                .send(),
        ) else {
            return Vec::new();
        };
        let mut rules: Vec<_> = out
            .rules()
            .iter()
            .map(|r| {
                (
                    r.noncurrent_version_expiration()
                        .and_then(|n| n.noncurrent_days()),
                    r.transitions()
                        .iter()
                        .map(|t| {
                            (
                                t.days().unwrap_or_default(),
                                t.storage_class().unwrap().as_str().to_string(),
                            )
                        })
                        .collect(),
                )
            })
            .collect();
        rules.sort();
        rules
    }

    pub fn policy(&self, bucket: &str) -> Option<Value> {
        let out = self
            .block_on(self.client.get_bucket_policy().bucket(bucket).send())
            .ok()?;
        serde_json::from_str(out.policy()?).ok()
    }

    /// Creates a bucket in another account, as a stranger who took the name would.
    pub fn create_as_stranger(&self, bucket: &str) {
        self.block_on(
            self.client
                .create_bucket()
                .bucket(bucket)
                .customize()
                .mutate_request(|r| {
                    r.headers_mut().insert("x-moto-account-id", OTHER_ACCOUNT);
                })
                .send(),
        )
        .unwrap();
    }

    /// Deletes a bucket behind the tool's back (it must be empty, as ours are).
    pub fn delete_bucket(&self, bucket: &str) {
        self.block_on(self.client.delete_bucket().bucket(bucket).send())
            .unwrap();
    }

    /// The keys of `bucket`'s objects, sorted.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        self.keys_under(bucket, "")
    }

    /// The keys of `bucket`'s objects that start with `prefix`, sorted.
    pub fn keys_under(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = self
            .block_on(
                self.client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(prefix)
                    .send(),
            )
            .unwrap();
        let mut keys: Vec<String> = out
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect();
        keys.sort();
        keys
    }

    /// An object's body, read as JSON.
    pub fn get_json(&self, bucket: &str, key: &str) -> Value {
        self.block_on(async {
            let out = self
                .client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap();
            serde_json::from_slice(&out.body.collect().await.unwrap().into_bytes()).unwrap()
        })
    }

    /// Writes an object behind the tool's back.
    pub fn put(&self, bucket: &str, key: &str, body: &str) {
        self.block_on(
            self.client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(body.as_bytes().to_vec().into())
                .send(),
        )
        .unwrap();
    }

    /// Deletes an object behind the tool's back.
    pub fn delete(&self, bucket: &str, key: &str) {
        self.block_on(self.client.delete_object().bucket(bucket).key(key).send())
            .unwrap();
    }
}

/// A moto server of a test's own, started with `flags` for the launcher
/// (`tests/peers/moto_server.py`) on a free loopback port, and stopped when dropped.
pub struct Server {
    pub endpoint: String,
    child: std::process::Child,
}

impl Server {
    pub fn start(flags: &[&str]) -> Server {
        let python = std::env::var("TENANT_RECONCILE_TEST_PYTHON").unwrap_or_else(|_| {
            panic!("this test starts a moto server of its own and needs the test virtualenv: run ./scripts/test, or set TENANT_RECONCILE_TEST_PYTHON to a python that has moto[server]")
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(python)
            .arg(crate::support::project_root().join("tests/peers/moto_server.py"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .args(flags)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto's server");
        let server = Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        };
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "moto's server did not start on port {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

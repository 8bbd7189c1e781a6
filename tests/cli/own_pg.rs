//! PostgreSQL servers of a test's own: `initdb` and `pg_ctl` on a free loopback port, in a
//! temporary folder, stopped and removed when the test ends. Nothing else uses them, so a
//! test may name anything there.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use tempfile::TempDir;

pub struct OwnPg {
    dir: TempDir,
    pub port: u16,
    bin: PathBuf,
    /// The user the server runs as: `postgres` when the tests run as root, whom `initdb`
    /// refuses.
    user: Option<&'static str>,
}

impl OwnPg {
    pub fn start() -> OwnPg {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("tenant-reconcile-pg")
            .tempdir()
            .unwrap();
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n");
        let user = root.unwrap_or(false).then_some("postgres");
        if let Some(user) = user {
            run(Command::new("chown").args(["-R", user]).arg(dir.path()));
        }
        let port = free_port();
        let data = dir.path().join("data");
        let server = OwnPg {
            dir,
            port,
            bin,
            user,
        };
        server.as_owner(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c wal_level=logical",
            server.dir.path().display()
        );
        let log = server.dir.path().join("log");
        server.as_owner(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
        server
    }

    /// The URL of database `db` on it, as its admin.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Rows of `sql` run as `role` on database `db`, each as a JSON object.
    pub fn query_as(&self, role: &str, db: &str, sql: &str) -> Result<Vec<Value>, String> {
        let url = format!("postgres://{role}@127.0.0.1:{}/{db}", self.port);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(crate::pg::rows_at(&url, sql))
    }

    /// `sql` (statements of any kind) run by the admin on its `postgres` database.
    pub fn exec(&self, sql: &str) {
        let url = self.url("postgres");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::raw_sql(sql)
                    .execute(&mut c)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                let _ = c.close().await;
            });
    }

    /// Whether `role` may log in here.
    pub fn logs_in(&self, role: &str) -> bool {
        self.query_as(role, "postgres", "SELECT 1").is_ok()
    }

    /// The roles on it whose names start with `prefix`, sorted.
    pub fn roles(&self, prefix: &str) -> Vec<String> {
        self.query_as(
            "postgres",
            "postgres",
            &format!(
                "SELECT rolname FROM pg_roles WHERE starts_with(rolname, '{prefix}') ORDER BY 1"
            ),
        )
        .unwrap()
        .iter()
        .map(|r| r["rolname"].as_str().unwrap().to_string())
        .collect()
    }

    fn as_owner(&self, tool: &str, args: &[&str]) {
        let path = self.bin.join(tool);
        let mut cmd = match self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        cmd.args(args);
        run(&mut cmd);
    }
}

impl Drop for OwnPg {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        self.as_owner(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}

/// Where `initdb` and `pg_ctl` are: `pg_config --bindir`, or Debian's versioned folder.
fn pg_bin() -> PathBuf {
    let from_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.join("initdb").exists());
    let debian = || {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| Some(e.ok()?.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .collect();
        found.sort();
        found.pop()
    };
    from_config.or_else(debian).unwrap_or_else(|| {
        panic!(
            "these tests start PostgreSQL servers of their own and need initdb and pg_ctl: \
             install the server (apt-get install -y postgresql) or put its bin folder on PATH"
        )
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sql` run as `role` on the server listening on `port`, from any thread.
pub fn run_as(port: u16, role: &str, sql: &str) -> Result<Vec<Value>, String> {
    let url = format!("postgres://{role}@127.0.0.1:{port}/postgres");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(crate::pg::rows_at(&url, sql))
}

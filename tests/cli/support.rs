//! Test support: a tenant repo in a temp dir, copied from the project's own example, and
//! ways to run the real binary on it and look at what it did.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

pub struct Repo {
    pub dir: TempDir,
    /// Environment every command of this repo runs with.
    pub env: Vec<(String, String)>,
}

impl Repo {
    /// A copy of the example tenant repo at the project's top level, as committed: the
    /// working tree's copy is for people to edit (the README's walk-through does), and a
    /// test must not depend on what they left there. Outside a git checkout (a packaged
    /// crate) the files are what there is.
    pub fn example() -> Repo {
        let dir = TempDir::new().expect("temp dir");
        let root = project_root();
        for sub in ["tenants", "plans", "templates", "migrations"] {
            if !copy_committed(&root, sub, &dir.path().join(sub)) {
                copy_dir(&root.join(sub), &dir.path().join(sub));
            }
        }
        Repo {
            dir,
            env: Vec::new(),
        }
    }

    /// A repo of the project's committed folder `sub` (a fixture), whole.
    pub fn fixture(sub: &str) -> Repo {
        let dir = TempDir::new().expect("temp dir");
        let root = project_root();
        if !copy_committed(&root, sub, dir.path()) {
            copy_dir(&root.join(sub), dir.path());
        }
        Repo {
            dir,
            env: Vec::new(),
        }
    }

    /// The example with its config and billing hook too (`tenant-reconcile.hcl`, `hooks/`).
    pub fn example_with_hooks() -> Repo {
        let repo = Repo::example();
        let root = project_root();
        for sub in ["hooks", "tenant-reconcile.hcl"] {
            if !copy_committed(&root, sub, &repo.path().join(sub)) {
                let from = root.join(sub);
                if from.is_dir() {
                    copy_dir(&from, &repo.path().join(sub));
                } else {
                    std::fs::copy(&from, repo.path().join(sub)).unwrap();
                }
            }
        }
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Puts the project's file `from`, as committed, at `to` in this repo.
    pub fn add_committed(&self, from: &str, to: &str) {
        if !copy_committed(&project_root(), from, &self.path().join(to)) {
            std::fs::copy(project_root().join(from), self.path().join(to)).unwrap();
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path().join(".tenant-reconcile")
    }

    /// The recorded state, as `show --json` prints it.
    pub fn state_json(&self) -> serde_json::Value {
        let out = self.run(&["show", "--json"]);
        assert!(out.status.success(), "show --json: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Everything the local state backend keeps, as text: what `show --json` prints, and
    /// every `state.*` file's bytes (SQLite keeps text as it is written), so a test can say
    /// what no part of the state holds.
    pub fn state_text(&self) -> String {
        let mut all = self.state_json().to_string();
        for entry in std::fs::read_dir(self.state_dir()).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name().to_string_lossy().starts_with("state.") {
                all.push_str(&String::from_utf8_lossy(
                    &std::fs::read(entry.path()).unwrap(),
                ));
            }
        }
        all
    }

    /// Puts the local state as `edit` leaves it, written as the one document an older
    /// tenant-reconcile wrote (as a run killed at some step left it): the next run reads
    /// it, and the first that takes the lock makes it records again.
    pub fn edit_state(&self, edit: impl FnOnce(&mut serde_json::Value)) {
        let mut state = self.state_json();
        edit(&mut state);
        for file in ["state.db", "state.db-wal", "state.db-shm"] {
            let _ = std::fs::remove_file(self.state_dir().join(file));
        }
        std::fs::write(
            self.state_dir().join("state.json"),
            serde_json::to_string_pretty(&state).unwrap(),
        )
        .unwrap();
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// Writes `tenants/<slug>.yaml`: a growth-plan tenant in eu-west-1, named by its slug.
    pub fn write_tenant(&self, slug: &str) {
        self.write(
            &format!("tenants/{slug}.yaml"),
            &format!("slug: {slug}\nname: {slug}\nplan: growth\nowner:\n  email: o@{slug}.example\nregion: eu-west-1\n"),
        );
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.path().join(rel)).unwrap();
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("tenant-reconcile").unwrap();
        c.arg("-C").arg(self.path());
        c.env_remove("TENANT_RECONCILE_MASTER_KEY");
        c.env("NO_COLOR", "1");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// [`Repo::cmd`] as a `std` command, for a run to spawn and wait for.
    pub fn process(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("tenant-reconcile"));
        c.arg("-C").arg(self.path());
        c.env_remove("TENANT_RECONCILE_MASTER_KEY");
        c.env("NO_COLOR", "1");
        c.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    pub fn apply(&self) -> Output {
        self.apply_with(&[])
    }

    /// `apply --auto-approve` with `extra` arguments, which must succeed.
    pub fn apply_with(&self, extra: &[&str]) -> Output {
        let out = self.run(&[&["apply", "--auto-approve"], extra].concat());
        assert!(
            out.status.success(),
            "apply failed:\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        out
    }

    /// `apply --auto-approve`, which must succeed and say `said`; returns what it printed.
    pub fn apply_saying(&self, said: &str) -> String {
        let out = text(&self.apply().stdout);
        assert!(out.contains(said), "apply did not say {said:?}:\n{out}");
        out
    }

    /// `apply --auto-approve --parallelism N` running in the background, its progress lines
    /// (stderr) on a pipe to read from.
    pub fn spawn_apply(&self, parallelism: usize) -> std::process::Child {
        self.process()
            .args(["apply", "--auto-approve"])
            .args(["--parallelism", &parallelism.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Starts an apply and kills it with SIGKILL (no destructor, no cleanup, no chance to
    /// write anything more) after `after_lines` progress lines and `delay` more.
    pub fn kill_apply(&self, parallelism: usize, after_lines: usize, delay: std::time::Duration) {
        use std::io::{BufRead, BufReader};
        let mut child = self.spawn_apply(parallelism);
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        for _ in 0..after_lines {
            if lines.next().is_none() {
                break;
            }
        }
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        eprintln!("killed after {after_lines} lines and {delay:?}: {status:?}");
    }

    /// Terraform's acceptance rule: right after an apply, the plan is empty.
    pub fn assert_plan_empty(&self) {
        let out = self.run(&["plan", "--detailed-exitcode"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "after applying, the plan was not empty:\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(text(&out.stdout).contains("No changes."));
    }

    /// Every file under the local target with its checksum: equal fingerprints before and
    /// after a command mean the command changed nothing.
    pub fn fingerprint(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let root = self.state_dir();
        if root.exists() {
            walk(&root, &root, &mut out);
        }
        out
    }

    /// Rows of a query against one of the local target's SQLite files, as strings.
    pub fn query(&self, db: &str, sql: &str) -> Vec<Vec<String>> {
        let path = self.state_dir().join(db);
        let sql = sql.to_string();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                use sqlx::Row;
                let url = format!("sqlite://{}?mode=rw", path.display());
                let pool = sqlx::SqlitePool::connect(&url).await.expect("open sqlite");
                let rows = sqlx::query(&sql).fetch_all(&pool).await.expect("query");
                let out = rows
                    .iter()
                    .map(|r| {
                        (0..r.columns().len())
                            .map(|i| {
                                r.try_get::<Option<i64>, _>(i)
                                    .map(|v| v.map(|v| v.to_string()))
                                    .or_else(|_| r.try_get::<Option<String>, _>(i))
                                    .ok()
                                    .flatten()
                                    .unwrap_or_else(|| "NULL".into())
                            })
                            .collect()
                    })
                    .collect();
                pool.close().await;
                out
            })
    }

    pub fn count(&self, db: &str, sql: &str) -> i64 {
        self.query(db, sql)[0][0].parse().unwrap()
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        // The lock file's content is its holder, rewritten by every locking command; the
        // SQLite shared-memory index changes on any read.
        if name.ends_with(".lock") || name.ends_with("-shm") {
            continue;
        }
        if p.is_dir() {
            walk(root, &p, out);
        } else if (name.ends_with("-wal") || name.ends_with(".journal"))
            && std::fs::metadata(&p).unwrap().len() == 0
        {
            // SQLite creates an empty write-ahead log when a reader opens a WAL database,
            // and the state lock opens its (empty) checkpoint journal: neither holds data.
            continue;
        } else {
            let bytes = std::fs::read(&p).unwrap();
            out.insert(
                p.strip_prefix(root).unwrap().display().to_string(),
                hex::encode(Sha256::digest(&bytes)),
            );
        }
    }
}

/// The project's folder, as cargo gives it when it runs the tests. Read at run time, not
/// baked in: clones that share one build folder may reuse a test binary built in another
/// clone, which may be gone.
pub fn project_root() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

/// The project's folder `sub` as committed, in a temp dir of its own (its working tree
/// copy outside a git checkout): what a test reads of the project, whatever a person has
/// edited there.
pub fn committed(sub: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new().expect("temp dir");
    let to = dir.path().join(sub);
    if !copy_committed(&project_root(), sub, &to) {
        copy_dir(&project_root().join(sub), &to);
    }
    (dir, to)
}

/// Writes the folder `sub` of the project as its git HEAD has it into `to`; false when the
/// project is not a git checkout or HEAD has no such folder.
fn copy_committed(root: &Path, sub: &str, to: &Path) -> bool {
    let Ok(repo) = git2::Repository::discover(root) else {
        return false;
    };
    let (Some(workdir), Ok(head)) = (repo.workdir(), repo.head()) else {
        return false;
    };
    let Ok(tree) = head.peel_to_tree() else {
        return false;
    };
    let Ok(root) = root.canonicalize() else {
        return false;
    };
    let workdir = workdir
        .canonicalize()
        .unwrap_or_else(|_| workdir.to_path_buf());
    let Ok(prefix) = root.strip_prefix(&workdir) else {
        return false;
    };
    let Ok(entry) = tree.get_path(&prefix.join(sub)) else {
        return false;
    };
    if entry.kind() == Some(git2::ObjectType::Blob) {
        let blob = entry.to_object(&repo).unwrap().peel_to_blob().unwrap();
        write_blob(to, blob.content(), entry.filemode());
        return true;
    }
    let Ok(folder) = entry.to_object(&repo).and_then(|o| o.peel_to_tree()) else {
        return false;
    };
    folder
        .walk(git2::TreeWalkMode::PreOrder, |parent, e| {
            if let (Some(name), Some(git2::ObjectType::Blob)) = (e.name(), e.kind()) {
                let blob = e.to_object(&repo).unwrap().peel_to_blob().unwrap();
                write_blob(&to.join(parent).join(name), blob.content(), e.filemode());
            }
            git2::TreeWalkResult::Ok
        })
        .is_ok()
}

/// A file as git has it, executable when git says so (a hook script).
fn write_blob(path: &Path, content: &[u8], mode: i32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
    if mode == 0o100755 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// Output with the temp dir's path replaced, for snapshots.
pub fn redact(repo: &Repo, s: &str) -> String {
    s.replace(&repo.path().display().to_string(), "[REPO]")
}

/// The path a test's HTTP server was asked for: the request line read, and its headers to
/// their end (or the connection's: a client killed mid-request says nothing more). `None`
/// when the client sent nothing.
pub fn request_path(stream: &std::net::TcpStream) -> Option<String> {
    use std::io::{BufRead, BufReader};
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    if !matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
        return None;
    }
    let mut header = String::new();
    while matches!(reader.read_line(&mut header), Ok(n) if n > 0) && header != "\r\n" {
        header.clear();
    }
    line.split_whitespace().nth(1).map(str::to_string)
}

/// Answers a test's HTTP request with `status` and no body.
pub fn respond(mut stream: std::net::TcpStream, status: u16) {
    use std::io::Write;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

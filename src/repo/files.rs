//! Where a tenant repo's files are read from: the working tree, or a commit (`--rev`),
//! read straight from git's objects without a checkout.
//!
//! Both are read the same careful way: only regular files, hidden entries skipped, symbolic
//! links reported and never followed, every file bounded in size and required to be UTF-8.

pub use crate::clients::fs::read_at_most;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use super::LoadError;
use crate::diagnostic::{display_path, Diagnostic, Diagnostics};

pub enum Files {
    WorkingTree,
    Commit(Snapshot),
}

/// The files of a commit below the tenant repo, by their path as if checked out. Each
/// file's content is read from git's objects when it is read: a plan of one tenant of a
/// large fleet reads that tenant's file, not every file it lists.
pub struct Snapshot {
    /// The full id of the commit the revision names.
    pub commit: String,
    /// The tenant repo's folder as checked out, which the paths asked for are in.
    root: PathBuf,
    // Each by its path within the tenant repo as text (`tenants/acme.yaml`), in byte order:
    // a listing is a range of it, and 100,000 keys compare as bytes, not path components.
    files: BTreeMap<String, git2::Oid>,
    links: BTreeSet<String>,
    dirs: BTreeSet<String>,
    /// Where the contents are read from (a repository is read from one thread at a time).
    git: std::sync::Mutex<git2::Repository>,
    /// The tenant repo's folder within the git repository.
    inside: PathBuf,
}

impl Files {
    /// The files of `rev` (a commit, branch or tag) for the tenant repo at `root`, which
    /// may be a folder inside a bigger git repository.
    pub fn at_revision(root: &Path, rev: &str) -> Result<Files, LoadError> {
        let fail = |message: String| LoadError::Git {
            rev: rev.to_string(),
            message,
        };
        let (git, inside) = open_git(root).map_err(fail)?;
        let found = git
            .revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map_err(|e| fail(format!("no commit by that name: {}", e.message())))?;
        let mut tree = found.tree().map_err(|e| fail(e.message().to_string()))?;
        if !inside.as_os_str().is_empty() {
            let entry = tree.get_path(&inside).map_err(|_| {
                fail(format!(
                    "{} does not exist in that commit",
                    inside.display()
                ))
            })?;
            tree = entry
                .to_object(&git)
                .and_then(|o| o.peel_to_tree())
                .map_err(|e| fail(e.message().to_string()))?;
        }
        let commit = found.id().to_string();
        // Gathered as they come and made maps at once (a map built from its entries sorts
        // them once), not inserted one by one.
        let mut files = Vec::new();
        let mut links = BTreeSet::new();
        let mut dirs = BTreeSet::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            let Some(name) = entry.name() else {
                return git2::TreeWalkResult::Skip;
            };
            // `dir` ends with its `/`.
            let mut path = String::with_capacity(dir.len() + name.len());
            path.push_str(dir);
            path.push_str(name);
            match entry.kind() {
                Some(git2::ObjectType::Tree) => {
                    dirs.insert(path);
                }
                Some(git2::ObjectType::Blob) if entry.filemode() == 0o120000 => {
                    links.insert(path);
                }
                // Only what the loader reads: a commit may hold large files that are no input.
                Some(git2::ObjectType::Blob) if !maybe_input(&path) => {}
                Some(git2::ObjectType::Blob) => files.push((path, entry.id())),
                // Submodules and the like are not tenant repo inputs.
                _ => {}
            }
            git2::TreeWalkResult::Ok
        })
        .map_err(|e| fail(e.message().to_string()))?;
        drop((tree, found));
        Ok(Files::Commit(Snapshot {
            commit,
            root: root.to_path_buf(),
            files: files.into_iter().collect(),
            links,
            dirs,
            git: std::sync::Mutex::new(git),
            inside,
        }))
    }

    /// Runs `read` with the git repository the files are in and the tenant repo's folder
    /// within it: the snapshot's own for a commit (what it read is cached there), else one
    /// opened for the working tree at `root`.
    pub fn with_git<T>(
        &self,
        root: &Path,
        read: impl FnOnce(&git2::Repository, &Path) -> T,
    ) -> Result<T, String> {
        match self {
            Files::Commit(s) => Ok(read(&s.git.lock().expect("never poisoned"), &s.inside)),
            Files::WorkingTree => {
                let (git, inside) = open_git(root)?;
                Ok(read(&git, &inside))
            }
        }
    }

    /// The commit the files come from, when they come from one.
    pub fn commit(&self) -> Option<&str> {
        match self {
            Files::WorkingTree => None,
            Files::Commit(s) => Some(&s.commit),
        }
    }

    pub fn is_dir(&self, path: &Path) -> bool {
        match self {
            Files::WorkingTree => path.is_dir(),
            Files::Commit(s) => s.key(path).is_some_and(|k| s.dirs.contains(&k)),
        }
    }

    fn is_file(&self, path: &Path) -> bool {
        match self {
            Files::WorkingTree => path.exists(),
            Files::Commit(s) => s.key(path).is_some_and(|k| s.files.contains_key(&k)),
        }
    }

    /// Regular files below `dir`, sorted, skipping hidden entries. Symbolic links are
    /// reported, not followed: a link could lead outside the repo.
    pub fn list(
        &self,
        root: &Path,
        dir: &Path,
        problems: &mut Diagnostics,
    ) -> Result<Vec<PathBuf>, LoadError> {
        let link = |path: &Path| {
            Diagnostic::new(display_path(root, path), "symbolic links are not followed")
                .hint("put the file itself in the repo")
        };
        let Files::Commit(s) = self else {
            return list_dir(dir, &link, problems);
        };
        let Some(prefix) = s.key(dir).map(|k| format!("{k}/")) else {
            return Ok(Vec::new());
        };
        // Hidden by the text of the path below `dir`, as the working tree's listing skips.
        let shown = |k: &str| !k[prefix.len()..].split('/').any(|c| c.starts_with('.'));
        let below = |keys: &mut dyn Iterator<Item = &String>| -> Vec<PathBuf> {
            keys.skip_while(|k| !k.starts_with(&prefix))
                .take_while(|k| k.starts_with(&prefix))
                .filter(|k| shown(k))
                .map(|k| s.root.join(k))
                .collect()
        };
        for path in below(&mut s.links.range(prefix.clone()..)) {
            problems.push(link(&path));
        }
        Ok(below(&mut s.files.range(prefix.clone()..).map(|(k, _)| k)))
    }

    /// A file that may be absent (the config). A link is refused, not followed: silently
    /// reading no config would mean the local target instead of the configured servers.
    pub fn read_optional(&self, root: &Path, path: &Path) -> Result<Option<String>, LoadError> {
        let link = match self {
            Files::WorkingTree => path
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink()),
            Files::Commit(s) => s.key(path).is_some_and(|k| s.links.contains(&k)),
        };
        if link {
            return Err(LoadError::Invalid(Diagnostics(vec![Diagnostic::new(
                display_path(root, path),
                "symbolic links are not followed",
            )
            .hint("put the file itself in the repo")])));
        }
        if !self.is_file(path) {
            return Ok(None);
        }
        let mut problems = Diagnostics::default();
        match self.read_bounded(root, path, super::MAX_OTHER_FILE_BYTES, &mut problems) {
            Some(s) => Ok(Some(s)),
            None => Err(LoadError::Invalid(problems)),
        }
    }

    /// Reads a file only if it is at most `limit` bytes and UTF-8.
    pub fn read_bounded(
        &self,
        root: &Path,
        path: &Path,
        limit: u64,
        problems: &mut Diagnostics,
    ) -> Option<String> {
        let file = display_path(root, path);
        let bytes = match self {
            Files::WorkingTree => {
                // A huge file costs one byte past the limit to read, and is then measured
                // for the message.
                let read = read_at_most(path, limit).map(|bytes| {
                    if bytes.len() as u64 > limit {
                        Err(fs::metadata(path).map_or(limit + 1, |m| m.len()))
                    } else {
                        Ok(bytes)
                    }
                });
                match read {
                    Ok(Ok(bytes)) => bytes,
                    Ok(Err(len)) => {
                        problems.push(too_big(&file, len, limit));
                        return None;
                    }
                    Err(e) => {
                        problems.push(Diagnostic::new(&file, format!("cannot read: {e}")));
                        return None;
                    }
                }
            }
            Files::Commit(s) => {
                let Some(id) = s.key(path).and_then(|k| s.files.get(&k)) else {
                    problems.push(Diagnostic::new(&file, "not in the commit"));
                    return None;
                };
                let git = s.git.lock().expect("never poisoned");
                let blob = match git.find_blob(*id) {
                    Ok(blob) => blob,
                    Err(e) => {
                        problems.push(Diagnostic::new(
                            &file,
                            format!("cannot read from git: {}", e.message()),
                        ));
                        return None;
                    }
                };
                if blob.size() as u64 > limit {
                    problems.push(too_big(&file, blob.size() as u64, limit));
                    return None;
                }
                blob.content().to_vec()
            }
        };
        match String::from_utf8(bytes) {
            Ok(s) => Some(s),
            Err(e) => {
                problems.push(Diagnostic::new(
                    &file,
                    format!(
                        "file is not UTF-8 text (byte {})",
                        e.utf8_error().valid_up_to()
                    ),
                ));
                None
            }
        }
    }
}

/// The git repository the tenant repo at `root` is in, and the tenant repo's folder
/// within it ("" when it is the whole repository).
pub fn open_git(root: &Path) -> Result<(git2::Repository, PathBuf), String> {
    // libgit2 hashes every object it reads again to check it (with SHA-1's collision
    // detection, slowly): the tree of a 100,000-tenant folder is 4 MB, read by every plan
    // of a pull request. git itself checks objects when they arrive, and in `fsck`.
    // And a tree that large is kept once read (libgit2 keeps none above 4 KB), so a plan of
    // a revision and its comparison with a base read it once.
    static SETTINGS: std::sync::Once = std::sync::Once::new();
    SETTINGS.call_once(|| {
        git2::opts::strict_hash_verification(false);
        // SAFETY: set once, before any repository of this process is opened.
        let _ = unsafe { git2::opts::set_cache_object_limit(git2::ObjectType::Tree, 64 << 20) };
    });
    let git = git2::Repository::discover(root).map_err(|e| {
        format!(
            "{} is not in a git repository: {}",
            root.display(),
            e.message()
        )
    })?;
    let workdir = git
        .workdir()
        .ok_or("the git repository has no working tree")?
        .canonicalize()
        .map_err(|e| e.to_string())?;
    let inside = root
        .canonicalize()
        .map_err(|e| e.to_string())?
        .strip_prefix(&workdir)
        .map_err(|_| "the tenant repo is outside the git working tree".to_string())?
        .to_path_buf();
    Ok((git, inside))
}

/// Whether a path (relative to the tenant repo) may be read by the loader: under the
/// input folders, the config, or SQL anywhere (the migrations folder is configurable).
impl Snapshot {
    /// `path` (in the tenant repo as checked out) as the snapshot keys it.
    fn key(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.root).ok()?;
        let parts: Vec<&str> = rel
            .components()
            .map(|c| c.as_os_str().to_str())
            .collect::<Option<_>>()?;
        Some(parts.join("/"))
    }
}

fn maybe_input(rel: &str) -> bool {
    // A path in a git tree: its separator is `/` on every system.
    rel == super::config::CONFIG_FILE
        || rel.ends_with(".sql")
        || ["tenants/", "plans/", "templates/"]
            .iter()
            .any(|dir| rel.starts_with(dir))
}

fn too_big(file: &str, len: u64, limit: u64) -> Diagnostic {
    Diagnostic::new(file, format!("file is {len} bytes; the limit is {limit}"))
        .hint("this is far larger than any real input; check what wrote it")
}

/// Regular files below `dir` in the working tree.
fn list_dir(
    dir: &Path,
    link: &dyn Fn(&Path) -> Diagnostic,
    problems: &mut Diagnostics,
) -> Result<Vec<PathBuf>, LoadError> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LoadError::Io { path, source }
    };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).map_err(io(&d))? {
            let entry = entry.map_err(io(&d))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let ty = entry.file_type().map_err(io(&path))?;
            if ty.is_symlink() {
                problems.push(link(&path));
            } else if ty.is_dir() {
                stack.push(path);
            } else if ty.is_file() {
                out.push(path);
            }
        }
    }
    // By the bytes of each path, not path by path: comparing components was half of what
    // listing 99,999 tenant files cost. (Any fixed order does: the loader sorts what it reads.)
    out.sort_unstable_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
    Ok(out)
}

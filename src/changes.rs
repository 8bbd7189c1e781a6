//! `plan --changed-since BASE`: the tenants whose inputs changed between BASE and the head,
//! and which changed files pulled each one in.
//!
//! The comparison starts from the merge-base of BASE and the head, as a pull request's diff
//! does, so commits that landed on BASE meanwhile are not the pull request's changes. A
//! tenant file reaches its tenant; a plan file every tenant on that plan (at the head); a
//! template, a migration or the config every tenant.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crate::repo::config::{is_input_of, Config};
use crate::repo::{LoadError, TenantRepo};
use crate::slug::Slug;

/// What changed between the merge-base and the head, and what it reaches.
#[derive(Debug, Clone, Default)]
pub struct ChangeSet {
    /// The merge-base commit the head is compared with.
    pub base: String,
    /// Changed input files, relative to the tenant repo, sorted, each with git's status
    /// letter (`A` added, `M` modified, `D` deleted, `R` renamed).
    pub files: Vec<(char, String)>,
    /// Each tenant reached, with the changed files that pulled it in.
    pub reasons: BTreeMap<Slug, Vec<String>>,
}

impl ChangeSet {
    pub fn tenants(&self) -> Vec<Slug> {
        self.reasons.keys().cloned().collect()
    }

    /// How many tenants each changed file reaches, in file order.
    pub fn reach(&self) -> Vec<(String, usize)> {
        self.files
            .iter()
            .map(|(_, f)| {
                let n = self.reasons.values().filter(|r| r.contains(f)).count();
                (f.clone(), n)
            })
            .collect()
    }
}

/// The input files that changed between the merge-base and the head, before any tenant file
/// is read: what they reach is found once the tenants they name are loaded.
#[derive(Debug, Clone, Default)]
pub struct ChangedFiles {
    /// The merge-base commit the head is compared with.
    pub base: String,
    /// As [`ChangeSet::files`].
    pub files: Vec<(char, String)>,
    /// The slugs of the changed tenant files, by their names, on either side of a rename.
    slugs: BTreeSet<String>,
    /// Whether every changed file is a tenant file.
    only_tenant_files: bool,
}

impl ChangedFiles {
    /// The tenants whose files changed, when nothing else did: a plan of them needs their
    /// files and records and no other tenant's. `None` when a plan, template, migration or
    /// the config changed, which reach tenants by what their files say.
    pub fn tenant_files_only(&self) -> Option<BTreeSet<String>> {
        self.only_tenant_files.then(|| self.slugs.clone())
    }

    /// The tenants (with a file at the head, in `repo`) the changed files reach.
    pub fn reach(self, repo: &TenantRepo) -> ChangeSet {
        let mut set = ChangeSet {
            base: self.base,
            files: self.files,
            reasons: BTreeMap::new(),
        };
        // Looked up once per changed file, however many tenant files a change renames.
        let by_file: HashMap<PathBuf, &Slug> = repo
            .tenants
            .iter()
            .map(|t| (PathBuf::from(&t.file), &t.slug))
            .collect();
        for (status, path) in &set.files {
            for slug in reached(path, *status, repo, &by_file) {
                set.reasons.entry(slug).or_default().push(path.clone());
            }
        }
        set
    }
}

impl ChangedFiles {
    /// The changed inputs tenants share (plan files, templates, migrations): neither a
    /// tenant's own file nor the config.
    pub fn shared(&self) -> Vec<String> {
        self.files
            .iter()
            .map(|(_, path)| path)
            .filter(|p| crate::repo::config::is_shared_input(Path::new(p)))
            .cloned()
            .collect()
    }
}

/// The tenants of `repo` that changed shared inputs (`files`, from
/// [`ChangedFiles::shared`]) reach: a plan file its plan's tenants, anything else all.
pub fn reached_by(files: &[String], repo: &TenantRepo) -> BTreeSet<Slug> {
    let none = HashMap::new();
    files
        .iter()
        .flat_map(|f| reached(f, 'M', repo, &none))
        .collect()
}

/// Compares the merge-base of `base` and the head with the head, and finds the tenants of
/// `repo` the changes reach: [`changed_files`], then [`ChangedFiles::reach`].
pub fn changed_since(
    root: &Path,
    base: &str,
    head_rev: Option<&str>,
    repo: &TenantRepo,
) -> Result<ChangeSet, LoadError> {
    let files = crate::repo::Files::WorkingTree;
    Ok(changed_files(root, base, head_rev, &repo.config, &files)?.reach(repo))
}

/// Compares the merge-base of `base` and the head with the head: the commit `head_rev`
/// names, or the working tree (committed or not) when it is `None`. Only the inputs
/// `config` names are compared. `files` are those the repo is read from: a commit's are
/// compared in the repository they were read from, whose trees are read already.
pub fn changed_files(
    root: &Path,
    base: &str,
    head_rev: Option<&str>,
    config: &Config,
    files: &crate::repo::Files,
) -> Result<ChangedFiles, LoadError> {
    let fail = |message: String| LoadError::Git {
        rev: base.to_string(),
        message,
    };
    files
        .with_git(root, |git, inside| {
            compare(git, inside, base, head_rev, config)
        })
        .map_err(fail)?
}

fn compare(
    git: &git2::Repository,
    inside: &Path,
    base: &str,
    head_rev: Option<&str>,
    config: &Config,
) -> Result<ChangedFiles, LoadError> {
    let fail = |message: String| LoadError::Git {
        rev: base.to_string(),
        message,
    };
    let commit_of = |rev: &str| {
        git.revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map_err(|e| LoadError::Git {
                rev: rev.to_string(),
                message: format!("no commit by that name: {}", e.message()),
            })
    };
    let base_commit = commit_of(base)?;
    let head_commit = commit_of(head_rev.unwrap_or("HEAD"))?;
    let merge_base = git
        .merge_base(base_commit.id(), head_commit.id())
        .map_err(|e| fail(format!("no common ancestor with the head: {}", e.message())))?;
    let base_tree = git
        .find_commit(merge_base)
        .and_then(|c| c.tree())
        .map_err(|e| fail(e.message().to_string()))?;

    let mut opts = git2::DiffOptions::new();
    opts.include_untracked(true).recurse_untracked_dirs(true);
    // Only the input folders and the config are compared: untracked files elsewhere (the
    // local target's folder when the repo does not ignore it, 100k files for a large fleet)
    // would be walked, and read as candidates for renames, for nothing.
    for dir in config.input_dirs() {
        opts.pathspec(inside.join(dir));
    }
    opts.pathspec(inside.join(crate::repo::config::CONFIG_FILE));
    let mut diff = match head_rev {
        Some(_) => {
            let head_tree = head_commit
                .tree()
                .map_err(|e| fail(e.message().to_string()))?;
            git.diff_tree_to_tree(Some(&base_tree), Some(&head_tree), Some(&mut opts))
        }
        None => git.diff_tree_to_workdir_with_index(Some(&base_tree), Some(&mut opts)),
    }
    .map_err(|e| fail(e.message().to_string()))?;
    // A renamed tenant file reads as one rename, not a delete and an add.
    let _ = diff.find_similar(Some(git2::DiffFindOptions::new().renames(true)));
    tracing::debug!(
        files = diff.deltas().len(),
        "compared the input files with the base"
    );

    let relative = |p: Option<&Path>| -> Option<String> {
        let p = p?;
        let rel = p.strip_prefix(inside).ok()?;
        Some(rel.to_string_lossy().replace('\\', "/"))
    };
    let mut set = ChangedFiles {
        base: merge_base.to_string(),
        only_tenant_files: true,
        ..ChangedFiles::default()
    };
    let inputs = config.input_dirs();
    // A tenant file is a YAML file under tenants/ and under no other input folder (a
    // migrations folder may be set inside it).
    let others: Vec<&PathBuf> = inputs
        .iter()
        .filter(|d| **d != Path::new("tenants"))
        .collect();
    let is_tenant_file =
        |p: &str| tenant_slug(p).is_some() && !others.iter().any(|d| Path::new(p).starts_with(d));

    for delta in diff.deltas() {
        let status = match delta.status() {
            git2::Delta::Added | git2::Delta::Untracked => 'A',
            git2::Delta::Deleted => 'D',
            git2::Delta::Renamed => 'R',
            git2::Delta::Modified | git2::Delta::Typechange | git2::Delta::Copied => 'M',
            _ => continue,
        };
        let new = relative(delta.new_file().path());
        let old = relative(delta.old_file().path());
        let path = match (status, &new, &old) {
            ('D', _, Some(old)) => old.clone(),
            (_, Some(new), _) => new.clone(),
            _ => continue,
        };
        let is_input = |p: &str| is_input_of(&inputs, Path::new(p));
        // A tenant file's slug, from either side: a plan of the files changed reads both
        // tenants of a rename (the old one is left an orphan).
        for side in [&new, &old].into_iter().flatten() {
            if let Some(slug) = tenant_slug(side).filter(|_| is_tenant_file(side)) {
                set.slugs.insert(slug.to_string());
            }
        }
        if !is_input(&path) {
            // Moved out of the inputs (tenants/acme.yaml → archive/acme.yaml): to the repo
            // the file is gone, so it is listed as deleted where it was.
            if let ('R', Some(old)) = (status, &old) {
                if is_input(old) {
                    set.only_tenant_files &= is_tenant_file(old);
                    set.files.push(('D', old.clone()));
                }
            }
            continue;
        }
        // Moved in from elsewhere (archive/acme.yaml → tenants/acme.yaml): a new input.
        let status = match (status, &old) {
            ('R', Some(old)) if !is_input(old) => 'A',
            _ => status,
        };
        set.only_tenant_files &= is_tenant_file(&path);
        set.files.push((status, path));
    }
    set.files.sort_by(|a, b| a.1.cmp(&b.1));
    set.files.dedup();
    Ok(set)
}

/// The slug of a file under `tenants/`, by its name: `tenants/eu/acme.yaml` is acme's.
fn tenant_slug(path: &str) -> Option<&str> {
    let name = path.strip_prefix("tenants/")?.rsplit('/').next()?;
    crate::repo::slug_of_file_name(name)
}

/// The tenants (with a file at the head) a changed input reaches.
fn reached(
    path: &str,
    status: char,
    repo: &TenantRepo,
    by_file: &HashMap<PathBuf, &Slug>,
) -> Vec<Slug> {
    let all = || repo.tenants.iter().map(|t| t.slug.clone()).collect();
    if let Some(name) = path.strip_prefix("tenants/") {
        // A deleted tenant file reaches nobody here: its tenant is an orphan, which every
        // plan reports and no apply touches.
        if status == 'D' {
            return Vec::new();
        }
        let file = PathBuf::from("tenants").join(name);
        return by_file
            .get(&file)
            .map(|s| (*s).clone())
            .into_iter()
            .collect();
    }
    if path.starts_with("plans/") {
        // Plans are named by their file name, wherever under plans/ the file is.
        let file = Path::new(path)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        let plan = file.strip_suffix(".hcl").unwrap_or(file);
        return repo
            .tenants
            .iter()
            .filter(|t| t.plan == plan)
            .map(|t| t.slug.clone())
            .collect();
    }
    all()
}

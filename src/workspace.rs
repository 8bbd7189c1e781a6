//! A tenant repo opened for work: its files, where its state lives, and its targets.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::credentials::{KeySource, MasterKey, MASTER_KEY_ENV};
use std::sync::Arc;

use crate::clients::postgres::PgServer;
use crate::configured::Targets;
use crate::export::exporter::Exporter;
use crate::repo::{self, Migration, TenantRepo};
use crate::state::local::LocalBackend;
use crate::state::postgres::PgBackend;
use crate::state::s3::S3Backend;
use crate::state::{State, StateBackend};
use crate::targets;
use crate::targets::buckets::s3::S3Store;
use crate::targets::data::Naming;
use crate::targets::files::local::RenderedFiles;
use crate::targets::provider::Provider;
use crate::targets::unconfigured::Unconfigured;
use crate::Error;

pub use crate::plan::Uncommitted;

pub struct Workspace {
    pub repo: TenantRepo,
    /// The local target's folder.
    pub local_dir: PathBuf,
    pub output_dir: PathBuf,
    /// The commit the files come from: `--rev`'s, or HEAD of the git repository the tenant
    /// repo is in, if it is in one.
    pub git_commit: Option<String>,
    /// The revision the files were read at (`--rev`), or `None` for the working tree.
    pub rev: Option<String>,
    local_key: PathBuf,
    /// The server of the postgres targets and state backend; it connects on first use.
    postgres: Arc<PgServer>,
    /// The S3 store of the s3 target and state backend; it loads credentials on first use.
    s3: Arc<S3Store>,
}

impl Workspace {
    pub fn open(root: &Path) -> Result<Workspace, Error> {
        Workspace::open_at(root, None)
    }

    /// Opens the tenant repo at `root` as committed at `rev` (a commit, branch or tag),
    /// read from git's objects, or as in the working tree when `rev` is `None`. The state
    /// and the local target are never in git; they are always the working tree's.
    pub fn open_at(root: &Path, rev: Option<&str>) -> Result<Workspace, Error> {
        Opening::start(root, rev)?.finish()
    }

    /// [`Workspace::open_at`], reading the recorded state while the tenant files load: a
    /// plan needs both and neither needs the other. The state is read without its lock, as
    /// a plan reads it; a repo that does not load is reported first.
    pub async fn open_with_state(
        root: &Path,
        rev: Option<&str>,
    ) -> Result<(Workspace, State), Error> {
        Workspace::open_scoped(root, rev, None).await
    }

    /// [`Workspace::open_with_state`], with `only` for some tenants only: their files and
    /// their records are read, beside the plans, templates, migrations and the state's
    /// header, and no other tenant's (what a plan of those tenants costs does not grow with
    /// the fleet). The repo and the state say so in their `scope`.
    pub async fn open_scoped(
        root: &Path,
        rev: Option<&str>,
        only: Option<BTreeSet<String>>,
    ) -> Result<(Workspace, State), Error> {
        Workspace::open_from(Opening::start(root, rev)?, only).await
    }

    /// The repo at `root` (at `rev`) with its config read and its tenant files not yet:
    /// what decides which tenants to read ([`Opening::config`]) before
    /// [`Workspace::open_from`] reads them, from the same files (a revision's listing is
    /// made once).
    pub fn opening(root: &Path, rev: Option<&str>) -> Result<Opening, Error> {
        Opening::start(root, rev)
    }

    /// [`Workspace::open_scoped`], from an [`Opening`].
    pub async fn open_from(
        mut opening: Opening,
        only: Option<BTreeSet<String>>,
    ) -> Result<(Workspace, State), Error> {
        opening.only = only.clone();
        let backend = backend_for(
            &opening.config.config,
            &opening.root,
            &opening.local_dir,
            &opening.postgres,
            &opening.s3,
        );
        let state = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let state = match &only {
                Some(slugs) => backend.load_tenants(slugs).await,
                None => backend.load().await,
            };
            let records = state.as_ref().map_or(0, |s| s.tenants.len());
            tracing::debug!(elapsed = ?started.elapsed(), records, "loaded the state");
            state
        });
        // The repo loads on a blocking thread: on this one it would keep the state's task
        // from starting until it is done.
        let ws = match finished(tokio::task::spawn_blocking(move || opening.finish()).await) {
            Ok(ws) => ws,
            Err(e) => {
                state.abort();
                return Err(e);
            }
        };
        Ok((ws, finished(state.await)?))
    }

    /// The state backend of the repo at `root`, read from its config alone: what `show`
    /// reads while a tenant file does not load. `None` when the config itself has problems
    /// (it is what says where the state is).
    pub fn config_backend(root: &Path) -> Result<Option<Box<dyn StateBackend>>, Error> {
        let opening = Opening::start(root, None)?;
        if opening.config.has_problems() {
            return Ok(None);
        }
        Ok(Some(backend_for(
            &opening.config.config,
            &opening.root,
            &opening.local_dir,
            &opening.postgres,
            &opening.s3,
        )))
    }

    pub fn backend(&self) -> Box<dyn StateBackend> {
        backend_for(
            &self.repo.config,
            &self.repo.root,
            &self.local_dir,
            &self.postgres,
            &self.s3,
        )
    }

    /// The targets `tenant-reconcile.hcl` chooses, applying `migrations` (the repo's, or a
    /// saved plan's).
    pub fn targets(&self, migrations: Vec<Migration>) -> Targets {
        let config = &self.repo.config;
        let naming = Naming::from(&config.postgres);
        let dir = &self.local_dir;
        let control =
            targets::control_plane::target(&config.targets.control_plane, &self.postgres, dir);
        let data = targets::data::target(
            &config.targets.data,
            &self.postgres,
            &config.servers,
            dir,
            migrations,
            naming,
        );
        let buckets = targets::buckets::target(&config.targets.buckets, &self.s3, dir);
        // A slot that plugs in and is set to `none` still owns its kinds (`Unconfigured`).
        let plugged: Vec<Arc<dyn Provider>> = crate::targets::PLUGGED
            .iter()
            .map(
                |slot| match config.plugged.iter().find(|p| p.slot() == slot.key()) {
                    Some(p) => p.target(),
                    None => Arc::new(Unconfigured::new(slot.kinds(), slot.setting())),
                },
            )
            .collect();
        let exporter = Arc::new(Exporter::new(
            self.repo.root.clone(),
            config.offboarding.export_to.clone(),
            self.s3.clone(),
            self.local_dir.join("exports").join(".staging"),
        ));
        let mut providers = vec![data, buckets];
        providers.extend(plugged);
        providers.push(Arc::new(RenderedFiles::new(self.output_dir.clone())));
        Targets {
            control,
            providers,
            exporter,
        }
    }

    /// Requests sent to S3 so far (targets and state backend), for benchmarks.
    pub fn s3_requests(&self) -> usize {
        self.s3.calls()
    }

    /// Requests the target of each slot that plugs in has sent so far: (`dns`, 12).
    pub fn plugged_requests(&self) -> Vec<(&'static str, usize)> {
        let plugged = self.repo.config.plugged.iter();
        plugged.map(|p| (p.slot(), p.calls())).collect()
    }

    /// The configured PostgreSQL server (it connects on first use).
    pub fn postgres(&self) -> &PgServer {
        &self.postgres
    }

    /// Whether the local target keeps tenant credentials, and so may make its own key.
    fn data_is_local(&self) -> bool {
        self.repo.config.targets.data == "local"
    }

    fn key_source(&self) -> KeySource<'_> {
        KeySource {
            env: std::env::var(MASTER_KEY_ENV).ok().filter(|v| !v.is_empty()),
            file: self
                .repo
                .config
                .master_key_file
                .as_ref()
                .map(|f| self.repo.root.join(f)),
            // Only the local target may make up its own key; a real server's passwords
            // must come from a key the operators hold.
            local_file: self.data_is_local().then(|| self.local_key_path()),
        }
    }

    pub(crate) fn local_key_path(&self) -> &Path {
        // Stored beside the local target's data, which is git-ignored.
        self.local_key.as_path()
    }

    /// The master key if one is available now, without creating one.
    pub fn find_key(&self) -> Result<Option<MasterKey>, Error> {
        Ok(MasterKey::find(&self.key_source())?)
    }

    /// The master key, generating the local one on first use.
    pub fn key(&self) -> Result<MasterKey, Error> {
        Ok(MasterKey::find_or_create(&self.key_source())?)
    }
}

impl Workspace {
    /// Tenant, plan, template and migration files and the config with changes git has not
    /// committed (staged or not, new files too). Empty when the repo is not in git.
    /// The repo with the shared inputs (plans, templates, migrations) of commit `rev` and
    /// no tenant file: what the tenants a rollout has not reached are compiled from, each
    /// with its own file of the head. The config stays the head's: a change to it is no
    /// rollout.
    pub fn shared_inputs_at(&self, rev: &str) -> Result<TenantRepo, Error> {
        let files = repo::Files::at_revision(&self.repo.root, rev)?;
        let config = repo::LoadedConfig::of(self.repo.config.clone());
        let none = BTreeSet::new();
        Ok(repo::load_some(
            &self.repo.root,
            &files,
            config,
            Some(&none),
        )?)
    }

    pub fn uncommitted_inputs(&self) -> Vec<Uncommitted> {
        self.uncommitted_in(&self.repo.config.input_dirs(), true)
    }

    /// The shared inputs (plans, templates, migrations) git has not committed: what a
    /// rollout, which goes from one commit's to another's, refuses. The tenant files are not
    /// walked.
    pub fn uncommitted_shared_inputs(&self) -> Vec<Uncommitted> {
        self.uncommitted_in(&self.repo.config.shared_input_dirs(), false)
    }

    /// The files under `dirs` (and the config, with `config`) git has not committed.
    fn uncommitted_in(&self, dirs: &[PathBuf], config: bool) -> Vec<Uncommitted> {
        // The tenant repo may be a folder inside a bigger git repository.
        let Ok((git, inside)) = repo::files::open_git(&self.repo.root) else {
            return Vec::new();
        };
        let inside = inside.as_path();
        let mut opts = git2::StatusOptions::new();
        opts.include_untracked(true)
            .recurse_untracked_dirs(true)
            .include_ignored(false);
        for dir in dirs {
            opts.pathspec(inside.join(dir));
        }
        if config {
            opts.pathspec(inside.join(repo::config::CONFIG_FILE));
        }
        let Ok(statuses) = git.statuses(Some(&mut opts)) else {
            return Vec::new();
        };
        let mut out: Vec<Uncommitted> = statuses
            .iter()
            .filter_map(|entry| {
                let s = entry.status();
                let status = if s.intersects(git2::Status::WT_NEW | git2::Status::INDEX_NEW) {
                    'A'
                } else if s.intersects(git2::Status::WT_DELETED | git2::Status::INDEX_DELETED) {
                    'D'
                } else if s.intersects(git2::Status::WT_RENAMED | git2::Status::INDEX_RENAMED) {
                    'R'
                } else if s.intersects(
                    git2::Status::WT_MODIFIED
                        | git2::Status::INDEX_MODIFIED
                        | git2::Status::WT_TYPECHANGE
                        | git2::Status::INDEX_TYPECHANGE,
                ) {
                    'M'
                } else {
                    return None;
                };
                let path = Path::new(entry.path()?);
                let path = path.strip_prefix(inside).unwrap_or(path);
                Some(Uncommitted {
                    status,
                    path: path.display().to_string(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }
}

/// A workspace whose config is read and whose tenant files are not yet.
pub struct Opening {
    root: PathBuf,
    rev: Option<String>,
    files: repo::Files,
    config: repo::LoadedConfig,
    local_dir: PathBuf,
    postgres: Arc<PgServer>,
    s3: Arc<S3Store>,
    /// Only these tenants' files are read.
    only: Option<BTreeSet<String>>,
}

impl Opening {
    /// The repo's config (one with problems is the default config, and its problems are
    /// reported when the repo is opened).
    pub fn config(&self) -> &repo::Config {
        &self.config.config
    }

    /// Where the repo's files are read from.
    pub fn files(&self) -> &repo::Files {
        &self.files
    }

    fn start(root: &Path, rev: Option<&str>) -> Result<Opening, Error> {
        let files = match rev {
            Some(rev) => repo::Files::at_revision(root, rev)?,
            None => repo::Files::WorkingTree,
        };
        let config = repo::load_config(root, &files)?;
        Ok(Opening {
            root: root.to_path_buf(),
            rev: rev.map(str::to_string),
            local_dir: root.join(&config.config.local.dir),
            postgres: Arc::new(PgServer::from_config(&config.config.postgres)),
            s3: Arc::new(S3Store::new(config.config.s3.clone())),
            files,
            config,
            only: None,
        })
    }

    fn finish(self) -> Result<Workspace, Error> {
        let started = std::time::Instant::now();
        let root = self.root.as_path();
        let repo = repo::load_some(root, &self.files, self.config, self.only.as_ref())?;
        tracing::debug!(elapsed = ?started.elapsed(), tenants = repo.tenants.len(), "loaded the repo");
        Ok(Workspace {
            git_commit: self
                .files
                .commit()
                .map(str::to_string)
                .or_else(|| git_head(root)),
            rev: self.rev,
            local_key: self.local_dir.join("master.key"),
            output_dir: root.join(&repo.config.output_dir),
            postgres: self.postgres,
            s3: self.s3,
            repo,
            local_dir: self.local_dir,
        })
    }
}

/// What a task returned; a task that panicked carries its panic on here. (Neither task of
/// [`Workspace::open_with_state`] is ever cancelled before it is awaited.)
fn finished<T>(joined: Result<T, tokio::task::JoinError>) -> T {
    match joined {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// The state backend `config` chooses.
fn backend_for(
    config: &repo::Config,
    root: &Path,
    local_dir: &Path,
    postgres: &Arc<PgServer>,
    s3: &Arc<S3Store>,
) -> Box<dyn StateBackend> {
    match config.state.backend.as_str() {
        "postgres" => Box::new(PgBackend::new(postgres.clone(), config.state.name.clone())),
        "s3" => Box::new(S3Backend::new(
            s3.clone(),
            config.state.bucket.clone().unwrap_or_default(),
            config.state.s3_key(),
            config.state.lock_lease(),
        )),
        _ => Box::new(LocalBackend::new(match &config.state.path {
            Some(p) => root.join(p),
            None => local_dir.join("state.json"),
        })),
    }
}

fn git_head(root: &Path) -> Option<String> {
    let repo = git2::Repository::discover(root).ok()?;
    let head = repo.head().ok()?.peel_to_commit().ok()?;
    Some(head.id().to_string())
}

//! A tenant repo opened for work: its files, where its state lives, and its targets.

use std::path::{Path, PathBuf};

use crate::credentials::{KeySource, MasterKey, MASTER_KEY_ENV};
use std::sync::Arc;

use crate::naming::Naming;
use crate::provider::files::RenderedFiles;
use crate::provider::local::{LocalBuckets, LocalControl, LocalData};
use crate::provider::postgres::{PgControl, PgData, PgServer};
use crate::provider::{ControlPlane, Provider, Targets};
use crate::repo::{self, Migration, TenantRepo};
use crate::state::local::LocalBackend;
use crate::state::postgres::PgBackend;
use crate::state::StateBackend;
use crate::Error;

pub struct Workspace {
    pub repo: TenantRepo,
    /// The local target's folder.
    pub local_dir: PathBuf,
    pub output_dir: PathBuf,
    /// HEAD of the git repository the tenant repo is in, if it is in one.
    pub git_commit: Option<String>,
    local_key: PathBuf,
    /// The server of the postgres targets and state backend; it connects on first use.
    postgres: Arc<PgServer>,
}

impl Workspace {
    pub fn open(root: &Path) -> Result<Workspace, Error> {
        let started = std::time::Instant::now();
        let repo = repo::load(root)?;
        tracing::debug!(elapsed = ?started.elapsed(), tenants = repo.tenants.len(), "loaded the repo");
        let local_dir = root.join(&repo.config.local.dir);
        let output_dir = root.join(&repo.config.output_dir);
        Ok(Workspace {
            git_commit: git_head(root),
            local_key: local_dir.join("master.key"),
            postgres: Arc::new(PgServer::from_config(&repo.config.postgres)),
            repo,
            local_dir,
            output_dir,
        })
    }

    pub fn backend(&self) -> Box<dyn StateBackend> {
        let path = match &self.repo.config.state.path {
            Some(p) => self.repo.root.join(p),
            None => self.local_dir.join("state.json"),
        };
        match self.repo.config.state.backend.as_str() {
            "postgres" => Box::new(PgBackend::new(
                self.postgres.clone(),
                self.repo.config.state.name.clone(),
            )),
            _ => Box::new(LocalBackend::new(path)),
        }
    }

    /// The targets `tenant-reconcile.hcl` chooses, applying `migrations` (the repo's, or a
    /// saved plan's).
    pub fn targets(&self, migrations: Vec<Migration>) -> Targets {
        let config = &self.repo.config;
        let naming = Naming::from(&config.postgres);
        let control: Arc<dyn ControlPlane> = match config.targets.control_plane.as_str() {
            "postgres" => Arc::new(PgControl::new(self.postgres.clone())),
            _ => Arc::new(LocalControl::new(self.local_dir.join("control.sqlite"))),
        };
        let data: Arc<dyn Provider> = match config.targets.data.as_str() {
            "postgres" => Arc::new(PgData::new(self.postgres.clone(), migrations, naming)),
            _ => Arc::new(LocalData::new(self.local_dir.clone(), migrations, naming)),
        };
        Targets {
            control,
            providers: vec![
                data,
                Arc::new(LocalBuckets::new(self.local_dir.join("buckets"))),
                Arc::new(RenderedFiles::new(self.output_dir.clone())),
            ],
        }
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

    fn local_key_path(&self) -> &Path {
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

fn git_head(root: &Path) -> Option<String> {
    let repo = git2::Repository::discover(root).ok()?;
    let head = repo.head().ok()?.peel_to_commit().ok()?;
    Some(head.id().to_string())
}

//! A tenant repo opened for work: its files, where its state lives, and its targets.

use std::path::{Path, PathBuf};

use crate::credentials::{KeySource, MasterKey, MASTER_KEY_ENV};
use crate::provider::{local, Targets};
use crate::repo::{self, Migration, TenantRepo};
use crate::state::local::LocalBackend;
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
        Box::new(LocalBackend::new(path))
    }

    /// The targets, applying `migrations` (the repo's, or a saved plan's).
    pub fn targets(&self, migrations: Vec<Migration>) -> Targets {
        local::targets(self.local_dir.clone(), self.output_dir.clone(), migrations)
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
            local_file: Some(self.local_key_path()),
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

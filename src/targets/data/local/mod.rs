//! The local data target: each tenant's data in a SQLite database of its own under `data/`,
//! with the repo's migrations and the seed data, and the login roles and slices kept in
//! `catalog.sqlite` as Postgres keeps them in its catalog. A file per capability: `refresh`,
//! `apply`, `migrate` (migrations and seeds), `purge`, `holdings`, `export`, `smoke`, and
//! `header`, which reads a database's header as committed.
//!
//! Refresh reads the catalog with two queries and only the 100-byte header of each tenant
//! database: SQLite keeps `user_version` (here: how many migrations are applied) and
//! `application_id` (here: whether the seed data is in) there, and both are written in the
//! same transaction as the migration or seed they describe.

mod apply;
mod export;
mod header;
mod holdings;
mod migrate;
mod purge;
mod refresh;
pub mod smoke;

use std::path::PathBuf;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteJournalMode, SqlitePool};
use tokio::sync::OnceCell;

use crate::clients::sqlite;
use crate::model::attrs::Attrs;
use crate::model::change::ResourceChange;
use crate::model::migration::Migration;
use crate::model::resource::Kind;
use crate::slug::Slug;
use crate::targets::data::Naming;
use crate::targets::provider::{LiveFleet, Provider, ProviderError, RefreshTarget, StepContext};

const CATALOG: &str = r#"
CREATE TABLE IF NOT EXISTS roles (
    name                 TEXT PRIMARY KEY,
    slug                 TEXT NOT NULL,
    login                INTEGER NOT NULL,
    credentials_version  INTEGER NOT NULL,
    password_fingerprint TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS slices (
    slug      TEXT PRIMARY KEY,
    name      TEXT NOT NULL,
    isolation TEXT NOT NULL,
    owner     TEXT NOT NULL
);
"#;

pub struct LocalData {
    dir: PathBuf,
    migrations: Vec<Migration>,
    naming: Naming,
    catalog: OnceCell<SqlitePool>,
}

impl LocalData {
    pub fn new(dir: PathBuf, migrations: Vec<Migration>, naming: Naming) -> LocalData {
        LocalData {
            dir,
            migrations,
            naming,
            catalog: OnceCell::new(),
        }
    }

    fn catalog_path(&self) -> PathBuf {
        self.dir.join("catalog.sqlite")
    }

    fn database_path(&self, slug: &Slug) -> PathBuf {
        // The slug is validated to [a-z0-9-], so it cannot leave the folder.
        self.dir.join("data").join(format!("{slug}.sqlite"))
    }

    async fn catalog(&self) -> Result<&SqlitePool, ProviderError> {
        self.catalog
            .get_or_try_init(|| async {
                let pool = sqlite::open(&self.catalog_path(), true, SqliteJournalMode::Wal).await?;
                // All tables or none, whenever the run is killed: a reader takes a
                // database without tables for one not made yet.
                sqlite::in_one_transaction(&pool, CATALOG)
                    .await
                    .map_err(ProviderError::sql("create the catalog tables"))?;
                Ok(pool)
            })
            .await
    }
}

#[async_trait]
impl Provider for LocalData {
    fn name(&self) -> &'static str {
        "local data"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::ROLE, Kind::DATABASE, Kind::SEED]
    }

    async fn refresh(
        &self,
        targets: &[RefreshTarget],
        live: &mut LiveFleet,
    ) -> Result<(), ProviderError> {
        self.refresh_fleet(targets, live).await
    }

    async fn apply(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        self.apply_change(ctx, change).await
    }

    crate::targets::provider::capabilities!(Export, Purge, Smoke);
}

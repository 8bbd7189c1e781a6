//! The local control plane: registry, owner memberships, effective flags and quotas, and
//! the events outbox, in `control.sqlite`.

use std::path::PathBuf;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::{SqliteJournalMode, SqlitePool};
use tokio::sync::OnceCell;

use crate::clients::sql::{Dialect, Pool};
use crate::clients::sqlite;
use crate::model::attrs::Attrs;
use crate::model::audit::AuditEntry;
use crate::model::change::ResourceChange;
use crate::model::lifecycle::Lifecycle;
use crate::model::resource::Key;
use crate::model::resource::Kind;
use crate::model::tenant::Effective;
use crate::slug::Slug;
use crate::targets::control_plane::store::{self, ControlDb, Reading};
use crate::targets::provider::{
    ControlPlane, LiveFleet, Provider, ProviderError, Purge, PurgeEnd, RefreshTarget, Smoke,
    StepContext, TogetherFailed,
};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS tenants (
    tenant_id  TEXT PRIMARY KEY,
    slug       TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    plan       TEXT NOT NULL,
    region     TEXT NOT NULL,
    locale     TEXT NOT NULL,
    isolation  TEXT NOT NULL,
    labels     TEXT NOT NULL DEFAULT '{}',
    lifecycle  TEXT NOT NULL,
    step       TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
-- The row the product's auth layer reads to put the tenantId claim in the owner's token.
CREATE TABLE IF NOT EXISTS memberships (
    tenant_id  TEXT NOT NULL REFERENCES tenants (tenant_id),
    role       TEXT NOT NULL,
    email      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, role)
);
CREATE TABLE IF NOT EXISTS feature_flags (
    tenant_id TEXT NOT NULL REFERENCES tenants (tenant_id),
    flag      TEXT NOT NULL,
    enabled   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, flag)
);
CREATE TABLE IF NOT EXISTS quotas (
    tenant_id TEXT NOT NULL REFERENCES tenants (tenant_id),
    name      TEXT NOT NULL,
    value     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
CREATE TABLE IF NOT EXISTS outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT NOT NULL UNIQUE,
    tenant_id    TEXT NOT NULL,
    type         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    published_at TEXT
);
CREATE INDEX IF NOT EXISTS outbox_tenant_id ON outbox (tenant_id);
-- One row per purged resource, kept for good; it holds no data of the tenant's.
CREATE TABLE IF NOT EXISTS deletion_audit (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id     TEXT NOT NULL,
    slug          TEXT NOT NULL,
    address       TEXT NOT NULL,
    resource      TEXT NOT NULL,
    holds         TEXT NOT NULL,
    erasure       INTEGER NOT NULL,
    export        TEXT,
    export_sha256 TEXT,
    git_commit    TEXT,
    run_by        TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    purged_at     TEXT,
    UNIQUE (tenant_id, address)
);
-- Each event for each subscriber, and every attempt: when, what came back, how long it took
-- (never a body or a secret). A subscriber's row remembers how far into the outbox it has
-- been given events, and whether a 410 disabled it.
CREATE TABLE IF NOT EXISTS deliveries (
    event_id         TEXT NOT NULL,
    subscriber       TEXT NOT NULL,
    tenant_id        TEXT NOT NULL,
    outbox_id        INTEGER NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_at          TEXT NOT NULL,
    first_attempt_at TEXT,
    last_error       TEXT,
    delivered_at     TEXT,
    PRIMARY KEY (event_id, subscriber)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_at);
CREATE INDEX IF NOT EXISTS deliveries_order ON deliveries (subscriber, tenant_id, status, outbox_id);
CREATE TABLE IF NOT EXISTS delivery_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL,
    subscriber  TEXT NOT NULL,
    at          TEXT NOT NULL,
    status_code INTEGER,
    error       TEXT,
    latency_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS subscribers (
    name        TEXT PRIMARY KEY,
    outbox_id   INTEGER NOT NULL DEFAULT 0,
    disabled_at TEXT
);
"#;

/// Columns added since the tables were first made, each added to an older database once.
const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("tenants", "deprovisioned_at TEXT"),
    ("tenants", "outputs TEXT NOT NULL DEFAULT '{}'"),
    ("deletion_audit", "export_until TEXT"),
    ("deliveries", "lease_until TEXT"),
];

pub struct LocalControl {
    path: PathBuf,
    pool: OnceCell<SqlitePool>,
    dialect: Dialect,
}

impl LocalControl {
    pub fn new(path: PathBuf) -> LocalControl {
        LocalControl {
            path,
            pool: OnceCell::new(),
            dialect: Dialect::Sqlite,
        }
    }

    /// The writable pool, creating the database and its tables on first use.
    pub(crate) async fn pool(&self) -> Result<&SqlitePool, ProviderError> {
        self.pool
            .get_or_try_init(|| async {
                let pool = sqlite::open(&self.path, true, SqliteJournalMode::Wal).await?;
                // All tables or none, whenever the run is killed: a reader takes a
                // database without tables for one not made yet.
                sqlite::in_one_transaction(&pool, SCHEMA)
                    .await
                    .map_err(ProviderError::sql("create the control-plane tables"))?;
                for (table, column) in ADDED_COLUMNS {
                    // Table and column are constants; SQLite has no ADD COLUMN IF NOT EXISTS.
                    let added = sqlx::raw_sql(&format!("ALTER TABLE {table} ADD COLUMN {column}"))
                        .execute(&pool)
                        .await;
                    match added {
                        Err(e) if !e.to_string().contains("duplicate column name") => {
                            return Err(ProviderError::sql(format!("add a column to {table}"))(e))
                        }
                        _ => {}
                    }
                }
                Ok(pool)
            })
            .await
    }
}

#[async_trait]
impl ControlDb for LocalControl {
    fn dialect(&self) -> &Dialect {
        &self.dialect
    }

    async fn tables(&self) -> Result<Pool, ProviderError> {
        Ok(Pool::Sqlite(self.pool().await?.clone()))
    }

    /// Read-only connections of its own, four side by side: a plan must change nothing, not
    /// even create the file.
    async fn reader(&self) -> Result<Reading, ProviderError> {
        if !self.path.exists() {
            return Ok(Reading {
                pool: None,
                calls: 0,
                close: false,
            });
        }
        let pool = sqlite::open_reader(&self.path, 4).await?;
        Ok(Reading {
            calls: if pool.is_some() { 0 } else { 1 },
            pool: pool.map(Pool::Sqlite),
            close: true,
        })
    }
}

#[async_trait]
impl Provider for LocalControl {
    fn name(&self) -> &'static str {
        "local control plane"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::REGISTRY, Kind::OWNER, Kind::FEATURES, Kind::QUOTAS]
    }

    async fn refresh(
        &self,
        targets: &[RefreshTarget],
        live: &mut LiveFleet,
    ) -> Result<(), ProviderError> {
        store::refresh::refresh(self, targets, live).await
    }

    async fn apply(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        let mut tx = self.tables().await?.begin().await?;
        let attrs = store::control::apply_in(self, &mut tx, ctx, change).await?;
        tx.commit().await?;
        Ok(Some(attrs))
    }

    /// Its rows that follow each other in a plan (a new tenant's owner, flags and quotas; a
    /// plan change's registry row and quotas) are one transaction's work.
    fn joins(&self, _tenant: &Effective, _first: &ResourceChange, _next: &ResourceChange) -> bool {
        true
    }

    async fn apply_together(
        &self,
        ctx: &StepContext<'_>,
        changes: &[ResourceChange],
    ) -> Result<Vec<Attrs>, TogetherFailed> {
        store::control::apply_all(self, ctx, changes).await
    }

    crate::targets::provider::capabilities!(Purge, Smoke);
}

#[async_trait]
impl Purge for LocalControl {
    /// Its purges never leave the machine.
    fn remote_per_tenant(&self) -> bool {
        false
    }

    async fn purge(&self, ctx: &StepContext<'_>, key: &Key) -> Result<(), ProviderError> {
        store::control::purge(self, ctx, key).await
    }
}

#[async_trait]
impl Smoke for LocalControl {
    async fn smoke(
        &self,
        ctx: &StepContext<'_>,
        _sql: &[&crate::model::checks::CheckSpec],
    ) -> Vec<crate::model::health::CheckOutcome> {
        store::control::smoke(self, ctx).await
    }
}

#[async_trait]
impl ControlPlane for LocalControl {
    async fn audit_begin(&self, entries: &[AuditEntry]) -> Result<(), ProviderError> {
        if entries.is_empty() {
            return Ok(());
        }
        store::control::write_audits(self, &entries.iter().collect::<Vec<_>>()).await
    }

    async fn end_purge(
        &self,
        ctx: &StepContext<'_>,
        end: &PurgeEnd<'_>,
    ) -> Result<Option<Attrs>, ProviderError> {
        store::purge_end::end_purge(self, ctx, end).await
    }

    async fn audit_log(&self, slug: Option<&Slug>) -> Result<Vec<AuditEntry>, ProviderError> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        store::control::audit_log(self, &self.tables().await?, slug).await
    }

    async fn register(
        &self,
        ctx: &StepContext<'_>,
        attrs: &Attrs,
    ) -> Result<String, ProviderError> {
        store::control::register(self, ctx, attrs).await
    }

    async fn emit_event(
        &self,
        ctx: &StepContext<'_>,
        kind: &str,
        detail: Value,
    ) -> Result<(), ProviderError> {
        store::control::emit_event(self, ctx, kind, detail).await
    }

    async fn emit_fleet_event(
        &self,
        event_id: &str,
        kind: &str,
        detail: Value,
    ) -> Result<(), ProviderError> {
        store::control::emit_fleet_event(self, event_id, kind, detail).await
    }

    async fn set_outputs(
        &self,
        tenant_id: &str,
        outputs: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), ProviderError> {
        store::control::set_outputs(self, tenant_id, outputs).await
    }

    async fn set_step(&self, tenant_id: &str, step: Option<&str>) -> Result<(), ProviderError> {
        store::control::set_step(self, tenant_id, step).await
    }

    async fn transition(&self, ctx: &StepContext<'_>, to: Lifecycle) -> Result<(), ProviderError> {
        store::control::transition(self, ctx, to).await
    }
}

//! The local control plane: registry, owner memberships, effective flags and quotas, and
//! the events outbox, in `control.sqlite`.

use std::path::PathBuf;

use async_trait::async_trait;
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteJournalMode, SqlitePool};
use sqlx::{Sqlite, Transaction};
use tokio::sync::OnceCell;

use crate::clients::sql::{Dialect, Pool};
use crate::clients::sqlite;
use crate::model::attrs::Attrs;
use crate::model::audit::AuditEntry;
use crate::model::change::ResourceChange;
use crate::model::lifecycle::{now, Lifecycle};
use crate::model::resource::Key;
use crate::model::resource::Kind;
use crate::slug::Slug;
use crate::targets::control_plane::rows::{self, ControlRows};
use crate::targets::control_plane::store::ControlDb;
use crate::targets::provider::{
    desired_of, events, unmanaged, ControlPlane, LiveFleet, Provider, ProviderError, Purge,
    RefreshTarget, Smoke, StepContext,
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

    pub(crate) async fn begin(&self) -> Result<Transaction<'static, Sqlite>, ProviderError> {
        self.pool()
            .await?
            .begin()
            .await
            .map_err(ProviderError::sql("begin"))
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
}

async fn emit(
    tx: &mut Transaction<'static, Sqlite>,
    ctx: &StepContext<'_>,
    tenant_id: &str,
    kind: &str,
    detail: Value,
) -> Result<(), ProviderError> {
    let event = events::new(ctx, tenant_id, kind, detail);
    sqlx::query("INSERT INTO outbox (event_id, tenant_id, type, payload, created_at) VALUES (?, ?, ?, ?, ?)")
        .bind(&event.id)
        .bind(tenant_id)
        .bind(kind)
        .bind(event.payload.to_string())
        .bind(&event.at)
        .execute(&mut **tx)
        .await
        .map_err(ProviderError::sql("write to the outbox"))?;
    Ok(())
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
        if !self.path.exists() {
            live.calls.push((self.name(), 0));
            return Ok(());
        }
        // Plan must change nothing, so it reads through read-only connections of its own.
        // One query per table for the whole fleet, however many tenants there are, all four
        // at once; flags and quotas arrive already grouped per tenant as JSON objects.
        let Some(pool) = sqlite::open_reader(&self.path, 4).await? else {
            live.calls.push((self.name(), 1));
            return Ok(());
        };
        let registry = sqlite::spawn_fetch_json(
            &pool,
            "SELECT json_group_array(json_array(tenant_id, slug, name, plan, region, locale, \
             isolation, json(labels), lifecycle, step)) FROM tenants",
            "the registry",
        );
        let owners = sqlite::spawn_fetch_json(
            &pool,
            "SELECT json_group_array(json_array(tenant_id, email)) FROM memberships WHERE role = 'owner'",
            "memberships",
        );
        let flags = sqlite::spawn_fetch_json(
            &pool,
            "SELECT json_group_object(tenant_id, json(m)) FROM \
             (SELECT tenant_id, json_group_object(flag, json(CASE WHEN enabled THEN 'true' ELSE 'false' END)) AS m \
              FROM feature_flags GROUP BY tenant_id)",
            "feature flags",
        );
        let quotas = sqlite::spawn_fetch_json(
            &pool,
            "SELECT json_group_object(tenant_id, json(m)) FROM \
             (SELECT tenant_id, json_group_object(name, value) AS m FROM quotas GROUP BY tenant_id)",
            "quotas",
        );
        let (registry, owners, flags, quotas) =
            (registry.await?, owners.await?, flags.await?, quotas.await?);
        rows::record(
            targets,
            live,
            ControlRows {
                registry,
                owners,
                flags,
                quotas,
            },
        );
        pool.close().await;
        live.calls.push((self.name(), 4));
        Ok(())
    }

    async fn apply(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        let tenant_id = ctx.tenant_id()?;
        let desired = desired_of(change)?;
        let mut tx = self.begin().await?;
        let at = now();
        match change.key.kind {
            Kind::REGISTRY => {
                let a = &desired.attrs;
                sqlx::query(
                    "UPDATE tenants SET name = ?, plan = ?, region = ?, locale = ?, isolation = ?, labels = ?, updated_at = ? WHERE tenant_id = ?",
                )
                .bind(a.str("name"))
                .bind(a.str("plan"))
                .bind(a.str("region"))
                .bind(a.str("locale"))
                .bind(a.str("isolation"))
                .bind(a.get("labels").cloned().unwrap_or(json!({})).to_string())
                .bind(&at)
                .bind(tenant_id)
                .execute(tx.as_mut())
                .await
                .map_err(ProviderError::sql("update the registry"))?;
            }
            Kind::OWNER => {
                sqlx::query(
                    "INSERT INTO memberships (tenant_id, role, email, created_at) VALUES (?, 'owner', ?, ?)
                     ON CONFLICT (tenant_id, role) DO UPDATE SET email = excluded.email",
                )
                .bind(tenant_id)
                .bind(desired.attrs.str("email"))
                .bind(&at)
                .execute(tx.as_mut())
                .await
                .map_err(ProviderError::sql("write the owner membership"))?;
            }
            Kind::FEATURES | Kind::QUOTAS => {
                let (table, key_col, value_col) = if change.key.kind == Kind::FEATURES {
                    ("feature_flags", "flag", "enabled")
                } else {
                    ("quotas", "name", "value")
                };
                // Table and column names are constants above, never input.
                sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = ?"))
                    .bind(tenant_id)
                    .execute(tx.as_mut())
                    .await
                    .map_err(ProviderError::sql(format!("clear {table}")))?;
                let insert = format!(
                    "INSERT INTO {table} (tenant_id, {key_col}, {value_col}) VALUES (?, ?, ?)"
                );
                for (k, v) in &desired.attrs {
                    let q = sqlx::query(&insert).bind(tenant_id).bind(k);
                    let q = match v {
                        Value::Bool(b) => q.bind(*b),
                        other => q.bind(other.as_i64().unwrap_or_default()),
                    };
                    q.execute(tx.as_mut())
                        .await
                        .map_err(ProviderError::sql(format!("write {table}")))?;
                }
            }
            other => return Err(unmanaged(self, other)),
        }
        // A change to a live tenant is announced in the same transaction that makes it, so
        // the event exists exactly when the change does.
        if events::announces_update(ctx, change) {
            emit(
                &mut tx,
                ctx,
                tenant_id,
                events::UPDATED,
                events::update_detail(change),
            )
            .await?;
        }
        tx.commit().await.map_err(ProviderError::sql("commit"))?;
        let mut attrs = desired.attrs.clone();
        if change.key.kind == Kind::REGISTRY {
            // The lifecycle moves in its own step, at the end of the tenant's run.
            attrs.insert("lifecycle", json!(ctx.lifecycle.as_str()));
        }
        Ok(Some(attrs))
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
        let table = rows::table_of(key.kind).ok_or_else(|| unmanaged(self, key.kind))?;
        // The table is one of three constants above.
        sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = ?"))
            .bind(ctx.tenant_id()?)
            .execute(self.pool().await?)
            .await
            .map_err(ProviderError::sql(format!("purge {table}")))?;
        Ok(())
    }
}

#[async_trait]
impl Smoke for LocalControl {
    async fn smoke(
        &self,
        ctx: &StepContext<'_>,
        _sql: &[&crate::model::checks::CheckSpec],
    ) -> Vec<crate::model::health::CheckOutcome> {
        let id = ctx.tenant_id.unwrap_or_default();
        let read = |sql: &'static str| async move {
            let started = std::time::Instant::now();
            let found: Result<Option<(String,)>, ProviderError> = match self.pool().await {
                Ok(pool) => sqlx::query_as(sql)
                    .bind(id)
                    .fetch_optional(pool)
                    .await
                    .map_err(ProviderError::sql("read the control plane back")),
                Err(e) => Err(e),
            };
            (started, found.map(|r| r.map(|(v,)| v)))
        };
        let registry = read("SELECT slug FROM tenants WHERE tenant_id = ?").await;
        let owner =
            read("SELECT email FROM memberships WHERE tenant_id = ? AND role = 'owner'").await;
        rows::smoke_verdicts(ctx, registry, owner)
    }
}

#[async_trait]
impl ControlPlane for LocalControl {
    async fn audit_begin(&self, entries: &[AuditEntry]) -> Result<(), ProviderError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE tenants SET step = 'purge' WHERE tenant_id = ?")
            .bind(&first.tenant_id)
            .execute(tx.as_mut())
            .await
            .map_err(ProviderError::sql("record the current step"))?;
        for e in entries {
            sqlx::query(
                "INSERT INTO deletion_audit (tenant_id, slug, address, resource, holds, erasure, export, export_sha256, export_until, git_commit, run_by, started_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, address) DO NOTHING",
            )
            .bind(&e.tenant_id)
            .bind(&e.slug)
            .bind(&e.address)
            .bind(&e.resource)
            .bind(&e.holds)
            .bind(e.erasure)
            .bind(&e.export)
            .bind(&e.export_sha256)
            .bind(&e.export_until)
            .bind(&e.git_commit)
            .bind(&e.run_by)
            .bind(&e.started_at)
            .execute(tx.as_mut())
            .await
            .map_err(ProviderError::sql("write the deletion audit"))?;
        }
        tx.commit().await.map_err(ProviderError::sql("commit"))
    }

    async fn audit_done(&self, tenant_id: &str, addresses: &[String]) -> Result<(), ProviderError> {
        let at = now();
        let mut tx = self.begin().await?;
        for address in addresses {
            sqlx::query(
                "UPDATE deletion_audit SET purged_at = ? WHERE tenant_id = ? AND address = ? AND purged_at IS NULL",
            )
            .bind(&at)
            .bind(tenant_id)
            .bind(address)
            .execute(tx.as_mut())
            .await
            .map_err(ProviderError::sql("complete the deletion audit"))?;
        }
        tx.commit().await.map_err(ProviderError::sql("commit"))
    }

    async fn audit_log(&self, slug: Option<&Slug>) -> Result<Vec<AuditEntry>, ProviderError> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        let rows: Vec<crate::model::audit::Row> = sqlx::query_as(
            "SELECT tenant_id, slug, address, resource, holds, erasure, export, export_sha256, export_until, git_commit, run_by, started_at, purged_at
             FROM deletion_audit WHERE ?1 IS NULL OR slug = ?1 ORDER BY id",
        )
        .bind(slug.map(Slug::as_str))
        .fetch_all(self.pool().await?)
        .await
        .map_err(ProviderError::sql("read the deletion audit"))?;
        Ok(rows.into_iter().map(AuditEntry::from_row).collect())
    }

    async fn register(
        &self,
        ctx: &StepContext<'_>,
        attrs: &Attrs,
    ) -> Result<String, ProviderError> {
        let slug = ctx.tenant.slug.as_str();
        let mut tx = self.begin().await?;
        // Check before create: a rerun after a crash finds the row and keeps its id.
        let existing: Option<(String,)> =
            sqlx::query_as("SELECT tenant_id FROM tenants WHERE slug = ?")
                .bind(slug)
                .fetch_optional(tx.as_mut())
                .await
                .map_err(ProviderError::sql("read the registry"))?;
        if let Some((id,)) = existing {
            return Ok(id);
        }
        let id = uuid::Uuid::new_v4().to_string();
        let at = now();
        sqlx::query(
            "INSERT INTO tenants (tenant_id, slug, name, plan, region, locale, isolation, labels, lifecycle, step, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'provisioning', 'registry', ?, ?)",
        )
        .bind(&id)
        .bind(slug)
        .bind(attrs.str("name"))
        .bind(attrs.str("plan"))
        .bind(attrs.str("region"))
        .bind(attrs.str("locale"))
        .bind(attrs.str("isolation"))
        .bind(attrs.get("labels").cloned().unwrap_or(json!({})).to_string())
        .bind(&at)
        .bind(&at)
        .execute(tx.as_mut())
        .await
        .map_err(ProviderError::sql("create the registry row"))?;
        tx.commit().await.map_err(ProviderError::sql("commit"))?;
        Ok(id)
    }

    async fn emit_event(
        &self,
        ctx: &StepContext<'_>,
        kind: &str,
        detail: Value,
    ) -> Result<(), ProviderError> {
        let tenant_id = ctx.tenant_id()?;
        let mut tx = self.begin().await?;
        emit(&mut tx, ctx, tenant_id, kind, detail).await?;
        tx.commit().await.map_err(ProviderError::sql("commit"))
    }

    async fn set_outputs(
        &self,
        tenant_id: &str,
        outputs: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), ProviderError> {
        sqlx::query("UPDATE tenants SET outputs = ? WHERE tenant_id = ?")
            .bind(json!(outputs).to_string())
            .bind(tenant_id)
            .execute(self.pool().await?)
            .await
            .map_err(ProviderError::sql("record the hooks' outputs"))?;
        Ok(())
    }

    async fn set_step(&self, tenant_id: &str, step: Option<&str>) -> Result<(), ProviderError> {
        sqlx::query("UPDATE tenants SET step = ? WHERE tenant_id = ?")
            .bind(step)
            .bind(tenant_id)
            .execute(self.pool().await?)
            .await
            .map_err(ProviderError::sql("record the current step"))?;
        Ok(())
    }

    async fn transition(&self, ctx: &StepContext<'_>, to: Lifecycle) -> Result<(), ProviderError> {
        let tenant_id = ctx.tenant_id()?;
        let mut tx = self.begin().await?;
        let (current,): (String,) =
            sqlx::query_as("SELECT lifecycle FROM tenants WHERE tenant_id = ?")
                .bind(tenant_id)
                .fetch_one(tx.as_mut())
                .await
                .map_err(ProviderError::sql("read the lifecycle"))?;
        let from = Lifecycle::parse(&current).unwrap_or_default();
        if from == to {
            return Ok(());
        }
        let kinds = events::for_transition(from, to)?;
        let at = now();
        sqlx::query(
            "UPDATE tenants SET lifecycle = ?, step = NULL, updated_at = ?,
               deprovisioned_at = CASE WHEN ? = 'deprovisioned' THEN ? ELSE deprovisioned_at END
             WHERE tenant_id = ?",
        )
        .bind(to.as_str())
        .bind(&at)
        .bind(to.as_str())
        .bind(&at)
        .bind(tenant_id)
        .execute(tx.as_mut())
        .await
        .map_err(ProviderError::sql("update the lifecycle"))?;
        if to == Lifecycle::Deprovisioned {
            // The tombstone holds no personal data, and neither do the events kept of it.
            sqlx::query(
                "UPDATE outbox SET payload = json_set(payload, '$.owner_email', NULL) WHERE tenant_id = ?",
            )
            .bind(tenant_id)
            .execute(tx.as_mut())
            .await
            .map_err(ProviderError::sql("erase the owner's email from the events"))?;
        }
        for &kind in kinds {
            emit(
                &mut tx,
                ctx,
                tenant_id,
                kind,
                events::transition_detail(ctx, from, to),
            )
            .await?;
        }
        tx.commit().await.map_err(ProviderError::sql("commit"))?;
        Ok(())
    }
}

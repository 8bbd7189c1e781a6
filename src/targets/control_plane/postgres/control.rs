//! The control plane in PostgreSQL: registry, owner memberships, effective flags and quotas,
//! and the events outbox, as tables in the admin schema (`tenant_reconcile` by default).
//! The product's services read these tables; no tenant role is granted them.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::clients::group_commit::{GroupCommit, Together, TENANTS_PER_BATCH};
use crate::clients::postgres::server::{retry, PgServer};
use crate::clients::sql::{Dialect, Pool};
use crate::model::attrs::Attrs;
use crate::model::audit::AuditEntry;
use crate::model::change::ResourceChange;
use crate::model::lifecycle::Lifecycle;
use crate::model::resource::Key;
use crate::model::resource::Kind;
use crate::model::tenant::Effective;
use crate::slug::Slug;
use crate::targets::control_plane::store::purge_end::{self, EndOfPurge};
use crate::targets::control_plane::store::{self, ControlDb, Reading};
use crate::targets::provider::{
    ControlPlane, LiveFleet, Provider, ProviderError, Purge, PurgeEnd, RefreshTarget, Smoke,
    StepContext, TogetherFailed,
};

/// `{schema}` is replaced by the quoted admin schema, a checked identifier.
const TABLES: &str = r#"
CREATE SCHEMA IF NOT EXISTS {schema};
REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;
CREATE TABLE IF NOT EXISTS {schema}.tenants (
    tenant_id  text PRIMARY KEY,
    slug       text NOT NULL UNIQUE,
    name       text NOT NULL,
    plan       text NOT NULL,
    region     text NOT NULL,
    locale     text NOT NULL,
    isolation  text NOT NULL,
    labels     jsonb NOT NULL DEFAULT '{}',
    lifecycle  text NOT NULL,
    step       text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- The row the product's auth layer reads to put the tenantId claim in the owner's token.
CREATE TABLE IF NOT EXISTS {schema}.memberships (
    tenant_id  text NOT NULL REFERENCES {schema}.tenants (tenant_id),
    role       text NOT NULL,
    email      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, role)
);
CREATE TABLE IF NOT EXISTS {schema}.feature_flags (
    tenant_id text NOT NULL REFERENCES {schema}.tenants (tenant_id),
    flag      text NOT NULL,
    enabled   boolean NOT NULL,
    PRIMARY KEY (tenant_id, flag)
);
CREATE TABLE IF NOT EXISTS {schema}.quotas (
    tenant_id text NOT NULL REFERENCES {schema}.tenants (tenant_id),
    name      text NOT NULL,
    value     bigint NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
CREATE TABLE IF NOT EXISTS {schema}.outbox (
    id           bigserial PRIMARY KEY,
    event_id     text NOT NULL UNIQUE,
    tenant_id    text NOT NULL,
    type         text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
-- A tombstone erases the owner's email from its tenant's events: found by index, not by
-- a scan of every tenant's events.
CREATE INDEX IF NOT EXISTS outbox_tenant_id ON {schema}.outbox (tenant_id);
ALTER TABLE {schema}.tenants ADD COLUMN IF NOT EXISTS deprovisioned_at timestamptz;
ALTER TABLE {schema}.tenants ADD COLUMN IF NOT EXISTS outputs jsonb NOT NULL DEFAULT '{}';
-- Each event for each subscriber, and every attempt (never a body or a secret). A relay
-- claims what it sends with a lease, so relays running at once never send one together.
CREATE TABLE IF NOT EXISTS {schema}.deliveries (
    event_id         text NOT NULL,
    subscriber       text NOT NULL,
    tenant_id        text NOT NULL,
    outbox_id        bigint NOT NULL,
    status           text NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    next_at          timestamptz NOT NULL,
    first_attempt_at timestamptz,
    last_error       text,
    delivered_at     timestamptz,
    lease_until      timestamptz,
    PRIMARY KEY (event_id, subscriber)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON {schema}.deliveries (status, next_at);
CREATE INDEX IF NOT EXISTS deliveries_order ON {schema}.deliveries (subscriber, tenant_id, status, outbox_id);
CREATE TABLE IF NOT EXISTS {schema}.delivery_attempts (
    id          bigserial PRIMARY KEY,
    event_id    text NOT NULL,
    subscriber  text NOT NULL,
    at          timestamptz NOT NULL,
    status_code integer,
    error       text,
    latency_ms  bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}.subscribers (
    name        text PRIMARY KEY,
    outbox_id   bigint NOT NULL DEFAULT 0,
    disabled_at timestamptz
);
-- An event's id is taken when it is written, but it is seen when its transaction commits,
-- which may be after a later id's: so how far a subscriber was given events is kept as a
-- transaction id, below which every writer has ended (`horizon`), not as the largest id
-- seen. Rows written before this column existed all carry the id of the statement that
-- added it; a subscriber without a horizon is read by id once, then given one.
ALTER TABLE {schema}.outbox ADD COLUMN IF NOT EXISTS tx xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX IF NOT EXISTS outbox_tx ON {schema}.outbox (tx);
ALTER TABLE {schema}.subscribers ADD COLUMN IF NOT EXISTS horizon xid8;
-- One row per purged resource, kept for good; it holds no data of the tenant's.
CREATE TABLE IF NOT EXISTS {schema}.deletion_audit (
    id            bigserial PRIMARY KEY,
    tenant_id     text NOT NULL,
    slug          text NOT NULL,
    address       text NOT NULL,
    resource      text NOT NULL,
    holds         text NOT NULL,
    erasure       boolean NOT NULL,
    export        text,
    export_sha256 text,
    git_commit    text,
    run_by        text NOT NULL,
    started_at    text NOT NULL,
    purged_at     text,
    UNIQUE (tenant_id, address)
);
ALTER TABLE {schema}.deletion_audit ADD COLUMN IF NOT EXISTS export_until text;
"#;

pub struct PgControl {
    server: Arc<PgServer>,
    dialect: Dialect,
    ready: OnceCell<()>,
    /// Purges that begin or end at the same moment, written together.
    audits: GroupCommit<Vec<AuditEntry>, Together<()>>,
    /// The step markers of tenants in flight (a tenant id, its step), written together:
    /// each tenant marks each of its steps before it, a statement and a commit each.
    steps: GroupCommit<(String, Option<String>), Together<()>>,
    ends: GroupCommit<EndOfPurge, Together<Option<Attrs>>>,
}

impl PgControl {
    pub fn new(server: Arc<PgServer>) -> PgControl {
        PgControl {
            dialect: Dialect::Postgres {
                schema: server.schema(),
            },
            server,
            ready: OnceCell::new(),
            audits: GroupCommit::with_limit(TENANTS_PER_BATCH),
            steps: GroupCommit::with_limit(TENANTS_PER_BATCH),
            ends: GroupCommit::with_limit(TENANTS_PER_BATCH),
        }
    }

    /// `sql` with `{schema}` filled in, and nothing else: the tables' DDL holds `'{}'`
    /// defaults, which are no tokens.
    pub(crate) fn sql(&self, sql: &str) -> String {
        sql.replace("{schema}", self.dialect.schema())
    }

    /// The pool, for a single statement, with the tables created on first use.
    pub(crate) async fn pool(&self) -> Result<&sqlx::PgPool, ProviderError> {
        let pool = self.server.pool().await?;
        crate::clients::postgres::ensure_once(
            pool,
            &self.ready,
            self.dialect.schema(),
            &self.sql(TABLES),
            "the control-plane tables",
        )
        .await?;
        Ok(pool)
    }

    async fn apply_once(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        let mut tx = self.tables().await?.begin().await?;
        let attrs = store::control::apply_in(self, &mut tx, ctx, change).await?;
        tx.commit().await?;
        Ok(Some(attrs))
    }
}

#[async_trait]
impl ControlDb for PgControl {
    fn dialect(&self) -> &Dialect {
        &self.dialect
    }

    async fn tables(&self) -> Result<Pool, ProviderError> {
        Ok(Pool::Postgres(self.pool().await?.clone()))
    }

    /// The server's pool, once the tables are found: a plan makes none.
    async fn reader(&self) -> Result<Reading, ProviderError> {
        let pool = self.server.pool().await?;
        let (exists,): (bool,) = sqlx::query_as("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("{}.tenants", self.dialect.schema()))
            .fetch_one(pool)
            .await
            .map_err(ProviderError::sql("look for the control-plane tables"))?;
        Ok(Reading {
            pool: exists.then(|| Pool::Postgres(pool.clone())),
            calls: 1,
            close: false,
        })
    }
}

#[async_trait]
impl Provider for PgControl {
    fn name(&self) -> &'static str {
        "postgres control plane"
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
        retry!("control plane", self.apply_once(ctx, change))
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
        retry!(
            "control plane",
            store::control::apply_all(self, ctx, changes)
        )
    }

    crate::targets::provider::capabilities!(Purge, Smoke);
}

#[async_trait]
impl Purge for PgControl {
    async fn purge(&self, ctx: &StepContext<'_>, key: &Key) -> Result<(), ProviderError> {
        retry!("purge", store::control::purge(self, ctx, key))
    }
}

#[async_trait]
impl Smoke for PgControl {
    async fn smoke(
        &self,
        ctx: &StepContext<'_>,
        _sql: &[&crate::model::checks::CheckSpec],
    ) -> Vec<crate::model::health::CheckOutcome> {
        store::control::smoke(self, ctx).await
    }
}

#[async_trait]
impl ControlPlane for PgControl {
    async fn register(
        &self,
        ctx: &StepContext<'_>,
        attrs: &Attrs,
    ) -> Result<String, ProviderError> {
        retry!("register", store::control::register(self, ctx, attrs))
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
        let item = (tenant_id.to_string(), step.map(str::to_string));
        let together = self
            .steps
            .together(item, "marking steps", |items| async move {
                store::control::set_steps(self, &items).await?;
                Ok::<_, ProviderError>(vec![Together::Done(()); items.len()])
            })
            .await;
        if together == Together::Done(()) {
            return Ok(());
        }
        retry!("set step", store::control::set_step(self, tenant_id, step))
    }

    async fn transition(&self, ctx: &StepContext<'_>, to: Lifecycle) -> Result<(), ProviderError> {
        retry!("transition", store::control::transition(self, ctx, to))
    }

    async fn audit_begin(&self, entries: &[AuditEntry]) -> Result<(), ProviderError> {
        if entries.is_empty() {
            return Ok(());
        }
        let together = self
            .audits
            .together(entries.to_vec(), "writing audits", |items| async move {
                let entries: Vec<&AuditEntry> = items.iter().flatten().collect();
                store::control::write_audits(self, &entries).await?;
                Ok::<_, ProviderError>(vec![Together::Done(()); items.len()])
            })
            .await;
        if together == Together::Done(()) {
            return Ok(());
        }
        let entries: Vec<&AuditEntry> = entries.iter().collect();
        retry!("audit", store::control::write_audits(self, &entries))
    }

    async fn end_purge(
        &self,
        ctx: &StepContext<'_>,
        end: &PurgeEnd<'_>,
    ) -> Result<Option<Attrs>, ProviderError> {
        if let Some(item) = EndOfPurge::of(ctx, end) {
            let together = self
                .ends
                .together(item, "ending purges", |items| {
                    purge_end::write_ends(self, items)
                })
                .await;
            if let Together::Done(attrs) = together {
                return Ok(attrs);
            }
        }
        retry!("end of the purge", purge_end::end_purge(self, ctx, end))
    }

    async fn audit_log(&self, slug: Option<&Slug>) -> Result<Vec<AuditEntry>, ProviderError> {
        let pool = self.server.pool().await?;
        let (exists,): (bool,) = sqlx::query_as("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("{}.deletion_audit", self.dialect.schema()))
            .fetch_one(pool)
            .await
            .map_err(ProviderError::sql("look for the deletion audit"))?;
        if !exists {
            return Ok(Vec::new());
        }
        store::control::audit_log(self, &Pool::Postgres(pool.clone()), slug).await
    }
}

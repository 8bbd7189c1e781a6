//! The control plane in PostgreSQL: registry, owner memberships, effective flags and quotas,
//! and the events outbox, as tables in the admin schema (`tenant_reconcile` by default).
//! The product's services read these tables; no tenant role is granted them.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::PgConnection;
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
use crate::slug::Slug;
use crate::targets::control_plane::postgres::control_together::EndOfPurge;
use crate::targets::control_plane::rows::{self, ControlRows, RegistryRow};
use crate::targets::control_plane::store::{control as store, ControlDb};
use crate::targets::provider::{
    unmanaged, ControlPlane, LiveFleet, Provider, ProviderError, Purge, PurgeEnd, RefreshTarget,
    Smoke, StepContext,
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

/// A tenant whose purge ends: the control-plane tables its rows go from, and the addresses
/// whose audit rows are completed.
pub(crate) struct Ending<'a> {
    pub tenant_id: &'a str,
    pub tables: &'a [&'static str],
    pub audited: &'a [String],
}

pub struct PgControl {
    server: Arc<PgServer>,
    dialect: Dialect,
    ready: OnceCell<()>,
    /// Purges that begin or end at the same moment, written together.
    audits: GroupCommit<Vec<AuditEntry>, Together<()>>,
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
        let attrs = store::apply_in(self, &mut tx, ctx, change).await?;
        tx.commit().await?;
        Ok(Some(attrs))
    }

    /// [`ControlPlane::end_purge`] in one transaction, so one commit.
    async fn end_purge_once(
        &self,
        ctx: &StepContext<'_>,
        end: &PurgeEnd<'_>,
    ) -> Result<Option<Attrs>, ProviderError> {
        let tenant_id = ctx.tenant_id()?;
        let tables = end
            .rows
            .iter()
            .map(|key| rows::table_of(key.kind).ok_or_else(|| unmanaged(self, key.kind)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut tx = self.tables().await?.begin().await?;
        let ending = Ending {
            tenant_id,
            tables: &tables,
            audited: end.audited,
        };
        self.delete_and_complete(tx.postgres().expect("a Postgres transaction"), &[ending])
            .await?;
        let attrs = match end.tombstone {
            Some(change) => Some(store::apply_in(self, &mut tx, ctx, change).await?),
            None => None,
        };
        if let Some(to) = end.to {
            store::transition_in(self, &mut tx, ctx, to).await?;
        }
        tx.commit().await?;
        Ok(attrs)
    }

    pub(crate) async fn delete_and_complete(
        &self,
        tx: &mut PgConnection,
        ends: &[Ending<'_>],
    ) -> Result<(), ProviderError> {
        let mut tables: Vec<&'static str> =
            ends.iter().flat_map(|e| e.tables.iter().copied()).collect();
        tables.sort_unstable();
        tables.dedup();
        let mut deletes = String::new();
        for (n, table) in tables.iter().enumerate() {
            deletes += &format!(
                "d{n} AS (DELETE FROM {{schema}}.{table} WHERE tenant_id = ANY(${})), ",
                n + 4
            );
        }
        let sql = self.sql(&format!(
            "WITH {deletes}done AS (SELECT 1)
             UPDATE {{schema}}.deletion_audit a SET purged_at = $1
             FROM unnest($2::text[], $3::text[]) AS c (tenant_id, address)
             WHERE a.tenant_id = c.tenant_id AND a.address = c.address AND a.purged_at IS NULL"
        ));
        let (ids, addresses): (Vec<&str>, Vec<&str>) = ends
            .iter()
            .flat_map(|e| e.audited.iter().map(move |a| (e.tenant_id, a.as_str())))
            .unzip();
        let mut query = sqlx::query(&sql)
            .bind(crate::model::lifecycle::now())
            .bind(ids)
            .bind(addresses);
        for table in &tables {
            let of: Vec<&str> = ends
                .iter()
                .filter(|e| e.tables.contains(table))
                .map(|e| e.tenant_id)
                .collect();
            query = query.bind(of);
        }
        query.execute(&mut *tx).await.map_err(ProviderError::sql(
            "purge the control-plane rows and complete the deletion audit",
        ))?;
        Ok(())
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
}

/// `(tenant_id, {name: value})` rows as attribute maps per tenant.
fn grouped(
    rows: Result<Vec<(String, Value)>, sqlx::Error>,
    what: &str,
) -> Result<HashMap<String, Attrs>, ProviderError> {
    rows.map_err(ProviderError::sql(what))?
        .into_iter()
        .map(|(id, map)| {
            serde_json::from_value(map)
                .map(|attrs| (id, attrs))
                .map_err(ProviderError::failed(what))
        })
        .collect()
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
        let pool = self.server.pool().await?;
        let (exists,): (bool,) = sqlx::query_as("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("{}.tenants", self.dialect.schema()))
            .fetch_one(pool)
            .await
            .map_err(ProviderError::sql("look for the control-plane tables"))?;
        if !exists {
            live.calls.push((self.name(), 1));
            return Ok(());
        }
        // One query per table for the whole fleet, however many tenants there are.
        let registry_sql = self.sql(
            "SELECT tenant_id, slug, name, plan, region, locale, isolation, labels, lifecycle, step FROM {schema}.tenants",
        );
        let registry: Vec<RegistryRow> = sqlx::query_as(&registry_sql)
            .fetch_all(pool)
            .await
            .map_err(ProviderError::sql("read the registry"))?;
        let owners_sql =
            self.sql("SELECT tenant_id, email FROM {schema}.memberships WHERE role = 'owner'");
        let owners: Vec<(String, String)> = sqlx::query_as(&owners_sql)
            .fetch_all(pool)
            .await
            .map_err(ProviderError::sql("read memberships"))?;
        let flags_sql = self.sql(
            "SELECT tenant_id, jsonb_object_agg(flag, enabled) FROM {schema}.feature_flags GROUP BY tenant_id",
        );
        let flags = grouped(
            sqlx::query_as(&flags_sql).fetch_all(pool).await,
            "read feature flags",
        )?;
        let quotas_sql = self.sql(
            "SELECT tenant_id, jsonb_object_agg(name, value) FROM {schema}.quotas GROUP BY tenant_id",
        );
        let quotas = grouped(
            sqlx::query_as(&quotas_sql).fetch_all(pool).await,
            "read quotas",
        )?;
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
        live.calls.push((self.name(), 5));
        Ok(())
    }

    async fn apply(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        retry!("control plane", self.apply_once(ctx, change))
    }

    crate::targets::provider::capabilities!(Purge, Smoke);
}

#[async_trait]
impl Purge for PgControl {
    async fn purge(&self, ctx: &StepContext<'_>, key: &Key) -> Result<(), ProviderError> {
        retry!("purge", store::purge(self, ctx, key))
    }
}

#[async_trait]
impl Smoke for PgControl {
    async fn smoke(
        &self,
        ctx: &StepContext<'_>,
        _sql: &[&crate::model::checks::CheckSpec],
    ) -> Vec<crate::model::health::CheckOutcome> {
        store::smoke(self, ctx).await
    }
}

#[async_trait]
impl ControlPlane for PgControl {
    async fn register(
        &self,
        ctx: &StepContext<'_>,
        attrs: &Attrs,
    ) -> Result<String, ProviderError> {
        retry!("register", store::register(self, ctx, attrs))
    }

    async fn emit_event(
        &self,
        ctx: &StepContext<'_>,
        kind: &str,
        detail: Value,
    ) -> Result<(), ProviderError> {
        store::emit_event(self, ctx, kind, detail).await
    }

    async fn set_outputs(
        &self,
        tenant_id: &str,
        outputs: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), ProviderError> {
        store::set_outputs(self, tenant_id, outputs).await
    }

    async fn set_step(&self, tenant_id: &str, step: Option<&str>) -> Result<(), ProviderError> {
        retry!("set step", store::set_step(self, tenant_id, step))
    }

    async fn transition(&self, ctx: &StepContext<'_>, to: Lifecycle) -> Result<(), ProviderError> {
        retry!("transition", store::transition(self, ctx, to))
    }

    async fn audit_begin(&self, entries: &[AuditEntry]) -> Result<(), ProviderError> {
        if entries.is_empty() {
            return Ok(());
        }
        let together = self
            .audits
            .together(entries.to_vec(), "writing audits", |items| async move {
                let entries: Vec<&AuditEntry> = items.iter().flatten().collect();
                store::write_audits(self, &entries).await?;
                Ok::<_, ProviderError>(vec![Together::Done(()); items.len()])
            })
            .await;
        if together == Together::Done(()) {
            return Ok(());
        }
        let entries: Vec<&AuditEntry> = entries.iter().collect();
        retry!("audit", store::write_audits(self, &entries))
    }

    async fn audit_done(&self, tenant_id: &str, addresses: &[String]) -> Result<(), ProviderError> {
        retry!("audit", async {
            let pool = self.tables().await?;
            store::audit_done(self, &pool, tenant_id, addresses).await
        })
    }

    async fn end_purge(
        &self,
        ctx: &StepContext<'_>,
        end: &PurgeEnd<'_>,
    ) -> Result<Option<Attrs>, ProviderError> {
        if let Some(item) = EndOfPurge::of(ctx, end) {
            let together = self
                .ends
                .together(item, "ending purges", |items| self.write_ends(items))
                .await;
            if let Together::Done(attrs) = together {
                return Ok(attrs);
            }
        }
        retry!("end of the purge", self.end_purge_once(ctx, end))
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
        store::audit_log(self, &Pool::Postgres(pool.clone()), slug).await
    }
}

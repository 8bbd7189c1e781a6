//! The Postgres data target over several servers (`postgres_server` blocks).
//!
//! Each server is a [`PgData`] of its own, with its own data catalog in its admin schema,
//! and each tenant's role, slice and seed are on the server it was placed on. Which tenant
//! is on which server is the placement catalog's: a table in the admin database of the
//! `postgres` block (where the control plane and the state are), a row per tenant with the
//! epoch a move bumps. A placement is written once, under its server's lock, only while
//! the server is under its cap: two runs placing tenants at once cannot fill it past it.
//! `placing.rs` keeps that catalog; `moving.rs` carries out moves between servers.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::OnceCell;

use crate::clients::postgres::ensure_once;
use crate::clients::postgres::server::PgServer;
use crate::model::attrs::Attrs;
use crate::model::change::ResourceChange;
use crate::model::migration::Migration;
use crate::model::resource::{Key, Kind};
use crate::model::retired;
use crate::model::tenant::Effective;
use crate::placement::Server;
use crate::targets::data::server_blocks::ServerConfig;
use crate::targets::data::Naming;
use crate::targets::provider::{
    Export, ExportRequest, LiveFleet, Placements, Provider, ProviderError, Purge, RefreshTarget,
    Smoke, StepContext, TogetherFailed,
};

use super::PgData;

mod moving;
mod placing;

pub struct PgServers {
    /// The `postgres` block's server, whose admin schema holds the placement catalog.
    admin: Arc<PgServer>,
    schema: String,
    catalog_ready: OnceCell<()>,
    servers: Vec<Server>,
    /// The server block that is the `postgres` block's own server, if one is: where the
    /// tenants made before the config named servers are.
    own: Option<String>,
    data: BTreeMap<String, PgData>,
    /// The rows from which a move goes by replication (`replicate_moves_from_rows`).
    replicate_from_rows: u64,
}

const CATALOG: &str = "CREATE SCHEMA IF NOT EXISTS {schema};
REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;
CREATE TABLE IF NOT EXISTS {schema}.placements (
  slug text PRIMARY KEY,
  tenant_id text NOT NULL,
  server text NOT NULL,
  epoch integer NOT NULL,
  placed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS placements_server ON {schema}.placements (server);";

impl PgServers {
    pub fn new(
        admin: Arc<PgServer>,
        servers: &[ServerConfig],
        migrations: Vec<Migration>,
        naming: Naming,
    ) -> PgServers {
        PgServers {
            schema: admin.schema(),
            admin: admin.clone(),
            catalog_ready: OnceCell::new(),
            servers: servers.iter().map(|s| s.placement.clone()).collect(),
            own: servers
                .iter()
                .find(|s| s.own_server)
                .map(|s| s.placement.name.clone()),
            // The postgres block's, which every server block copies.
            replicate_from_rows: servers
                .first()
                .map_or(0, |s| s.connection.replicate_moves_from_rows),
            data: servers
                .iter()
                .map(|s| {
                    // The postgres block's own server is reached through its pool.
                    let server = match s.own_server {
                        true => admin.clone(),
                        false => Arc::new(PgServer::from_config(&s.connection)),
                    };
                    let data = PgData::new(server, migrations.clone(), naming.clone());
                    (s.placement.name.clone(), data)
                })
                .collect(),
        }
    }

    /// The admin pool, with the placement catalog made on first use.
    async fn catalog(&self) -> Result<&sqlx::PgPool, ProviderError> {
        let pool = self.admin.pool().await?;
        ensure_once(
            pool,
            &self.catalog_ready,
            &self.schema,
            &CATALOG.replace("{schema}", &self.schema),
            "the placement catalog",
        )
        .await?;
        Ok(pool)
    }

    /// Any server's target, for what is a fact of a change alone (whether it replaces, marks
    /// after creating, goes with the next change): the same whichever server it goes to.
    fn any(&self) -> Option<&PgData> {
        self.data.values().next()
    }

    /// The server called `name`.
    fn on(&self, name: &str) -> Result<&PgData, ProviderError> {
        self.data.get(name).ok_or_else(|| not_named(name))
    }

    /// The server the tenant was placed on, as its state records it.
    fn placed(&self, recorded: &BTreeMap<Key, Attrs>) -> Result<&PgData, ProviderError> {
        match recorded.get(&Key::new(Kind::PLACEMENT)) {
            Some(at) => self.on(at.str("server")),
            None => Err(ProviderError::Unplanned(
                "the tenant is not placed on a Postgres server yet".into(),
            )),
        }
    }

    /// The server holding the slice `recorded` names: the one a retired slice names (a copy
    /// a move left, or a slice a replace left, on the server it was on then), otherwise the
    /// tenant's.
    fn holding(&self, recorded: &BTreeMap<Key, Attrs>) -> Result<&PgData, ProviderError> {
        let slice = recorded.get(&Key::new(Kind::DATABASE));
        match slice
            .map(|s| s.str(retired::SERVER))
            .filter(|s| !s.is_empty())
        {
            Some(server) => self.on(server),
            None => self.placed(recorded),
        }
    }
}

/// A server the config does not name (any more).
fn not_named(name: &str) -> ProviderError {
    ProviderError::Refused(format!(
        "the tenant is placed on the Postgres server {name:?}, which the config does not name; nothing was changed\n  hint: put its postgres_server block back"
    ))
}

#[async_trait]
impl Provider for PgServers {
    fn name(&self) -> &'static str {
        "postgres data"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::PLACEMENT, Kind::ROLE, Kind::DATABASE, Kind::SEED]
    }

    fn forces_replace(&self, kind: Kind, field: &str) -> bool {
        self.any().is_some_and(|d| d.forces_replace(kind, field))
    }

    fn marks_after_create(&self, change: &ResourceChange) -> bool {
        self.any().is_some_and(|d| d.marks_after_create(change))
    }

    async fn refresh(
        &self,
        targets: &[RefreshTarget],
        live: &mut LiveFleet,
    ) -> Result<(), ProviderError> {
        // Each server reads the tenants placed on it (or about to be), all at once, each
        // in a constant number of queries.
        let mut on: BTreeMap<&str, Vec<RefreshTarget>> = BTreeMap::new();
        for t in targets {
            if let Some(server) = t.server.as_deref() {
                // What was left on another server is counted there.
                let mut here = t.clone();
                here.retired
                    .retain(|r| r.server().is_none_or(|s| s == server));
                on.entry(server).or_default().push(here);
            }
        }
        let whole_fleet = live.whole_fleet;
        let reads = on.into_iter().map(|(server, targets)| async move {
            let mut part = LiveFleet::default();
            part.whole_fleet = whole_fleet;
            self.on(server)?.refresh(&targets, &mut part).await?;
            Ok::<_, ProviderError>(part)
        });
        for part in futures::future::try_join_all(reads).await? {
            live.absorb_alike(part);
        }
        self.count_left_elsewhere(targets, live).await;
        self.size_up_moves(targets, live).await;
        let placed = crate::targets::provider::wanting(targets, Kind::PLACEMENT);
        if !placed.is_empty() {
            self.refresh_placements(&placed, live).await?;
        }
        Ok(())
    }

    async fn apply(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        if change.key.kind == Kind::PLACEMENT {
            return self.place(ctx, change).await.map(Some);
        }
        self.placed(ctx.recorded)?.apply(ctx, change).await
    }

    fn joins(&self, tenant: &Effective, first: &ResourceChange, next: &ResourceChange) -> bool {
        // A placement is a step of its own: recorded before anything is made where it says.
        first.key.kind != Kind::PLACEMENT
            && self.any().is_some_and(|d| d.joins(tenant, first, next))
    }

    async fn apply_together(
        &self,
        ctx: &StepContext<'_>,
        changes: &[ResourceChange],
    ) -> Result<Vec<Attrs>, TogetherFailed> {
        match self.placed(ctx.recorded) {
            Ok(data) => data.apply_together(ctx, changes).await,
            Err(error) => Err(TogetherFailed { at: 0, error }),
        }
    }

    crate::targets::provider::capabilities!(Export, Purge, Smoke, Placements);
}

#[async_trait]
impl Purge for PgServers {
    fn remote_per_tenant(&self) -> bool {
        false
    }

    async fn purge_all(&self, ctx: &StepContext<'_>, keys: &[Key]) -> Result<(), ProviderError> {
        let slice = ctx.recorded.get(&Key::new(Kind::DATABASE));
        if let Some(left) = slice.filter(|s| s.str(retired::LEFT_BY) == "move") {
            return self.purge_moved_copy(ctx, left.str(retired::SERVER)).await;
        }
        self.holding(ctx.recorded)?.purge_all(ctx, keys).await?;
        self.forget_purged(ctx, keys).await
    }

    async fn purge(&self, ctx: &StepContext<'_>, key: &Key) -> Result<(), ProviderError> {
        self.purge_all(ctx, std::slice::from_ref(key)).await
    }
}

#[async_trait]
impl Export for PgServers {
    async fn export(&self, req: &ExportRequest<'_>) -> Result<(), ProviderError> {
        self.holding(req.recorded)?.export(req).await
    }
}

#[async_trait]
impl Smoke for PgServers {
    async fn smoke(
        &self,
        ctx: &StepContext<'_>,
        sql: &[&crate::model::checks::CheckSpec],
    ) -> Vec<crate::model::health::CheckOutcome> {
        match self.placed(ctx.recorded) {
            Ok(data) => data.smoke(ctx, sql).await,
            // Nothing of it is anywhere yet: there is nothing to check.
            Err(_) => Vec::new(),
        }
    }
}

#[async_trait]
impl Placements for PgServers {
    async fn loads(&self) -> Result<Vec<(String, u32)>, ProviderError> {
        let pool = self.catalog().await?;
        let rows: Vec<(String, i64)> = sqlx::query_as(&format!(
            "SELECT server, count(*) FROM {}.placements GROUP BY server",
            self.schema
        ))
        .fetch_all(pool)
        .await
        .map_err(ProviderError::sql("count the tenants on each server"))?;
        Ok(rows
            .into_iter()
            .map(|(server, n)| (server, u32::try_from(n).unwrap_or(u32::MAX)))
            .collect())
    }
}

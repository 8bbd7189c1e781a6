//! The Postgres data target over several servers (`postgres_server` blocks).
//!
//! Each server is a [`PgData`] of its own, with its own data catalog in its admin schema,
//! and each tenant's role, slice and seed are on the server it was placed on. Which tenant
//! is on which server is the placement catalog's: a table in the admin database of the
//! `postgres` block (where the control plane and the state are), a row per tenant with the
//! epoch a move bumps. A placement is written once, under its server's lock, only while
//! the server is under its cap: two runs placing tenants at once cannot fill it past it.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::OnceCell;

use crate::clients::postgres::server::PgServer;
use crate::clients::postgres::{advisory_xact_locks, ensure_once};
use crate::model::attrs::{attrs, Attrs};
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

    /// Destroys the copy a move left on the tenant's old server, its slice and its role
    /// there; never on the server the tenant is placed on, where they are its own.
    async fn purge_moved_copy(
        &self,
        ctx: &StepContext<'_>,
        server: &str,
    ) -> Result<(), ProviderError> {
        if retired::placed_on(ctx.recorded) == Some(server) {
            return Err(ProviderError::Refused(format!(
                "the copy left on {server} by a move is where the tenant is placed now, and is its own; nothing was destroyed"
            )));
        }
        let (there, here) = (self.on(server)?, self.placed(ctx.recorded)?);
        // Two server blocks on one cluster (databases of one server) share its roles: the
        // tenant's role there is the one it uses, and only the slice goes.
        let keys = match same_cluster(there, here).await {
            true => vec![Key::new(Kind::DATABASE)],
            false => vec![Key::new(Kind::DATABASE), Key::new(Kind::ROLE)],
        };
        there.purge_all(ctx, &keys).await
    }

    /// Counts what the copies and slices left on servers other than the tenant's hold,
    /// each on its server (one query each: few tenants have any).
    async fn count_left_elsewhere(&self, targets: &[RefreshTarget], live: &mut LiveFleet) {
        let mut queries = 0;
        for t in targets {
            for r in t.retired.iter().filter(|r| r.key.kind == Kind::DATABASE) {
                let Some(server) = r.server().filter(|s| Some(*s) != t.server.as_deref()) else {
                    continue;
                };
                queries += 1;
                let counted = match self.on(server) {
                    Ok(data) => {
                        let (isolation, name) = (r.attrs.str("isolation"), r.attrs.str("name"));
                        data.holdings(isolation, name, t.tenant_id.as_deref()).await
                    }
                    Err(e) => Err(e),
                };
                let what = counted
                    .unwrap_or_else(|e| format!("not counted: {}", crate::causes::chain(&e)));
                live.holds_at(&t.slug, r.address_key(), what);
            }
        }
        if queries > 0 {
            live.calls
                .push(("postgres data, left on other servers", queries));
        }
    }

    /// Says, for each tenant this plan moves, what its slice holds and how it will move (by
    /// replication, writable, or by a copy under a fence, and why): one look each, on the
    /// server it leaves.
    async fn size_up_moves(&self, targets: &[RefreshTarget], live: &mut LiveFleet) {
        for t in targets.iter().filter(|t| t.moving_to.is_some()) {
            let Some(data) = t.server.as_deref().and_then(|s| self.data.get(s)) else {
                continue;
            };
            let slice = data.slice(&t.slug, t.isolation);
            let isolation = t.isolation.as_str();
            let looked = async {
                let holds = data
                    .holdings(isolation, &slice.name, t.tenant_id.as_deref())
                    .await?;
                let how = match super::replicate::why_not(data, &slice, self.replicate_from_rows)
                    .await?
                {
                    None => "by replication, writable until the end".to_string(),
                    Some(why) => {
                        format!("by a copy under a fence, its writes paused for the copy ({why})")
                    }
                };
                Ok::<_, ProviderError>(format!("{holds}, {how}"))
            }
            .await;
            let what =
                looked.unwrap_or_else(|e| format!("not sized up: {}", crate::causes::chain(&e)));
            live.holds_at(&t.slug, Key::new(Kind::PLACEMENT), what);
        }
    }

    /// Records where the tenant is placed: once, on a server under its cap, counted under
    /// the server's lock. A tenant placed elsewhere already is moved there
    /// ([`super::moves`]): its data copied under a fence, then the catalog's row flipped
    /// under the same lock and cap, its epoch bumped.
    async fn place(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Attrs, ProviderError> {
        let wanted = change
            .desired
            .as_ref()
            .map(|d| d.attrs.str("server").to_string())
            .unwrap_or_default();
        let server = self
            .servers
            .iter()
            .find(|s| s.name == wanted)
            .ok_or_else(|| not_named(&wanted))?;
        let slug = ctx.tenant.slug.as_str();
        let tenant_id = ctx.tenant_id()?;
        let role = self.on(&wanted)?.naming.role(&ctx.tenant.slug);
        self.stop_cut_short_replication(ctx, change).await?;
        let (tx, at, tenants) = self.locked(&wanted, slug, tenant_id).await?;
        let full = |tenants: i64| {
            ProviderError::Refused(format!(
                "the Postgres server {wanted} is full ({tenants} of {} tenants), filled by another run since this plan was made; no placement was written, and nothing was made on a server\n  hint: plan again, which places the tenant elsewhere or says why it cannot",
                server.cap
            ))
        };
        match at {
            Some(at) if at == wanted => {
                tx.commit().await.map_err(ProviderError::sql("commit"))?;
                // A move whose flip committed and whose run stopped before the state knew:
                // its last step is done again.
                if ctx
                    .recorded
                    .get(&Key::new(Kind::PLACEMENT))
                    .is_some_and(|a| a.str("server") != wanted)
                {
                    self.on(&wanted)?.lift_fence(ctx, &role).await?;
                }
            }
            Some(at) => {
                if tenants >= i64::from(server.cap) {
                    return Err(full(tenants));
                }
                // The copy is long: no lock is held over it.
                tx.commit().await.map_err(ProviderError::sql("commit"))?;
                let (from, to) = (self.on(&at)?, self.on(&wanted)?);
                let began = std::time::Instant::now();
                let (rows, fenced) = self.move_data(ctx, from, to).await?;
                let (mut tx, now, tenants) = self.locked(&wanted, slug, tenant_id).await?;
                let flipped = match now {
                    Some(now) if now == at && tenants < i64::from(server.cap) => {
                        sqlx::query(&format!(
                            "UPDATE {}.placements SET server = $2, epoch = epoch + 1, placed_at = now()
                             WHERE slug = $1",
                            self.schema
                        ))
                        .bind(slug)
                        .bind(&wanted)
                        .execute(tx.as_mut())
                        .await
                        .map_err(ProviderError::sql("record the move"))?;
                        tx.commit().await.map_err(ProviderError::sql("commit the move"))
                    }
                    Some(now) if now != at => Err(ProviderError::Refused(format!(
                        "another run placed the tenant on {now} during this move; nothing more was changed"
                    ))),
                    _ => Err(ProviderError::Refused(format!(
                        "the Postgres server {wanted} is full ({tenants} of {} tenants), filled by another run during this move; the tenant stays on {at}, and the copy made on {wanted} is left there without a login\n  hint: plan again, which moves the tenant elsewhere or says why it cannot",
                        server.cap
                    ))),
                };
                if let Err(e) = flipped {
                    // Not flipped: the old copy is still the tenant's.
                    from.lift_fence(ctx, &role).await?;
                    return Err(e);
                }
                to.lift_fence(ctx, &role).await?;
                let ms = |since: std::time::Instant| {
                    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
                };
                let (paused_ms, took_ms) = (ms(fenced), ms(began));
                tracing::info!(tenant = slug, from = %at, to = %wanted, rows, paused_ms, took_ms, "moved");
            }
            // Made before the config named servers: its data is on the postgres block's own
            // server, which is recorded whatever its load; on any other, its role and slice
            // would be built anew, empty.
            None if made_before_servers(ctx) => {
                if self.own.as_deref() != Some(wanted.as_str()) {
                    return Err(ProviderError::Refused(format!(
                        "the tenant's data is on the postgres block's server, from before the config named servers, not on {wanted}; no placement was written\n  hint: plan again"
                    )));
                }
                self.insert_placement(tx, slug, tenant_id, &wanted).await?;
            }
            None if tenants >= i64::from(server.cap) => return Err(full(tenants)),
            None => self.insert_placement(tx, slug, tenant_id, &wanted).await?,
        }
        Ok(attrs([("server", json!(wanted))]))
    }

    /// Writes the tenant's first placement, in the transaction holding its server's lock. A
    /// row left by another tenant of this slug (released) is this one's now: nothing of
    /// that tenant is moved or counted.
    async fn insert_placement(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        slug: &str,
        tenant_id: &str,
        server: &str,
    ) -> Result<(), ProviderError> {
        sqlx::query(&format!(
            "INSERT INTO {}.placements (slug, tenant_id, server, epoch) VALUES ($1, $2, $3, 1)
             ON CONFLICT (slug) DO UPDATE SET tenant_id = excluded.tenant_id,
               server = excluded.server, epoch = 1, placed_at = now()",
            self.schema
        ))
        .bind(slug)
        .bind(tenant_id)
        .bind(server)
        .execute(tx.as_mut())
        .await
        .map_err(ProviderError::sql("record the placement"))?;
        tx.commit().await.map_err(ProviderError::sql("commit"))
    }

    /// Stops the replication a move cut short left running (refresh reported it as
    /// `replicating_to`), from the server the tenant is on: a move that follows starts anew,
    /// and without one the tenant stays where it is.
    async fn stop_cut_short_replication(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<(), ProviderError> {
        let replicating = change
            .fields()
            .iter()
            .find(|f| f.field == "replicating_to")
            .and_then(|f| f.old.as_ref()?.as_str().map(str::to_string));
        let Some(to) = replicating else {
            return Ok(());
        };
        let here = self.placed(ctx.recorded)?;
        match here.recorded_slice(ctx)? {
            Some(slice) => super::replicate::stop(ctx, here, self.on(&to)?, &slice).await,
            None => Ok(()),
        }
    }

    /// Moves the tenant's data from `from` to `to`: by replication where it can
    /// ([`super::replicate`], for a tenant of at least `replicate_moves_from_rows` rows),
    /// otherwise by a copy under the fence ([`super::moves`]). Returns the rows moved and
    /// when the fence went up. On an error the fence on `from` is lifted again: the old copy
    /// is still the tenant's.
    async fn move_data(
        &self,
        ctx: &StepContext<'_>,
        from: &PgData,
        to: &PgData,
    ) -> Result<(u64, std::time::Instant), ProviderError> {
        let slice = from
            .recorded_slice(ctx)?
            .ok_or_else(|| ProviderError::Unplanned("the tenant has no slice to move".into()))?;
        let role = from.naming.role(&ctx.tenant.slug);
        let moved = async {
            match super::replicate::why_not(from, &slice, self.replicate_from_rows).await? {
                None => super::replicate::replicate(ctx, from, to, &slice, &role).await,
                Some(why) => {
                    tracing::info!(tenant = %ctx.tenant.slug, "moved by a copy under a fence: {why}");
                    super::moves::copy_over(ctx, from, to, &slice, &role).await
                }
            }
        }
        .await;
        if moved.is_err() {
            if let Err(lift) = from.lift_fence(ctx, &role).await {
                tracing::warn!(role = %role, error = %lift, "could not lift the fence after a failed move");
            }
        }
        moved
    }

    /// A transaction holding `server`'s placement lock, with where the catalog has `slug`
    /// (when the row is `tenant_id`'s: one of another tenant that had the slug, released or
    /// purged, is none) and how many tenants it has on `server`.
    async fn locked(
        &self,
        server: &str,
        slug: &str,
        tenant_id: &str,
    ) -> Result<Locked, ProviderError> {
        let pool = self.catalog().await?;
        let mut tx = pool.begin().await.map_err(ProviderError::sql("begin"))?;
        advisory_xact_locks(
            tx.as_mut(),
            &[format!("tenant-reconcile/placement/{server}")],
        )
        .await?;
        let sql = format!(
            "SELECT server, (SELECT count(*) FROM {s}.placements WHERE server = $2)
             FROM (SELECT 1) one LEFT JOIN {s}.placements p ON p.slug = $1 AND p.tenant_id = $3",
            s = self.schema
        );
        let (at, tenants): (Option<String>, i64) = sqlx::query_as(&sql)
            .bind(slug)
            .bind(server)
            .bind(tenant_id)
            .fetch_one(tx.as_mut())
            .await
            .map_err(ProviderError::sql("read the placement catalog"))?;
        Ok((tx, at, tenants))
    }

    /// Once a purge took the tenant's role (the last of its data, `purge_turn`), its row of
    /// the catalog goes too: a purged tenant takes no room on its server.
    async fn forget_purged(
        &self,
        ctx: &StepContext<'_>,
        keys: &[Key],
    ) -> Result<(), ProviderError> {
        if !keys.iter().any(|k| k.kind == Kind::ROLE) {
            return Ok(());
        }
        sqlx::query(&format!(
            "DELETE FROM {}.placements WHERE slug = $1 AND tenant_id = $2",
            self.schema
        ))
        .bind(ctx.tenant.slug.as_str())
        .bind(ctx.tenant_id()?)
        .execute(self.catalog().await?)
        .await
        .map_err(ProviderError::sql("forget the purged tenant's placement"))?;
        Ok(())
    }

    /// The placements of `targets`, read from the catalog in one query.
    async fn refresh_placements(
        &self,
        targets: &[&RefreshTarget],
        live: &mut LiveFleet,
    ) -> Result<(), ProviderError> {
        let slugs: Vec<&str> = targets.iter().map(|t| t.slug.as_str()).collect();
        let pool = self.catalog().await?;
        let rows: Vec<(String, String, String)> = sqlx::query_as(&format!(
            "SELECT slug, tenant_id, server FROM {}.placements WHERE slug = ANY($1)",
            self.schema
        ))
        .bind(&slugs)
        .fetch_all(pool)
        .await
        .map_err(ProviderError::sql("read the placement catalog"))?;
        let replicating = self.replicating(targets, live).await?;
        for (slug, tenant_id, server) in rows {
            // A row of another tenant that had the slug (released) is not this one's.
            let theirs = targets
                .iter()
                .find(|t| t.slug.as_str() == slug && t.tenant_id.as_deref() == Some(&tenant_id));
            if let Some(t) = theirs {
                let mut placed = attrs([("server", json!(server))]);
                if let Some(to) = replicating.get(slug.as_str()).filter(|to| **to != server) {
                    placed.insert("replicating_to", json!(to));
                }
                live.insert_attrs(&t.slug, Kind::PLACEMENT, placed);
            }
        }
        live.calls.push(("postgres placements", 1));
        Ok(())
    }

    /// The tenants of `targets` whose move was cut short with its replication running, and
    /// the server it runs to: one query per server, all at once.
    async fn replicating(
        &self,
        targets: &[&RefreshTarget],
        live: &mut LiveFleet,
    ) -> Result<BTreeMap<String, String>, ProviderError> {
        let tenants: Vec<(&str, &str)> = targets
            .iter()
            .filter_map(|t| Some((t.slug.as_str(), t.tenant_id.as_deref()?)))
            .collect();
        if tenants.is_empty() {
            return Ok(BTreeMap::new());
        }
        let looks = self.data.iter().map(|(server, data)| {
            let tenants = &tenants;
            async move {
                let found = super::replicate::subscribed(data, tenants).await?;
                Ok::<_, ProviderError>((server, found))
            }
        });
        let mut out = BTreeMap::new();
        for (server, found) in futures::future::try_join_all(looks).await? {
            for slug in found {
                out.insert(slug.to_string(), server.clone());
            }
        }
        live.calls.push(("postgres moves", self.data.len()));
        Ok(out)
    }
}

/// A transaction holding a server's placement lock, where the catalog has the tenant, and
/// how many tenants the server has.
type Locked = (
    sqlx::Transaction<'static, sqlx::Postgres>,
    Option<String>,
    i64,
);

/// Whether two servers are one PostgreSQL cluster (whose roles they share): the same
/// system identifier, or, where it cannot be read, the same host and port.
async fn same_cluster(a: &PgData, b: &PgData) -> bool {
    async fn id(data: &PgData) -> Option<String> {
        let pool = data.pool().await.ok()?;
        sqlx::query_as::<_, (String,)>("SELECT system_identifier::text FROM pg_control_system()")
            .fetch_one(pool)
            .await
            .ok()
            .map(|(id,)| id)
    }
    match (id(a).await, id(b).await) {
        (Some(x), Some(y)) => x == y,
        _ => {
            let (ha, pa, _) = a.server.address();
            let (hb, pb, _) = b.server.address();
            (ha, pa) == (hb, pb)
        }
    }
}

/// Whether the tenant's role or slice was made before it had a placement: before the config
/// named servers, on the postgres block's own server.
fn made_before_servers(ctx: &StepContext<'_>) -> bool {
    let made = |kind| ctx.recorded.contains_key(&Key::new(kind));
    !made(Kind::PLACEMENT) && (made(Kind::ROLE) || made(Kind::DATABASE))
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

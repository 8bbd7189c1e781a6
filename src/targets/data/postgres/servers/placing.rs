//! The placement catalog: where each tenant is, written once under its server's lock and
//! cap (a move flips it, its epoch bumped), read for a plan's refresh, and forgotten with the
//! tenant's purge.

use serde_json::json;

use crate::clients::postgres::advisory_xact_locks;
use crate::model::attrs::{attrs, Attrs};
use crate::model::change::ResourceChange;
use crate::model::resource::{Key, Kind};
use crate::targets::provider::{LiveFleet, ProviderError, RefreshTarget, StepContext};

use super::{not_named, PgServers};

impl PgServers {
    /// Records where the tenant is placed: once, on a server under its cap, counted under
    /// the server's lock. A tenant placed elsewhere already is moved there
    /// ([`super::moves`]): its data copied under a fence, then the catalog's row flipped
    /// under the same lock and cap, its epoch bumped.
    pub(super) async fn place(
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
    pub(super) async fn insert_placement(
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

    /// A transaction holding `server`'s placement lock, with where the catalog has `slug`
    /// (when the row is `tenant_id`'s: one of another tenant that had the slug, released or
    /// purged, is none) and how many tenants it has on `server`.
    pub(super) async fn locked(
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
    pub(super) async fn forget_purged(
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
    pub(super) async fn refresh_placements(
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
}

/// A transaction holding a server's placement lock, where the catalog has the tenant, and
/// how many tenants the server has.
type Locked = (
    sqlx::Transaction<'static, sqlx::Postgres>,
    Option<String>,
    i64,
);

/// Whether the tenant's role or slice was made before it had a placement: before the config
/// named servers, on the postgres block's own server.
fn made_before_servers(ctx: &StepContext<'_>) -> bool {
    let made = |kind| ctx.recorded.contains_key(&Key::new(kind));
    !made(Kind::PLACEMENT) && (made(Kind::ROLE) || made(Kind::DATABASE))
}

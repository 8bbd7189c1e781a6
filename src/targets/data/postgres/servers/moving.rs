//! Moves between servers as the several-servers target carries them out: the data moved by
//! replication or by a copy (`replicate.rs`, `moves.rs`), a cut-short
//! replication stopped, what a move takes said in its plan, and the copy a move left removed
//! after its hold.

use std::collections::BTreeMap;

use crate::model::change::ResourceChange;
use crate::model::resource::{Key, Kind};
use crate::model::retired;
use crate::targets::provider::{LiveFleet, ProviderError, Purge, RefreshTarget, StepContext};

use super::super::{moves, replicate, PgData};
use super::PgServers;

impl PgServers {
    /// Destroys the copy a move left on the tenant's old server, its slice and its role
    /// there; never on the server the tenant is placed on, where they are its own.
    pub(super) async fn purge_moved_copy(
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
    pub(super) async fn count_left_elsewhere(
        &self,
        targets: &[RefreshTarget],
        live: &mut LiveFleet,
    ) {
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
    pub(super) async fn size_up_moves(&self, targets: &[RefreshTarget], live: &mut LiveFleet) {
        for t in targets {
            let on = |server: Option<&str>| server.and_then(|s| self.data.get(s));
            let (Some(data), Some(to)) = (on(t.server.as_deref()), on(t.moving_to.as_deref()))
            else {
                continue;
            };
            let slice = data.slice(&t.slug, t.isolation);
            let isolation = t.isolation.as_str();
            let looked = async {
                let holds = data
                    .holdings(isolation, &slice.name, t.tenant_id.as_deref())
                    .await?;
                let how = match replicate::why_not(data, to, &slice, self.replicate_from_rows)
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

    /// Stops the replication a move cut short left running (refresh reported it as
    /// `replicating_to`), from the server the tenant is on: a move that follows starts anew,
    /// and without one the tenant stays where it is.
    pub(super) async fn stop_cut_short_replication(
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
            Some(slice) => replicate::stop(ctx, here, self.on(&to)?, &slice).await,
            None => Ok(()),
        }
    }

    /// Moves the tenant's data from `from` to `to`: by replication where it can
    /// ([`super::replicate`], for a tenant of at least `replicate_moves_from_rows` rows),
    /// otherwise by a copy under the fence ([`super::moves`]). Returns the rows moved and
    /// when the fence went up. On an error the fence on `from` is lifted again: the old copy
    /// is still the tenant's.
    pub(super) async fn move_data(
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
            match replicate::why_not(from, to, &slice, self.replicate_from_rows).await? {
                None => replicate::replicate(ctx, from, to, &slice, &role).await,
                Some(why) => {
                    tracing::info!(tenant = %ctx.tenant.slug, "moved by a copy under a fence: {why}");
                    moves::copy_over(ctx, from, to, &slice, &role).await
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

    /// The tenants of `targets` whose move was cut short with its replication running, and
    /// the server it runs to: one query per server, all at once.
    pub(super) async fn replicating(
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
                let found = replicate::subscribed(data, tenants).await?;
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

//! A large tenant's move by logical replication: its slice is copied to the new server while
//! the tenant goes on writing on the old one, and kept up to date there; the fence then
//! pauses its writes only for the last changes to arrive and the check, not for the copy.
//!
//! Taken for a schema or a database of its own ([`why_not`] says when not, and the move is
//! then a copy under a fence, `moves.rs`): a shared tenant's rows could be published only
//! with a filter that updates and deletes cannot pass without changing the shared tables'
//! replica identity, a table without a primary key (or replica identity) would refuse the
//! tenant's own updates and deletes while it is published, the old server must have
//! `wal_level = logical`, and the new server's admin must be a superuser.
//!
//! 1. The role (login held) and slice are made on the new server, and what a cut-short
//!    attempt left is dropped: its subscription there, its slots and publication on the old.
//! 2. Each table of the slice is emptied on the new server.
//! 3. A publication of the slice's tables on the old server, and a subscription to it on the
//!    new one, whose first copy runs while the tenant writes on.
//! 4. Once every table is synchronised, the fence goes up on the old server. The tables are
//!    compared (row count and checksum) until both sides agree, the last writes having
//!    arrived; sequences follow.
//! 5. The subscription (with its slot) and the publication are dropped.
//!
//! Any failure drops what 3 made; the caller lifts the fence, and the tenant stays where it
//! was. The subscription's connection holds the old server's URL, password included when it
//! has one: the statement that creates it is kept out of the server's log.

use std::time::{Duration, Instant};

use sqlx::{Executor as _, PgConnection};

use crate::clients::postgres::server::{literal, quote};
use crate::model::count::thousands;
use crate::model::tenant::Isolation;
use crate::targets::provider::{ProviderError, StepContext};

use super::moves::{both_sides, checksums, stored_columns};
use super::{PgData, Slice};

/// How long the first copy may take before the move gives up.
const SYNC_LIMIT: Duration = Duration::from_secs(3600);
/// How long, fenced, the last writes may take to arrive before the move gives up.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);

/// Why the tenant's slice is not moved from `from` to `to` by replication, or `None` when it
/// can be.
pub(super) async fn why_not(
    from: &PgData,
    to: &PgData,
    slice: &Slice,
    from_rows: u64,
) -> Result<Option<String>, ProviderError> {
    if slice.isolation == Isolation::Shared {
        return Ok(Some("a shared tenant's rows move by a copy".into()));
    }
    // A subscription, and keeping its statement out of the log, take a superuser.
    let (superuser,): (bool,) =
        sqlx::query_as("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(to.pool().await?)
            .await
            .map_err(ProviderError::sql("look at the new server's admin"))?;
    if !superuser {
        return Ok(Some(
            "the new server's admin is not a superuser, which a subscription needs".into(),
        ));
    }
    let mut old = from.connect_slice(slice).await?;
    let (level, rows, unpublishable): (String, f64, Vec<String>) = sqlx::query_as(
        "SELECT current_setting('wal_level'),
                -- A table never analysed has no estimate: its size stands in, at 64 bytes a row.
                coalesce(sum(CASE WHEN c.reltuples >= 0 THEN c.reltuples
                                  ELSE pg_relation_size(c.oid) / 64.0 END), 0)::float8,
                coalesce(array_agg(c.relname::text) FILTER (WHERE NOT (
                  c.relreplident = 'f'
                  OR (c.relreplident = 'd' AND EXISTS
                        (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
                  OR (c.relreplident = 'i' AND EXISTS
                        (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)))),
                  '{}')
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind = 'r'",
    )
    .bind(&slice.schema)
    .fetch_one(&mut old)
    .await
    .map_err(ProviderError::sql("look at the slice before its move"))?;
    Ok(if level != "logical" {
        Some(format!(
            "the old server has wal_level = {level}, not logical"
        ))
    } else if (rows as u64) < from_rows {
        Some(format!(
            "about {} rows, fewer than replicate_moves_from_rows ({})",
            thousands(rows as u64),
            thousands(from_rows)
        ))
    } else if !unpublishable.is_empty() {
        Some(format!(
            "{} has no primary key or replica identity, so its updates could not be published",
            unpublishable.join(", ")
        ))
    } else {
        None
    })
}

/// Moves the slice's rows by replication, fencing the role `role` on `from` for the end of
/// it; returns the rows moved and when the fence went up.
pub(super) async fn replicate(
    ctx: &StepContext<'_>,
    from: &PgData,
    to: &PgData,
    slice: &Slice,
    role: &str,
) -> Result<(u64, Instant), ProviderError> {
    let name = move_name(ctx.tenant_id()?);
    // Made first: a database of its own is where the subscription goes.
    super::moves::make_on(ctx, to).await?;
    let (mut old, mut new) = (
        from.connect_slice(slice).await?,
        to.connect_slice(slice).await?,
    );
    drop_replication(&mut old, &mut new, &name).await?;
    let tables = super::export::tables_of(&mut old, &slice.schema).await?;
    let replicated = async {
        start(from, &mut old, &mut new, slice, &tables, &name).await?;
        wait_synced(&mut new, &name, tables.len()).await?;
        from.fence(role).await?;
        let fenced = Instant::now();
        let rows = caught_up(&mut old, &mut new, slice, &tables).await?;
        super::moves::carry_over(ctx, to, slice, &mut old, &mut new).await?;
        Ok::<_, ProviderError>((rows, fenced))
    }
    .await;
    // Done or not, the replication goes: the data is over, or the tenant stays.
    let dropped = drop_replication(&mut old, &mut new, &name).await;
    let moved = replicated?;
    dropped?;
    tracing::info!(tenant = %ctx.tenant.slug, rows = moved.0, "replicated");
    Ok(moved)
}

/// Stops what a cut-short move of the tenant to `to` left running (its subscription there,
/// its slots and publication on `from`, where the tenant still is). The copy made on `to`
/// stays, without a login, as one a failed move leaves.
pub(super) async fn stop(
    ctx: &StepContext<'_>,
    from: &PgData,
    to: &PgData,
    slice: &Slice,
) -> Result<(), ProviderError> {
    let name = move_name(ctx.tenant_id()?);
    let (mut old, mut new) = (
        from.connect_slice(slice).await?,
        to.connect_slice(slice).await?,
    );
    drop_replication(&mut old, &mut new, &name).await?;
    tracing::info!(tenant = %ctx.tenant.slug, "the replication of a move cut short was stopped");
    Ok(())
}

/// The tenants of `tenants` (slug and id) whose move's subscription is on the server
/// `data`, in one query: a move cut short whose replication runs on.
pub(super) async fn subscribed<'t>(
    data: &PgData,
    tenants: &[(&'t str, &str)],
) -> Result<Vec<&'t str>, ProviderError> {
    let names: Vec<String> = tenants.iter().map(|(_, id)| move_name(id)).collect();
    let found: Vec<(String,)> =
        sqlx::query_as("SELECT subname::text FROM pg_subscription WHERE subname = ANY($1)")
            .bind(&names)
            .fetch_all(data.pool().await?)
            .await
            .map_err(ProviderError::sql("look for moves' subscriptions"))?;
    Ok(tenants
        .iter()
        .zip(&names)
        .filter(|(_, name)| found.iter().any(|(f,)| f == *name))
        .map(|((slug, _), _)| *slug)
        .collect())
}

/// The publication on the old server and the subscription on the new, whose first copy
/// starts at once, each table emptied before it.
async fn start(
    from: &PgData,
    old: &mut PgConnection,
    new: &mut PgConnection,
    slice: &Slice,
    tables: &[String],
    name: &str,
) -> Result<(), ProviderError> {
    if !tables.is_empty() {
        let list: Vec<String> = tables
            .iter()
            .map(|t| format!("{}.{}", quote(&slice.schema), quote(t)))
            .collect();
        new.execute(format!("TRUNCATE {}", list.join(", ")).as_str())
            .await
            .map_err(ProviderError::sql("empty the tables on the new server"))?;
    }
    old.execute(
        format!(
            "CREATE PUBLICATION {} FOR TABLES IN SCHEMA {}",
            quote(name),
            quote(&slice.schema)
        )
        .as_str(),
    )
    .await
    .map_err(ProviderError::sql("publish the slice on the old server"))?;
    let database = match slice.isolation {
        Isolation::Database => slice.name.clone(),
        _ => from.server.address().2,
    };
    let conninfo = from.server.conninfo_for_peer(&database)?;
    // The statement holds the old server's URL: neither it nor its failure is logged.
    new.execute("SET log_statement = 'none'; SET log_min_error_statement = 'panic'")
        .await
        .map_err(ProviderError::sql("keep the subscription out of the log"))?;
    let created = new
        .execute(
            format!(
                "CREATE SUBSCRIPTION {n} CONNECTION {c} PUBLICATION {n} WITH (copy_data = true)",
                n = quote(name),
                c = literal(&conninfo)
            )
            .as_str(),
        )
        .await;
    new.execute("RESET log_statement; RESET log_min_error_statement")
        .await
        .map_err(ProviderError::sql("reset the log settings"))?;
    created.map_err(ProviderError::sql(
        "subscribe the new server to the old (it must reach the old server at its URL)",
    ))?;
    tracing::info!(
        tables = tables.len(),
        "the move's first copy began, the tenant writing on"
    );
    Ok(())
}

/// Waits until the subscription has copied every table and follows the old server's
/// changes.
async fn wait_synced(
    new: &mut PgConnection,
    name: &str,
    tables: usize,
) -> Result<(), ProviderError> {
    let began = Instant::now();
    let mut said = Instant::now();
    loop {
        let (ready, all): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE r.srsubstate IN ('r', 's')), count(*)
             FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid
             WHERE s.subname = $1",
        )
        .bind(name)
        .fetch_one(&mut *new)
        .await
        .map_err(ProviderError::sql("follow the first copy"))?;
        if ready == all && usize::try_from(all).unwrap_or(0) == tables {
            return Ok(());
        }
        if began.elapsed() > SYNC_LIMIT {
            return Err(ProviderError::TimedOut(format!(
                "the first copy of {ready} of {tables} tables took over an hour; the move was called off and the tenant stays where it was"
            )));
        }
        if said.elapsed() > Duration::from_secs(10) {
            tracing::info!(ready, tables, "the move's first copy goes on");
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Compares every table on both sides (row count and checksum) until they agree: the old
/// server is fenced, so once the last changes have arrived nothing differs. Returns the rows.
async fn caught_up(
    old: &mut PgConnection,
    new: &mut PgConnection,
    slice: &Slice,
    tables: &[String],
) -> Result<u64, ProviderError> {
    let began = Instant::now();
    let mut sums = Vec::new();
    for table in tables {
        let columns = stored_columns(old, &slice.schema, table).await?;
        sums.push((table, checksums(&slice.schema, table, &columns, None)));
    }
    loop {
        let mut rows = 0;
        let mut differs = None;
        for (table, sum) in &sums {
            let (was, is) = both_sides(old, new, sum, table).await?;
            if was != is {
                differs = Some((table, was.0, is.0));
                break;
            }
            rows += was.0.unsigned_abs();
        }
        let Some((table, was, is)) = differs else {
            return Ok(rows);
        };
        if began.elapsed() > CATCH_UP_LIMIT {
            return Err(ProviderError::Refused(format!(
                "the copy of {table} did not catch up within a minute ({was} rows on the old server, {is} on the new, or their checksums differ); the move was called off and the tenant stays where it was"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Drops the subscription `name` on the new server (its slot on the old server with it,
/// or, where that cannot be reached, apart), any slot left of it on the old server, and
/// the publication. What is not there is passed by.
async fn drop_replication(
    old: &mut PgConnection,
    new: &mut PgConnection,
    name: &str,
) -> Result<(), ProviderError> {
    let subscribed: Option<(i64,)> = sqlx::query_as(
        "SELECT oid::int8 FROM pg_subscription WHERE subname = $1 AND subdbid =
           (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(name)
    .fetch_optional(&mut *new)
    .await
    .map_err(ProviderError::sql("look for the move's subscription"))?;
    if let Some((subid,)) = subscribed {
        // Let go of its slot first: the slots are dropped below, whether or not the old
        // server can be reached from the new one.
        let n = quote(name);
        new.execute(
            format!(
                "ALTER SUBSCRIPTION {n} DISABLE; ALTER SUBSCRIPTION {n} SET (slot_name = NONE)"
            )
            .as_str(),
        )
        .await
        .map_err(ProviderError::sql("stop the move's subscription"))?;
        new.execute(format!("DROP SUBSCRIPTION {n}").as_str())
            .await
            .map_err(ProviderError::sql("drop the move's subscription"))?;
        drop_slots(old, &format!("pg_{subid}_sync_%"), name).await?;
    } else {
        drop_slots(old, "", name).await?;
    }
    old.execute(format!("DROP PUBLICATION IF EXISTS {}", quote(name)).as_str())
        .await
        .map_err(ProviderError::sql("drop the move's publication"))?;
    Ok(())
}

/// Drops the slot `name` and those whose names are like `sync` (a table's first copy), once
/// no one uses them: the subscriber's sender is ended, and the drop tried again for a while.
async fn drop_slots(old: &mut PgConnection, sync: &str, name: &str) -> Result<(), ProviderError> {
    for _ in 0..100 {
        let left: Vec<(String, Option<i32>)> = sqlx::query_as(
            "SELECT slot_name::text, active_pid FROM pg_replication_slots
             WHERE database = current_database() AND (slot_name = $1 OR slot_name LIKE $2)",
        )
        .bind(name)
        // An empty pattern matches no slot.
        .bind(sync)
        .fetch_all(&mut *old)
        .await
        .map_err(ProviderError::sql("look for the move's slots"))?;
        if left.is_empty() {
            return Ok(());
        }
        for (slot, active) in left {
            let dropped = match active {
                Some(pid) => sqlx::query("SELECT pg_terminate_backend($1)")
                    .bind(pid)
                    .execute(&mut *old)
                    .await
                    .map(|_| ()),
                None => sqlx::query("SELECT pg_drop_replication_slot($1)")
                    .bind(&slot)
                    .execute(&mut *old)
                    .await
                    .map(|_| ()),
            };
            if let Err(e) = dropped {
                tracing::debug!(slot = %slot, error = %e, "the slot is not dropped yet");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(ProviderError::TimedOut(format!(
        "the replication slot {name} on the old server is still in use after 5 s"
    )))
}

/// The publication's, subscription's and slot's name for the tenant `tenant_id`'s move.
fn move_name(tenant_id: &str) -> String {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(tenant_id.as_bytes()));
    format!("tenant_reconcile_move_{}", &digest[..24])
}

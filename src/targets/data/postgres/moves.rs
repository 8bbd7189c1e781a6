//! A tenant's move from one Postgres server to another, in every isolation mode: a schema,
//! a shared tenant's rows, a database of its own. A large one whose servers allow it moves by
//! logical replication (`replicate.rs`), writable until the end; the others as a plain copy
//! under a fence (the write pause is the copy's length), which this module does.
//!
//! 1. The fence: on the old server the tenant's role may not log in, and its sessions end,
//!    so nothing writes to the old copy from here on.
//! 2. On the new server its role (login held) and slice are made as a provisioning makes
//!    them, marked as this state's.
//! 3. Every table of its slice is copied (in a shared slice, its rows), each with the columns
//!    it stores, in one transaction on the new server that first empties what an earlier,
//!    cut-short attempt left there; sequences follow. Each table's row count and an
//!    order-free checksum of its rows are compared on both sides before that transaction
//!    commits: a difference rolls it back and lifts the fence on the old server.
//! 4. The caller flips the placement catalog's row (the commit point, with its epoch
//!    bumped), and the fence is lifted on the new server.
//!
//! The old copy stays where it was, fenced, with its data. Every step is safe to run again,
//! so a move killed anywhere is finished by the next apply: before the flip the old server
//! still holds the tenant, after it the new one does, and at no moment may both be logged
//! into.

use std::time::Instant;

use futures::StreamExt;
use sqlx::{Connection, Executor as _, PgConnection};

use crate::clients::postgres::server::{connection, literal, quote};
use crate::model::change::ResourceChange;
use crate::model::lifecycle::Lifecycle;
use crate::model::resource::{Key, Kind, Resource};
use crate::model::tenant::Isolation;
use crate::targets::provider::{Provider, ProviderError, StepContext};

use super::{PgData, Slice};

impl PgData {
    /// Ends the role's logins and sessions: nothing of the tenant writes here any more. A
    /// session that passed its login check just before the role lost its login shows its
    /// user a moment later, so the sessions are ended until none is left.
    pub(super) async fn fence(&self, role: &str) -> Result<(), ProviderError> {
        let pool = self.pool().await?;
        pool.execute(format!("ALTER ROLE {} NOLOGIN", quote(role)).as_str())
            .await
            .map_err(ProviderError::sql(format!("fence the role {role}")))?;
        for round in 0..250 {
            let (ended,): (i64,) = sqlx::query_as(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = $1",
            )
            .bind(role)
            .fetch_one(pool)
            .await
            .map_err(ProviderError::sql(format!("end the sessions of {role}")))?;
            if ended == 0 && round > 0 {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Err(ProviderError::TimedOut(format!(
            "the sessions of {role} did not end within 5 s; nothing was moved"
        )))
    }

    /// Lets the role log in again, where its tenant is active and its file lets it.
    pub(super) async fn lift_fence(
        &self,
        ctx: &StepContext<'_>,
        role: &str,
    ) -> Result<(), ProviderError> {
        let login = ctx
            .recorded
            .get(&Key::new(Kind::ROLE))
            .is_some_and(|a| ctx.login_opens(a));
        if !login {
            return Ok(());
        }
        self.pool()
            .await?
            .execute(format!("ALTER ROLE {} LOGIN", quote(role)).as_str())
            .await
            .map_err(ProviderError::sql(format!("let {role} log in")))?;
        Ok(())
    }
}

/// Fences the role `role` on `from`, makes the tenant's role and slice on `to` and copies
/// its data there; returns the rows copied and when the fence went up.
pub(super) async fn copy_over(
    ctx: &StepContext<'_>,
    from: &PgData,
    to: &PgData,
    slice: &Slice,
    role: &str,
) -> Result<(u64, Instant), ProviderError> {
    from.fence(role).await?;
    let fenced = Instant::now();
    make_on(ctx, to).await?;
    Ok((copy_slice(ctx, from, to, slice).await?, fenced))
}

/// The tenant's role and slice on `to`, as recorded, made as a provisioning makes them but
/// with its login held until the move is done.
pub(super) async fn make_on(ctx: &StepContext<'_>, to: &PgData) -> Result<(), ProviderError> {
    let held = StepContext {
        tenant: ctx.tenant,
        tenant_id: ctx.tenant_id,
        lifecycle: Lifecycle::Provisioning,
        credentials_version: ctx.credentials_version,
        key: ctx.key,
        mark: ctx.mark.clone(),
        incarnation: ctx.incarnation,
        claimed: false,
        recorded: ctx.recorded,
        retired: ctx.retired,
    };
    for kind in [Kind::ROLE, Kind::DATABASE] {
        let key = Key::new(kind);
        let attrs = ctx.recorded.get(&key).cloned().ok_or_else(|| {
            ProviderError::Unplanned(format!(
                "the tenant has no {} recorded to move",
                kind.as_str()
            ))
        })?;
        let change = ResourceChange::create(
            Resource {
                key,
                attrs,
                content: None,
            },
            false,
        );
        to.apply(&held, &change).await?;
    }
    Ok(())
}

/// Copies the slice's tables (a shared slice: the tenant's rows) from `from` to `to` in one
/// transaction on `to`, each checked by its count and checksum before it commits.
async fn copy_slice(
    ctx: &StepContext<'_>,
    from: &PgData,
    to: &PgData,
    slice: &Slice,
) -> Result<u64, ProviderError> {
    let tenant_id = ctx.tenant_id()?;
    let shared = slice.isolation == Isolation::Shared;
    // A database of its own is read and written there; the other slices are in the admin
    // database.
    let (mut source, mut target) = (
        from.connect_slice(slice).await?,
        to.connect_slice(slice).await?,
    );
    let mut read = source.begin().await.map_err(ProviderError::sql("begin"))?;
    read.as_mut()
        .execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(ProviderError::sql("start a snapshot"))?;
    let mut write = target.begin().await.map_err(ProviderError::sql("begin"))?;
    if shared {
        // Its rows pass the shared tables' policy as its own.
        for tx in [read.as_mut(), write.as_mut()] {
            sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
                .bind(tenant_id)
                .execute(&mut *tx)
                .await
                .map_err(ProviderError::sql("set the tenant"))?;
        }
    }
    let tables = super::export::tables_of(read.as_mut(), &slice.schema).await?;
    let mut copied = 0;
    for table in &tables {
        let t = format!("{}.{}", quote(&slice.schema), quote(table));
        let columns = stored_columns(read.as_mut(), &slice.schema, table).await?;
        if shared && !columns.iter().any(|c| c == "\"tenant_id\"") {
            continue;
        }
        let list = columns.join(", ");
        let rows = if shared {
            format!("{t} WHERE tenant_id = {}", literal(tenant_id))
        } else {
            t.clone()
        };
        let empty = if shared {
            format!("DELETE FROM {rows}")
        } else {
            format!("TRUNCATE {t}")
        };
        write
            .as_mut()
            .execute(empty.as_str())
            .await
            .map_err(ProviderError::sql(format!(
                "empty {table} on the new server"
            )))?;
        let mut out = read
            .as_mut()
            .copy_out_raw(&format!("COPY (SELECT {list} FROM {rows}) TO STDOUT"))
            .await
            .map_err(ProviderError::sql(format!("read {table}")))?;
        let mut into = write
            .as_mut()
            .copy_in_raw(&format!("COPY {t} ({list}) FROM STDIN"))
            .await
            .map_err(ProviderError::sql(format!("write {table}")))?;
        while let Some(chunk) = out.next().await {
            let chunk = chunk.map_err(ProviderError::sql(format!("read {table}")))?;
            into.send(chunk)
                .await
                .map_err(ProviderError::sql(format!("write {table}")))?;
        }
        drop(out);
        into.finish()
            .await
            .map_err(ProviderError::sql(format!("write {table}")))?;
        let sum = checksums(&slice.schema, table, &columns, shared.then_some(tenant_id));
        let (was, is) = both_sides(read.as_mut(), write.as_mut(), &sum, table).await?;
        if was != is {
            return Err(ProviderError::Refused(format!(
                "the copy of {table} does not match: {} rows on the old server, {} on the new, or their checksums differ; the move was rolled back and the tenant stays where it was",
                was.0, is.0
            )));
        }
        copied += was.0.unsigned_abs();
    }
    carry_over(ctx, to, slice, read.as_mut(), write.as_mut()).await?;
    write
        .commit()
        .await
        .map_err(ProviderError::sql("commit the copy"))?;
    read.commit()
        .await
        .map_err(ProviderError::sql("end the snapshot"))?;
    let _ = source.close().await;
    let _ = target.close().await;
    Ok(copied)
}

/// What follows a slice's rows to the new server (`write`), read from the old (`read`): its
/// sequences where they stood, and the marks that it was seeded (in a database of its own,
/// and in the new server's catalog): its seed rows came along, and it is not seeded again.
pub(super) async fn carry_over(
    ctx: &StepContext<'_>,
    to: &PgData,
    slice: &Slice,
    read: &mut PgConnection,
    write: &mut PgConnection,
) -> Result<(), ProviderError> {
    copy_sequences(&mut *read, &mut *write, &slice.schema).await?;
    let seeded = ctx.recorded.contains_key(&Key::new(Kind::SEED));
    if seeded && slice.isolation == Isolation::Database {
        // A database's own mark of its seed is the one that counts.
        write
            .execute(
                "INSERT INTO tenant_reconcile_meta.seed SELECT
                 WHERE NOT EXISTS (SELECT 1 FROM tenant_reconcile_meta.seed)",
            )
            .await
            .map_err(ProviderError::sql("mark the seed on the new server"))?;
    }
    if seeded {
        to.record_seed(
            connection(to.pool().await?).await?.as_mut(),
            &ctx.tenant.slug,
        )
        .await?;
    }
    Ok(())
}

/// The row count and checksum `sum` ([`checksums`]) reads of `table` on the old server
/// (`old`) and on the new (`new`), both at once: the tenant's writes are paused meanwhile.
pub(super) async fn both_sides(
    old: &mut PgConnection,
    new: &mut PgConnection,
    sum: &str,
    table: &str,
) -> Result<((i64, String), (i64, String)), ProviderError> {
    tokio::try_join!(
        sqlx::query_as::<_, (i64, String)>(sum).fetch_one(old),
        sqlx::query_as::<_, (i64, String)>(sum).fetch_one(new),
    )
    .map_err(ProviderError::sql(format!("check {table}")))
}

/// The statement reading a table's row count and an order-free checksum of its rows (of
/// `tenant`'s rows, in a shared table): equal on both servers when the copy is whole.
pub(super) fn checksums(
    schema: &str,
    table: &str,
    columns: &[String],
    tenant: Option<&str>,
) -> String {
    let list = columns.join(", ");
    let rows = match tenant {
        Some(id) => format!(
            "{}.{} WHERE tenant_id = {}",
            quote(schema),
            quote(table),
            literal(id)
        ),
        None => format!("{}.{}", quote(schema), quote(table)),
    };
    format!(
        "SELECT count(*), coalesce(sum(hashtextextended(ROW({list})::text, 0)), 0)::text FROM {rows}"
    )
}

/// The columns of `schema.table` that hold what was written (not generated ones), quoted,
/// in their order.
pub(super) async fn stored_columns(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<Vec<String>, ProviderError> {
    let columns: Vec<(String,)> = sqlx::query_as(
        "SELECT a.attname::text FROM pg_attribute a
         WHERE a.attrelid = to_regclass(quote_ident($1) || '.' || quote_ident($2))
           AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
         ORDER BY a.attnum",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(ProviderError::sql(format!("read the columns of {table}")))?;
    columns
        .into_iter()
        .map(|(c,)| match crate::targets::data::is_plain_ident(&c) {
            true => Ok(quote(&c)),
            false => Err(ProviderError::Refused(format!(
                "the column {c:?} of {table} needs a plain lower-case name to be moved; nothing was changed"
            ))),
        })
        .collect()
}

/// Each sequence of `schema` moved on to where it stood on the old server, never back: a
/// shared schema's sequences number every tenant's rows on the new server too, and the
/// rows moved keep their numbers, so the next one drawn must pass them.
async fn copy_sequences(
    read: &mut PgConnection,
    write: &mut PgConnection,
    schema: &str,
) -> Result<(), ProviderError> {
    let sequences: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT sequencename::text, last_value FROM pg_sequences WHERE schemaname = $1",
    )
    .bind(schema)
    .fetch_all(&mut *read)
    .await
    .map_err(ProviderError::sql("read the sequences"))?;
    for (name, last) in sequences {
        let Some(last) = last else { continue };
        if !crate::targets::data::is_plain_ident(&name) {
            continue;
        }
        sqlx::query(
            "SELECT setval(s, $3) FROM to_regclass(quote_ident($1) || '.' || quote_ident($2)) s
             WHERE coalesce((SELECT last_value FROM pg_sequences
                             WHERE schemaname = $1 AND sequencename = $2), 0) < $3",
        )
        .bind(schema)
        .bind(&name)
        .bind(last)
        .execute(&mut *write)
        .await
        .map_err(ProviderError::sql(format!("set the sequence {name}")))?;
    }
    Ok(())
}

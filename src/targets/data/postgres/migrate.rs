//! A slice's migrations and seed rows, each applied once and recorded with what it records.

use std::collections::HashMap;

use serde_json::{Map, Value};
use sqlx::{Connection, Executor as _, PgConnection};

use crate::clients::postgres::server::{connection, quote};
use crate::model::migration::Migration;
use crate::model::tenant::Isolation;
use crate::slug::Slug;
use crate::targets::provider::{ProviderError, StepContext};

use super::{apply::refuse_unsafe, seed_lock, PgData, Slice};

impl PgData {
    /// Applies the migrations the slice has not had, with their records, then grants the
    /// slice's tables, all in the transaction `tx` is in (a failed migration leaves none of
    /// them), which holds the slice's lock ([`Slice::lock`]). A database slice records them
    /// in its own `tenant_reconcile_meta` schema, which the caller mirrors into the catalog
    /// once they are committed.
    ///
    /// A `fresh` slice was made (or forgotten) in this transaction: it has no record to read.
    pub(super) async fn migrate_in(
        &self,
        tx: &mut PgConnection,
        slice: &Slice,
        wanted: usize,
        fresh: bool,
    ) -> Result<(), ProviderError> {
        let schema = quote(&slice.schema);
        let own_database = slice.isolation == Isolation::Database;
        let recorded: Vec<(String, String)> = if fresh {
            Ok(Vec::new())
        } else if own_database {
            sqlx::query_as("SELECT version, checksum FROM tenant_reconcile_meta.migrations")
                .fetch_all(&mut *tx)
                .await
        } else {
            sqlx::query_as(&self.sql(
                "SELECT version, checksum FROM {schema}.slice_migrations WHERE isolation = $1 AND slice = $2",
            ))
            .bind(slice.isolation.as_str())
            .bind(&slice.name)
            .fetch_all(&mut *tx)
            .await
        }
        .map_err(ProviderError::sql("read the applied migrations"))?;
        let recorded: HashMap<String, String> = recorded.into_iter().collect();
        let mut applied = Vec::new();
        for m in &self.migrations[..wanted.min(self.migrations.len())] {
            match recorded.get(&m.version) {
                Some(checksum) if *checksum != m.checksum => {
                    return Err(ProviderError::Refused(format!(
                        "migration {} was edited after it was applied to {} (checksum {} there, {} in the repo)",
                        m.id(), slice.name, checksum, m.checksum
                    )))
                }
                Some(_) => continue,
                None => {}
            }
            // Migrations are written by the repo's operators, not by tenants; they run as
            // the SQL they are, in the slice's schema, which the same message sets.
            tx.execute(format!("SET LOCAL search_path = {schema};\n{}", m.sql).as_str())
                .await
                .map_err(ProviderError::sql(format!(
                    "migration {} on {}",
                    m.id(),
                    slice.name
                )))?;
            let context = format!("migration {} on {}", m.id(), slice.name);
            if slice.isolation == Isolation::Shared {
                refuse_unsafe(&mut *tx, &slice.schema, &context).await?;
                self.tenantize(&mut *tx, &slice.schema).await?;
            }
            applied.push(m);
        }
        // Recorded together, in the same transaction: a failed migration leaves none.
        if own_database {
            record_in_database(&mut *tx, &applied).await
        } else {
            self.record_migrations(&mut *tx, slice, &applied).await
        }
        .map_err(ProviderError::sql("record the migrations"))?;
        // Grants are (re)applied every time: a revoked grant is drift this repairs.
        if slice.isolation == Isolation::Shared {
            // Made by hand since: granting it would show every tenant's rows.
            refuse_unsafe(
                &mut *tx,
                &slice.schema,
                &format!("the shared schema {}", slice.name),
            )
            .await?;
        }
        let grant = format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {g};
             GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {g};",
            g = quote(&slice.grantee)
        );
        tx.execute(grant.as_str())
            .await
            .map_err(ProviderError::sql(format!(
                "grant the tables of {}",
                slice.name
            )))?;
        if slice.isolation == Isolation::Shared {
            // Row-level security switched off or a policy edited by hand is drift too.
            self.tenantize(&mut *tx, &slice.schema).await?;
        }
        Ok(())
    }

    pub(super) async fn apply_seed(
        &self,
        ctx: &StepContext<'_>,
        rows_json: &str,
    ) -> Result<(), ProviderError> {
        let slug = &ctx.tenant.slug;
        let tenant_id = ctx.tenant_id()?;
        let rows = seed_rows(rows_json)?;
        let slice = self.slice(slug, ctx.tenant.isolation);
        let pool = self.pool().await?;
        if slice.isolation == Isolation::Database {
            let mut conn = self.server.connect_to(&slice.name).await?;
            let result = async {
                let mut tx = conn.begin().await.map_err(ProviderError::sql("begin"))?;
                crate::clients::postgres::advisory_xact_lock(tx.as_mut(), "tenant-reconcile/seed")
                    .await?;
                let (done,): (bool,) =
                    sqlx::query_as("SELECT EXISTS (SELECT 1 FROM tenant_reconcile_meta.seed)")
                        .fetch_one(tx.as_mut())
                        .await
                        .map_err(ProviderError::sql("read the seed mark"))?;
                if !done {
                    insert_rows(tx.as_mut(), &slice.schema, tenant_id, &rows, slug, false).await?;
                    sqlx::query("INSERT INTO tenant_reconcile_meta.seed DEFAULT VALUES")
                        .execute(tx.as_mut())
                        .await
                        .map_err(ProviderError::sql("mark the seed"))?;
                }
                tx.commit()
                    .await
                    .map_err(ProviderError::sql("commit the seed"))
            }
            .await;
            let _ = conn.close().await;
            result?;
            self.record_seed(connection(pool).await?.as_mut(), slug)
                .await?;
            return Ok(());
        }
        let mut tx = pool.begin().await.map_err(ProviderError::sql("begin"))?;
        crate::clients::postgres::advisory_xact_locks(tx.as_mut(), &[seed_lock(slug)]).await?;
        self.seed_in(tx.as_mut(), ctx, &slice, &rows).await?;
        tx.commit()
            .await
            .map_err(ProviderError::sql("commit the seed"))
    }

    /// A shared or schema slice's seed rows, inserted once and recorded, in the transaction
    /// `tx` is in, which holds the seed's lock ([`seed_lock`]).
    pub(super) async fn seed_in(
        &self,
        tx: &mut PgConnection,
        ctx: &StepContext<'_>,
        slice: &Slice,
        rows: &[(String, Vec<Map<String, Value>>)],
    ) -> Result<(), ProviderError> {
        let slug = &ctx.tenant.slug;
        let tenant_id = ctx.tenant_id()?;
        // The mark first: in this transaction, which holds the seed's lock, it is there once
        // the rows are, and a mark that was there already means they were inserted before.
        let marked: Option<(i32,)> = sqlx::query_as(&self.sql(
            "INSERT INTO {schema}.seeds (slug) VALUES ($1) ON CONFLICT (slug) DO NOTHING RETURNING 1",
        ))
        .bind(slug.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(ProviderError::sql("mark the seed"))?;
        if marked.is_none() {
            return Ok(());
        }
        let shared = slice.isolation == Isolation::Shared;
        insert_rows(&mut *tx, &slice.schema, tenant_id, rows, slug, shared).await
    }
}

/// The migrations `applied` recorded in a database slice's own record, in one statement.
async fn record_in_database(
    tx: &mut PgConnection,
    applied: &[&Migration],
) -> Result<(), sqlx::Error> {
    if applied.is_empty() {
        return Ok(());
    }
    let [versions, names, checksums] = crate::model::migration::columns(applied);
    sqlx::query(
        "INSERT INTO tenant_reconcile_meta.migrations (version, name, checksum)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[])",
    )
    .bind(versions)
    .bind(names)
    .bind(checksums)
    .execute(tx)
    .await
    .map(drop)
}

/// A seed's rows by table, from the JSON its change carries.
pub(super) fn seed_rows(json: &str) -> Result<SeedRows, ProviderError> {
    Ok(
        serde_json::from_str::<HashMap<String, Vec<Map<String, Value>>>>(json)
            .map_err(ProviderError::failed("seed rows"))?
            .into_iter()
            .collect(),
    )
}

/// Seed rows by table.
pub(super) type SeedRows = Vec<(String, Vec<Map<String, Value>>)>;

/// Inserts seed rows into the slice's tables. Table and column names were checked to be
/// plain identifiers when the seed was compiled, and are quoted; each row travels as one
/// bound JSON value that PostgreSQL converts to the columns' types.
pub(super) async fn insert_rows(
    tx: &mut PgConnection,
    schema: &str,
    tenant_id: &str,
    rows: &[(String, Vec<Map<String, Value>>)],
    slug: &Slug,
    shared: bool,
) -> Result<(), ProviderError> {
    // The search path and, for shared tables, which fill tenant_id from it when the admin
    // inserts, the tenant: one statement.
    sqlx::query(
        "SELECT set_config('search_path', $1, true), set_config('app.tenant_id', $2, true)",
    )
    .bind(quote(schema))
    .bind(tenant_id)
    .execute(&mut *tx)
    .await
    .map_err(ProviderError::sql("set the search path and the tenant"))?;
    for (table, list) in rows {
        let list: Vec<Map<String, Value>> = list
            .iter()
            .map(|row| {
                let mut row = row.clone();
                if shared {
                    // A seed row of a shared table is the tenant's own, whatever its template
                    // rendered into `tenant_id` (a tenant's name is not JSON-encoded
                    // everywhere): the admin is not filtered by the policy's WITH CHECK when
                    // it is a superuser.
                    row.insert("tenant_id".into(), Value::String(tenant_id.to_string()));
                }
                row
            })
            .collect();
        // Rows that name the same columns, one after the other, go in one statement, in
        // their order; a column a row leaves out keeps its default.
        for same in list.chunk_by(|a, b| a.keys().eq(b.keys())) {
            let cols: Vec<String> = same[0].keys().map(|c| quote(c)).collect();
            let cols = cols.join(", ");
            let t = quote(table);
            let rows = same.iter().cloned().map(Value::Object).collect();
            sqlx::query(&format!(
                "INSERT INTO {t} ({cols}) SELECT {cols} FROM jsonb_populate_recordset(NULL::{t}, $1)"
            ))
            .bind(Value::Array(rows))
            .execute(&mut *tx)
            .await
            .map_err(ProviderError::sql(format!("seed table {table} of {slug}")))?;
        }
    }
    Ok(())
}

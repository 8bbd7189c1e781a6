//! What the slice of a tenant about to be purged holds, its tables and rows, as the plan shows it.

use std::collections::HashMap;

use sqlx::{Connection, PgConnection};

use crate::clients::postgres::server::{connection, quote};
use crate::model::resource::Kind;
use crate::targets::provider::{LiveFleet, ProviderError, RefreshTarget};

use super::{export::tables_of, PgData};

impl PgData {
    /// Counts what the slices of tenants about to be purged hold and records it in `live`;
    /// returns the queries sent. Schemas are counted together: their tables in one catalog
    /// query, their rows in one more, however many tenants; a database or a shared
    /// tenant's rows need a connection or a transaction each. A count that fails (a table
    /// whose name cannot be quoted) says so on its line instead of failing every plan.
    pub(super) async fn count_holdings(
        &self,
        slices: &[(&RefreshTarget, String, String)],
        live: &mut LiveFleet,
    ) -> Result<usize, ProviderError> {
        let mut queries = 0;
        let schemas: Vec<&str> = slices
            .iter()
            .filter(|(_, isolation, _)| isolation == "schema")
            .map(|(_, _, name)| name.as_str())
            .collect();
        let mut counted: HashMap<String, (usize, u64)> = HashMap::new();
        let mut unquotable: HashMap<String, String> = HashMap::new();
        if !schemas.is_empty() {
            let pool = self.server.pool().await?;
            let tables: Vec<(String, String)> = sqlx::query_as(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
            )
            .bind(&schemas)
            .fetch_all(pool)
            .await
            .map_err(ProviderError::sql("list the tables of the slices to purge"))?;
            queries += 1;
            let (mut in_schemas, mut plain) = (Vec::new(), Vec::new());
            for (schema, table) in tables {
                counted.entry(schema.clone()).or_default().0 += 1;
                if crate::targets::data::is_plain_ident(&table) {
                    in_schemas.push(schema);
                    plain.push(table);
                } else {
                    unquotable.insert(schema, table);
                }
            }
            if !plain.is_empty() {
                // Each table counted by a query of its own that the server makes and runs
                // (`query_to_xml`): one statement however many tables, planned one table
                // at a time, where a UNION of them all was planned as a whole.
                let rows: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT s, sum((xpath('/row/n/text()', query_to_xml(
                         format('SELECT count(*) AS n FROM %I.%I', s, t), false, true, '')))[1]::text::bigint)::bigint
                     FROM unnest($1::text[], $2::text[]) AS tables (s, t) GROUP BY s",
                )
                .bind(&in_schemas)
                .bind(&plain)
                .fetch_all(pool)
                .await
                .map_err(ProviderError::sql("count the rows of the slices to purge"))?;
                queries += 1;
                for (schema, n) in rows {
                    counted.entry(schema).or_default().1 += n as u64;
                }
            }
        }
        for (t, isolation, name) in slices {
            let what = if isolation == "schema" {
                match unquotable.get(name) {
                    Some(table) => format!(
                        "not counted: the table {table:?} of {name} needs a plain lower-case name"
                    ),
                    None => {
                        let (tables, rows) = counted.get(name).copied().unwrap_or_default();
                        crate::targets::provider::tables_and_rows(tables, rows)
                    }
                }
            } else {
                queries += 1;
                match self.holdings(isolation, name, t.tenant_id.as_deref()).await {
                    Ok(what) => what,
                    Err(e) => format!("not counted: {}", crate::causes::chain(&e)),
                }
            };
            live.holds(&t.slug, Kind::DATABASE, what);
        }
        Ok(queries)
    }

    /// What the slice of a tenant about to be purged holds: its tables and rows.
    pub(super) async fn holdings(
        &self,
        isolation: &str,
        name: &str,
        tenant_id: Option<&str>,
    ) -> Result<String, ProviderError> {
        let (tables, rows) = match isolation {
            "database" => {
                let mut conn = self.server.connect_to(name).await?;
                let counted = count_rows(&mut conn, "public", None).await;
                let _ = conn.close().await;
                counted?
            }
            isolation => {
                // Schema and shared slices live in the admin database.
                let (schema, tenant) = match isolation {
                    "shared" => match tenant_id {
                        Some(id) => (self.naming.shared_schema.as_str(), Some(id)),
                        None => return Ok(String::new()),
                    },
                    _ => (name, None),
                };
                let mut conn = connection(self.server.pool().await?).await?;
                count_rows(&mut conn, schema, tenant).await?
            }
        };
        Ok(crate::targets::provider::tables_and_rows(tables, rows))
    }
}

/// How many tables `schema` has and the rows in them (with `tenant`, only that tenant's
/// rows of the shared tables), in one query.
pub(super) async fn count_rows(
    conn: &mut PgConnection,
    schema: &str,
    tenant: Option<&str>,
) -> Result<(usize, u64), ProviderError> {
    let mut tx = conn.begin().await.map_err(ProviderError::sql("begin"))?;
    let tables = tables_of(tx.as_mut(), schema).await?;
    if tables.is_empty() {
        return Ok((0, 0));
    }
    if let Some(id) = tenant {
        // The shared tables' policy lets the admin see the rows of the tenant it names.
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(id)
            .execute(tx.as_mut())
            .await
            .map_err(ProviderError::sql("set the tenant"))?;
    }
    let filter = match tenant {
        Some(_) => " WHERE tenant_id = current_setting('app.tenant_id')",
        None => "",
    };
    let counts = table_counts(schema, &tables, filter);
    let (rows,): (i64,) = sqlx::query_as(&format!("SELECT ({})::bigint", counts.join(" + ")))
        .fetch_one(tx.as_mut())
        .await
        .map_err(ProviderError::sql(format!("count the rows of {schema}")))?;
    tx.commit().await.map_err(ProviderError::sql("commit"))?;
    Ok((tables.len(), rows as u64))
}

/// A scalar subquery counting the rows of each of `tables` of `schema` (plain identifiers,
/// quoted here) that `filter` (a `WHERE` clause, or nothing) keeps: for one statement that
/// counts them all.
pub(super) fn table_counts(schema: &str, tables: &[impl AsRef<str>], filter: &str) -> Vec<String> {
    tables
        .iter()
        .map(|t| {
            format!(
                "(SELECT count(*) FROM {}.{}{filter})",
                quote(schema),
                quote(t.as_ref())
            )
        })
        .collect()
}

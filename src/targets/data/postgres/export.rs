//! The offboarding's export of a slice: every table as CSV, in one read-only snapshot.

use async_trait::async_trait;
use sqlx::{Connection, Executor as _, PgConnection};

use crate::clients::postgres::server::{connection, quote};
use crate::export::sink::ExportSink;
use crate::model::resource::{Key, Kind};
use crate::targets::provider::{Export, ExportRequest, ProviderError};

use super::PgData;

/// Writes every table of `schema` as CSV with a header, each with `COPY … TO STDOUT`
/// streamed to its file, in one read-only snapshot so the row counts match the files. With
/// `tenant`, only that tenant's rows of the shared tables.
pub(super) async fn export_tables(
    conn: &mut PgConnection,
    schema: &str,
    tenant: Option<&str>,
    sink: &ExportSink,
) -> Result<(), ProviderError> {
    use futures::StreamExt;
    let mut tx = conn.begin().await.map_err(ProviderError::sql("begin"))?;
    tx.as_mut()
        .execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(ProviderError::sql("start a snapshot"))?;
    if let Some(id) = tenant {
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(id)
            .execute(tx.as_mut())
            .await
            .map_err(ProviderError::sql("set the tenant"))?;
    }
    let sql = format!(
        "SELECT c.relname FROM {}
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1",
        crate::clients::postgres::RELATIONS_OF_SCHEMA
    );
    let tables: Vec<(String,)> = sqlx::query_as(&sql)
        .bind(schema)
        .fetch_all(tx.as_mut())
        .await
        .map_err(ProviderError::sql(format!("list the tables of {schema}")))?;
    for (table,) in tables {
        if !crate::targets::data::is_plain_ident(&table) {
            return Err(ProviderError::Refused(format!(
                "the table {table:?} of {schema} needs a plain lower-case name to be exported"
            )));
        }
        let t = format!("{}.{}", quote(schema), quote(&table));
        // A query, not the bare table: COPY takes no partitioned table, and a shared
        // tenant's rows are a filter.
        let source = match tenant {
            None => format!("(SELECT * FROM {t})"),
            Some(_) => {
                format!("(SELECT * FROM {t} WHERE tenant_id = current_setting('app.tenant_id'))")
            }
        };
        let count = format!("SELECT count(*) FROM {source} AS rows");
        let (rows,): (i64,) = sqlx::query_as(&count)
            .fetch_one(tx.as_mut())
            .await
            .map_err(ProviderError::sql(format!("count the rows of {table}")))?;
        let mut file = sink.file(&format!("tables/{table}.csv")).await?;
        let mut stream = tx
            .as_mut()
            .copy_out_raw(&format!(
                "COPY {source} TO STDOUT WITH (FORMAT csv, HEADER)"
            ))
            .await
            .map_err(ProviderError::sql(format!("export {table}")))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(ProviderError::sql(format!("export {table}")))?;
            file.write(&chunk).await?;
        }
        drop(stream);
        sink.finish_table(&table, file, rows as u64).await?;
    }
    tx.commit()
        .await
        .map_err(ProviderError::sql("end the snapshot"))
}

/// The tables of `schema` whose names can be quoted, or an error naming one that cannot.
pub(super) async fn tables_of(
    conn: &mut PgConnection,
    schema: &str,
) -> Result<Vec<String>, ProviderError> {
    let sql = format!(
        "SELECT c.relname FROM {}
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1",
        crate::clients::postgres::RELATIONS_OF_SCHEMA
    );
    let tables: Vec<(String,)> = sqlx::query_as(&sql)
        .bind(schema)
        .fetch_all(&mut *conn)
        .await
        .map_err(ProviderError::sql(format!("list the tables of {schema}")))?;
    tables
        .into_iter()
        .map(|(t,)| {
            if crate::targets::data::is_plain_ident(&t) {
                Ok(t)
            } else {
                Err(ProviderError::Refused(format!(
                    "the table {t:?} of {schema} needs a plain lower-case name"
                )))
            }
        })
        .collect()
}

#[async_trait]
impl Export for PgData {
    async fn export(&self, req: &ExportRequest<'_>) -> Result<(), ProviderError> {
        let Some(slice) = req.recorded.get(&Key::new(Kind::DATABASE)) else {
            return Ok(());
        };
        let name = slice.str("name");
        if slice.str("isolation") == "database" {
            let mut conn = self.server.connect_to(name).await?;
            let result = export_tables(&mut conn, "public", None, req.sink).await;
            let _ = conn.close().await;
            return result;
        }
        // Schema and shared slices live in the admin database: a shared tenant's rows are
        // those of the shared schema that are its own.
        let (schema, tenant) = match slice.str("isolation") {
            "shared" => (self.naming.shared_schema.as_str(), Some(req.tenant_id)),
            _ => (name, None),
        };
        let mut conn = connection(self.server.pool().await?).await?;
        export_tables(&mut conn, schema, tenant, req.sink).await
    }
}

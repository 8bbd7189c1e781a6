//! The offboarding's export of a tenant database: every table as CSV.

use async_trait::async_trait;

use crate::clients::sqlite;
use crate::export::sink::push_csv_record;
use crate::model::resource::{Key, Kind};
use crate::targets::provider::{Export, ExportRequest, ProviderError};

use super::LocalData;

/// One SQLite value as CSV text: numbers as SQLite prints them, text as it is, a blob as
/// hex, NULL as none.
pub(super) fn csv_field(
    row: &sqlx::sqlite::SqliteRow,
    i: usize,
) -> Result<Option<String>, sqlx::Error> {
    use sqlx::{Row, TypeInfo, ValueRef};
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(None);
    }
    Ok(Some(match raw.type_info().name() {
        "INTEGER" => row.try_get::<i64, _>(i)?.to_string(),
        "REAL" => row.try_get::<f64, _>(i)?.to_string(),
        "BLOB" => hex::encode(row.try_get::<Vec<u8>, _>(i)?),
        _ => row.try_get::<String, _>(i)?,
    }))
}

#[async_trait]
impl Export for LocalData {
    async fn export(&self, req: &ExportRequest<'_>) -> Result<(), ProviderError> {
        use futures::TryStreamExt;
        use sqlx::Row;
        let path = self.database_path(req.slug);
        if !req.recorded.contains_key(&Key::new(Kind::DATABASE)) || !path.exists() {
            return Ok(());
        }
        let Some(pool) = sqlite::open_reader(&path, 1).await? else {
            return Ok(());
        };
        for table in sqlite::user_tables(&pool).await? {
            if !crate::targets::data::is_plain_ident(&table) {
                return Err(ProviderError::Refused(format!(
                    "the table {table:?} needs a plain lower-case name to be exported"
                )));
            }
            let mut file = req.sink.file(&format!("tables/{table}.csv")).await?;
            let columns: Vec<String> = sqlx::query_as::<_, (String,)>(
                "SELECT name FROM pragma_table_info(?) ORDER BY cid",
            )
            .bind(&table)
            .fetch_all(&pool)
            .await
            .map_err(ProviderError::sql(format!("read the columns of {table}")))?
            .into_iter()
            .map(|(c,)| c)
            .collect();
            let mut out = Vec::with_capacity(64 * 1024);
            push_csv_record(&mut out, columns.iter().map(|c| Some(c.as_str())));
            let mut rows = 0u64;
            let select = format!("SELECT * FROM \"{table}\"");
            let mut stream = sqlx::query(&select).fetch(&pool);
            while let Some(row) = stream
                .try_next()
                .await
                .map_err(ProviderError::sql(format!("export {table}")))?
            {
                let fields = (0..row.columns().len())
                    .map(|i| csv_field(&row, i))
                    .collect::<Result<Vec<Option<String>>, _>>()
                    .map_err(ProviderError::sql(format!("export {table}")))?;
                push_csv_record(&mut out, fields.iter().map(Option::as_deref));
                rows += 1;
                // Written out a block at a time: a table is never held whole.
                if out.len() >= 64 * 1024 {
                    file.write(&out).await?;
                    out.clear();
                }
            }
            file.write(&out).await?;
            req.sink.finish_table(&table, file, rows).await?;
        }
        pool.close().await;
        Ok(())
    }
}

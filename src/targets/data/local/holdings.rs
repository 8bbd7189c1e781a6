//! What a tenant database about to be purged holds, for the plan.

use std::path::Path;

use crate::clients::sqlite;
use crate::targets::provider::ProviderError;

/// What a tenant database holds, for the plan of its purge.
pub(super) async fn holdings(path: &Path) -> Result<String, ProviderError> {
    let Some(pool) = sqlite::open_reader(path, 1).await? else {
        return Ok(crate::targets::provider::tables_and_rows(0, 0));
    };
    let tables = sqlite::user_tables(&pool).await?;
    let mut rows = 0u64;
    for table in &tables {
        // Names come from the database's own catalog; quoted, with any quote doubled.
        let (n,): (i64,) = sqlx::query_as(&format!(
            "SELECT count(*) FROM \"{}\"",
            table.replace('"', "\"\"")
        ))
        .fetch_one(&pool)
        .await
        .map_err(ProviderError::sql(format!("count the rows of {table}")))?;
        rows += n as u64;
    }
    pool.close().await;
    Ok(crate::targets::provider::tables_and_rows(
        tables.len(),
        rows,
    ))
}

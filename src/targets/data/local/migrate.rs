//! A tenant database's migrations and seed rows, each recorded in the transaction that makes it.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::sqlite::{SqliteJournalMode, SqlitePool};
use sqlx::Executor as _;

use crate::clients::sqlite;
use crate::model::lifecycle::now;
use crate::slug::Slug;
use crate::targets::provider::ProviderError;

use super::LocalData;

impl LocalData {
    /// Applies the migrations the database does not have yet, each in its own transaction
    /// together with its record and the header count, and returns how many are applied.
    pub(super) async fn migrate(
        &self,
        pool: &SqlitePool,
        slug: &Slug,
        wanted: usize,
    ) -> Result<u32, ProviderError> {
        sqlx::raw_sql(TENANT_META)
            .execute(pool)
            .await
            .map_err(ProviderError::sql(format!(
                "prepare the database of {slug}"
            )))?;
        let (mut applied,): (i64,) = sqlx::query_as("PRAGMA user_version")
            .fetch_one(pool)
            .await
            .map_err(ProviderError::sql("read user_version"))?;
        let wanted = wanted.min(self.migrations.len());
        for m in self.migrations.iter().take(wanted).skip(applied as usize) {
            let mut tx = pool.begin().await.map_err(ProviderError::sql("begin"))?;
            // Migrations are written by the repo's operators, not by tenants; they run as
            // the SQL they are.
            tx.as_mut()
                .execute(m.sql.as_str())
                .await
                .map_err(ProviderError::sql(format!(
                    "migration {} on {slug}",
                    m.id()
                )))?;
            sqlx::query("INSERT INTO _tenant_reconcile_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)")
                .bind(&m.version)
                .bind(&m.name)
                .bind(&m.checksum)
                .bind(now())
                .execute(tx.as_mut())
                .await
                .map_err(ProviderError::sql("record the migration"))?;
            applied += 1;
            // PRAGMA takes no parameters; `applied` is a number we computed.
            tx.as_mut()
                .execute(format!("PRAGMA user_version = {applied}").as_str())
                .await
                .map_err(ProviderError::sql("count the migration"))?;
            tx.commit()
                .await
                .map_err(ProviderError::sql("commit the migration"))?;
        }
        Ok(applied as u32)
    }

    pub(super) async fn apply_seed(
        &self,
        slug: &Slug,
        rows_json: &str,
    ) -> Result<(), ProviderError> {
        let path = self.database_path(slug);
        if !path.exists() {
            return Err(ProviderError::Unplanned(format!(
                "the database of {slug} does not exist yet"
            )));
        }
        let rows: HashMap<String, Vec<serde_json::Map<String, Value>>> =
            serde_json::from_str(rows_json).map_err(ProviderError::failed("seed rows"))?;
        let pool = sqlite::open(&path, true, SqliteJournalMode::Delete).await?;
        let result = seed(&pool, slug, &rows).await;
        pool.close().await;
        result
    }
}

/// `application_id` of a tenant database once its seed data is in ("TRS1").
pub(super) const SEEDED: u32 = 0x5452_5331;

pub(super) const TENANT_META: &str = r#"
CREATE TABLE IF NOT EXISTS _tenant_reconcile_migrations (
    version    TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at TEXT NOT NULL
);
"#;

/// Inserts the seed rows and marks the database seeded, in one transaction; a database that
/// is already marked is left alone, so seed data goes in once, ever.
pub(super) async fn seed(
    pool: &SqlitePool,
    slug: &Slug,
    rows: &HashMap<String, Vec<serde_json::Map<String, Value>>>,
) -> Result<(), ProviderError> {
    let mut tx = pool.begin().await.map_err(ProviderError::sql("begin"))?;
    let (mark,): (i64,) = sqlx::query_as("PRAGMA application_id")
        .fetch_one(tx.as_mut())
        .await
        .map_err(ProviderError::sql("read application_id"))?;
    if mark as u32 == SEEDED {
        return Ok(());
    }
    for (table, list) in rows {
        for row in list {
            // Names were checked to be plain identifiers when the seed was compiled, and
            // are quoted; every value is a bound parameter.
            let cols: Vec<String> = row.keys().map(|c| format!("\"{c}\"")).collect();
            let marks = vec!["?"; cols.len()].join(", ");
            let sql = format!(
                "INSERT INTO \"{table}\" ({}) VALUES ({marks})",
                cols.join(", ")
            );
            let mut args = sqlx::sqlite::SqliteArguments::default();
            for v in row.values() {
                bind_json(&mut args, v);
            }
            sqlx::query_with(&sql, args)
                .execute(tx.as_mut())
                .await
                .map_err(ProviderError::sql(format!("seed table {table} of {slug}")))?;
        }
    }
    tx.as_mut()
        .execute(format!("PRAGMA application_id = {}", SEEDED as i32).as_str())
        .await
        .map_err(ProviderError::sql("mark the seed"))?;
    tx.commit()
        .await
        .map_err(ProviderError::sql("commit the seed"))
}

pub(super) fn bind_json(args: &mut sqlx::sqlite::SqliteArguments<'static>, v: &Value) {
    use sqlx::Arguments;
    let r = match v {
        Value::Null => args.add(None::<String>),
        Value::Bool(b) => args.add(*b),
        Value::Number(n) if n.is_i64() => args.add(n.as_i64()),
        Value::Number(n) => args.add(n.as_f64()),
        Value::String(s) => args.add(s.clone()),
        other => args.add(other.to_string()),
    };
    // Adding an owned value to SQLite arguments cannot fail.
    debug_assert!(r.is_ok());
}

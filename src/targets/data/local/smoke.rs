//! The local data target's smoke tests: its SQLite file opens, its rows read, a row is
//! written and rolled back, and the declared `sql` checks run, each in a transaction that
//! is rolled back. SQLite has no roles, so there is no login or isolation to check: the file
//! is the tenant's alone.

use std::path::Path;
use std::time::Instant;

use sqlx::sqlite::SqlitePool;
use sqlx::{Connection, Row};

use crate::model::checks::{CheckSpec, Probe};
use crate::model::health::CheckOutcome;
use crate::model::resource::{Key, Kind};
use crate::smoke::verdicts::sql_verdict;
use crate::targets::provider::{Smoke, StepContext};

use super::LocalData;

pub async fn checks(path: &Path, seeded: bool, sql: &[&CheckSpec]) -> Vec<CheckOutcome> {
    let started = Instant::now();
    let pool = match crate::clients::sqlite::open_existing(path).await {
        Ok(p) => p,
        Err(e) => {
            let why = crate::causes::chain(&e);
            let mut out = vec![CheckOutcome::fail("data", why.clone(), started.elapsed())];
            out.extend(sql.iter().map(|c| {
                CheckOutcome::fail(
                    &c.name,
                    "not run: the slice does not open",
                    started.elapsed(),
                )
            }));
            return out;
        }
    };
    let mut out = Vec::new();
    let tables = crate::clients::sqlite::user_tables(&pool).await;
    let counted = match &tables {
        Ok(tables) => count_rows(&pool, tables).await,
        Err(e) => Err(crate::causes::chain(e)),
    };
    let data = crate::smoke::verdicts::data_verdict("", &counted, seeded);
    out.push(CheckOutcome::of("data", started, data));
    let started = Instant::now();
    let write = match crate::smoke::verdicts::write_target(&counted) {
        Ok(Some(table)) => write_and_roll_back(&pool, table).await,
        Ok(None) => Ok("no row to write to".into()),
        Err(e) => Err(e),
    };
    out.push(CheckOutcome::of("write", started, write));
    for check in sql {
        let Probe::Sql { sql } = &check.probe else {
            continue;
        };
        let started = Instant::now();
        let verdict = tokio::time::timeout(check.timeout(), query_check(&pool, sql))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no answer within {}",
                    humantime::format_duration(check.timeout())
                ))
            });
        out.push(CheckOutcome::of(&check.name, started, verdict));
    }
    pool.close().await;
    out
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn count_rows(pool: &SqlitePool, tables: &[String]) -> Result<Vec<(String, u64)>, String> {
    let mut out = Vec::new();
    for table in tables {
        // Names come from the database's own catalog, quoted.
        let (n,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {}", quoted(table)))
            .fetch_one(pool)
            .await
            .map_err(|e| format!("cannot read {table}: {e}"))?;
        out.push((table.clone(), n as u64));
    }
    Ok(out)
}

/// Sets one column of one row of `table` to itself, and rolls it back.
async fn write_and_roll_back(pool: &SqlitePool, table: &str) -> Result<String, String> {
    let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
    let (column,): (String,) =
        sqlx::query_as("SELECT name FROM pragma_table_info(?) ORDER BY cid LIMIT 1")
            .bind(table)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| format!("cannot read the columns of {table}: {e}"))?;
    let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
    let sql = format!(
        "UPDATE {t} SET {c} = {c} WHERE rowid = (SELECT rowid FROM {t} LIMIT 1)",
        t = quoted(table),
        c = quoted(&column)
    );
    let done = sqlx::query(&sql)
        .execute(&mut *tx)
        .await
        .map_err(|e| format!("cannot write to {table}: {e}"))?;
    tx.rollback().await.map_err(|e| e.to_string())?;
    match done.rows_affected() {
        1 => Ok(format!("wrote a row of {table} and rolled it back")),
        n => Err(format!("writing a row of {table} changed {n} rows")),
    }
}

async fn query_check(pool: &SqlitePool, sql: &str) -> Result<String, String> {
    let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
    let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
    let row = sqlx::query(sql)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| format!("failed: {e}"))?;
    tx.rollback().await.map_err(|e| e.to_string())?;
    let first = row.map(|r| {
        r.try_get::<Option<bool>, _>(0)
            .or_else(|_| r.try_get::<Option<i64>, _>(0).map(|v| v.map(|n| n != 0)))
            .unwrap_or(None)
    });
    sql_verdict(first)
}

#[async_trait::async_trait]
impl Smoke for LocalData {
    async fn smoke(
        &self,
        ctx: &StepContext<'_>,
        sql: &[&crate::model::checks::CheckSpec],
    ) -> Vec<crate::model::health::CheckOutcome> {
        if !ctx.recorded.contains_key(&Key::new(Kind::DATABASE)) {
            return Vec::new();
        }
        let seeded = ctx.recorded.contains_key(&Key::new(Kind::SEED));
        crate::targets::data::local::smoke::checks(
            &self.database_path(&ctx.tenant.slug),
            seeded,
            sql,
        )
        .await
    }
}

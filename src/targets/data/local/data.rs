//! The local data target: login roles and slices in `catalog.sqlite`, and one SQLite
//! database per tenant under `data/`, with the repo's migrations and the seed data.
//!
//! Refresh reads the catalog with two queries and only the 100-byte header of each tenant
//! database: SQLite keeps `user_version` (here: how many migrations are applied) and
//! `application_id` (here: whether the seed data is in) there, and both are written in the
//! same transaction as the migration or seed they describe.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use rayon::prelude::*;
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteJournalMode, SqlitePool};
use sqlx::Executor as _;
use tokio::sync::OnceCell;

use crate::clients::sqlite;
use crate::export::sink::push_csv_record;
use crate::model::attrs::Attrs;
use crate::model::change::ResourceChange;
use crate::model::lifecycle::now;
use crate::model::migration::Migration;
use crate::model::resource::{Key, Kind};
use crate::slug::Slug;
use crate::targets::data::Naming;
use crate::targets::provider::{
    desired_of, schema_version, seed_rows_of, unmanaged, Export, ExportRequest, LiveFleet,
    Provider, ProviderError, Purge, RefreshTarget, Smoke, StepContext,
};

/// `application_id` of a tenant database once its seed data is in ("TRS1").
const SEEDED: u32 = 0x5452_5331;

const CATALOG: &str = r#"
CREATE TABLE IF NOT EXISTS roles (
    name                 TEXT PRIMARY KEY,
    slug                 TEXT NOT NULL,
    login                INTEGER NOT NULL,
    credentials_version  INTEGER NOT NULL,
    password_fingerprint TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS slices (
    slug      TEXT PRIMARY KEY,
    name      TEXT NOT NULL,
    isolation TEXT NOT NULL,
    owner     TEXT NOT NULL
);
"#;

const TENANT_META: &str = r#"
CREATE TABLE IF NOT EXISTS _tenant_reconcile_migrations (
    version    TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at TEXT NOT NULL
);
"#;

pub struct LocalData {
    dir: PathBuf,
    migrations: Vec<Migration>,
    naming: Naming,
    catalog: OnceCell<SqlitePool>,
}

impl LocalData {
    pub fn new(dir: PathBuf, migrations: Vec<Migration>, naming: Naming) -> LocalData {
        LocalData {
            dir,
            migrations,
            naming,
            catalog: OnceCell::new(),
        }
    }

    fn catalog_path(&self) -> PathBuf {
        self.dir.join("catalog.sqlite")
    }

    fn database_path(&self, slug: &Slug) -> PathBuf {
        // The slug is validated to [a-z0-9-], so it cannot leave the folder.
        self.dir.join("data").join(format!("{slug}.sqlite"))
    }

    async fn catalog(&self) -> Result<&SqlitePool, ProviderError> {
        self.catalog
            .get_or_try_init(|| async {
                let pool = sqlite::open(&self.catalog_path(), true, SqliteJournalMode::Wal).await?;
                // All tables or none, whenever the run is killed: a reader takes a
                // database without tables for one not made yet.
                sqlite::in_one_transaction(&pool, CATALOG)
                    .await
                    .map_err(ProviderError::sql("create the catalog tables"))?;
                Ok(pool)
            })
            .await
    }

    async fn apply_database(&self, slug: &Slug, attrs: &Attrs) -> Result<Attrs, ProviderError> {
        let path = self.database_path(slug);
        let pool = sqlite::open(&path, true, SqliteJournalMode::Delete).await?;
        let result = self.migrate(&pool, slug).await;
        pool.close().await;
        let applied = result?;
        sqlx::query(
            "INSERT INTO slices (slug, name, isolation, owner) VALUES (?, ?, ?, ?)
             ON CONFLICT (slug) DO UPDATE SET name = excluded.name, isolation = excluded.isolation, owner = excluded.owner",
        )
        .bind(slug.as_str())
        .bind(attrs.get("name").and_then(Value::as_str).unwrap_or_default())
        .bind(attrs.get("isolation").and_then(Value::as_str).unwrap_or_default())
        .bind(self.naming.role(slug))
        .execute(self.catalog().await?)
        .await
        .map_err(ProviderError::sql("record the data slice"))?;
        let mut out = attrs.clone();
        out.insert(
            "schema_version",
            schema_version(&self.migrations, applied as usize),
        );
        // SQLite has no grants: the file is the tenant's alone.
        out.insert("access", json!("granted"));
        Ok(out)
    }

    /// Applies the migrations the database does not have yet, each in its own transaction
    /// together with its record and the header count, and returns how many are applied.
    async fn migrate(&self, pool: &SqlitePool, slug: &Slug) -> Result<u32, ProviderError> {
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
        for m in self.migrations.iter().skip(applied as usize) {
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

    async fn apply_seed(&self, slug: &Slug, rows_json: &str) -> Result<(), ProviderError> {
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

/// Inserts the seed rows and marks the database seeded, in one transaction; a database that
/// is already marked is left alone, so seed data goes in once, ever.
async fn seed(
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

fn bind_json(args: &mut sqlx::sqlite::SqliteArguments<'static>, v: &Value) {
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

/// `user_version` and `application_id` from a SQLite file's header, as committed, or `None`
/// if there is no such file.
///
/// Read from the bytes, not through SQLite: a refresh of 10,000 tenants would otherwise open
/// 10,000 databases. A run killed while committing leaves a hot rollback journal, and the
/// file's header may then be the uncommitted one (SQLite rolls it back on the next open); the
/// committed header is then the one the journal keeps.
fn read_header(path: &Path) -> Option<(u32, u32)> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut header = [0u8; 100];
    let file_header = match f.read_exact(&mut header) {
        Ok(()) => Some(header_fields(&header)),
        // A file created but not yet written is an empty database.
        Err(_) => None,
    };
    let mut journal = path.as_os_str().to_owned();
    journal.push("-journal");
    match journal_page_one(Path::new(&journal)) {
        Some(JournalPageOne::Kept(fields)) => Some(fields),
        Some(JournalPageOne::NewDatabase) => Some((0, 0)),
        None => Some(file_header.unwrap_or((0, 0))),
    }
}

fn header_fields(page: &[u8]) -> (u32, u32) {
    let be = |at: usize| u32::from_be_bytes([page[at], page[at + 1], page[at + 2], page[at + 3]]);
    (be(60), be(68))
}

/// What a hot rollback journal says of the database's first page before the transaction it
/// rolls back.
enum JournalPageOne {
    /// Its fields as they were.
    Kept((u32, u32)),
    /// The database was empty: the transaction made it.
    NewDatabase,
}

/// Page one as a hot journal keeps it, or `None` when there is no hot journal or it does
/// not hold page one (the header was not changed). The format is SQLite's rollback journal:
/// an 8-byte magic, then the record count, nonce, initial page count, sector size and page
/// size as 4-byte big-endian numbers; records start at the sector size, each a page number,
/// the page, and a checksum.
fn journal_page_one(path: &Path) -> Option<JournalPageOne> {
    const MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() < 28 || bytes[..8] != MAGIC {
        // Missing, empty or zeroed: not hot, the file's header is committed.
        return None;
    }
    let be = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    let initial_pages = be(16)?;
    let sector = be(20)? as usize;
    let page = be(24)? as usize;
    if initial_pages == 0 {
        return Some(JournalPageOne::NewDatabase);
    }
    if !(512..=65536).contains(&page) || sector < 28 {
        return None;
    }
    let mut at = sector;
    while at + 4 + page + 4 <= bytes.len() {
        let pgno = be(at)?;
        if pgno == 1 {
            return Some(JournalPageOne::Kept(header_fields(
                &bytes[at + 4..at + 4 + page],
            )));
        }
        at += 4 + page + 4;
    }
    None
}

/// What a tenant database holds, for the plan of its purge.
async fn holdings(path: &Path) -> Result<String, ProviderError> {
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

/// One SQLite value as CSV text: numbers as SQLite prints them, text as it is, a blob as
/// hex, NULL as none.
fn csv_field(row: &sqlx::sqlite::SqliteRow, i: usize) -> Result<Option<String>, sqlx::Error> {
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
impl Provider for LocalData {
    fn name(&self) -> &'static str {
        "local data"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::ROLE, Kind::DATABASE, Kind::SEED]
    }

    async fn refresh(
        &self,
        targets: &[RefreshTarget],
        live: &mut LiveFleet,
    ) -> Result<(), ProviderError> {
        let mut roles: HashMap<String, Attrs> = HashMap::new();
        let mut slices: HashMap<String, (String, String)> = HashMap::new();
        let catalog = if self.catalog_path().exists() {
            sqlite::open_reader(&self.catalog_path(), 2).await?
        } else {
            None
        };
        if let Some(pool) = catalog {
            let role_rows = sqlite::spawn_fetch_json(
                &pool,
                "SELECT json_group_array(json_array(name, \
                 json(CASE WHEN login THEN 'true' ELSE 'false' END), \
                 credentials_version, password_fingerprint)) FROM roles",
                "roles",
            );
            let slice_rows = sqlite::spawn_fetch_json(
                &pool,
                "SELECT json_group_array(json_array(slug, name, isolation)) FROM slices",
                "slices",
            );
            let rows: Vec<(String, bool, i64, String)> = role_rows.await?;
            for (name, login, version, fp) in rows {
                roles.insert(
                    name.clone(),
                    crate::model::attrs::attrs([
                        ("name", json!(name)),
                        ("login", json!(login)),
                        ("credentials_version", json!(version)),
                        ("password_fingerprint", json!(fp)),
                    ]),
                );
            }
            let rows: Vec<(String, String, String)> = slice_rows.await?;
            slices.extend(
                rows.into_iter()
                    .map(|(slug, name, iso)| (slug, (name, iso))),
            );
            pool.close().await;
        }
        let headers: Vec<Option<(u32, u32)>> = targets
            .par_iter()
            .map(|t| read_header(&self.database_path(&t.slug)))
            .collect();
        for (t, header) in targets.iter().zip(headers) {
            if let Some(attrs) = roles.remove(&self.naming.role(&t.slug)) {
                live.insert_attrs(&t.slug, Kind::ROLE, attrs);
            }
            let Some((applied, mark)) = header else {
                continue; // No database file: the database and its seed are gone.
            };
            let (name, isolation) = slices.get(t.slug.as_str()).cloned().unwrap_or_default();
            live.insert_attrs(
                &t.slug,
                Kind::DATABASE,
                // SQLite has no grants: a database file that is there is reachable.
                crate::targets::data::database_attrs(
                    &name,
                    &isolation,
                    schema_version(&self.migrations, applied as usize),
                    true,
                ),
            );
            if mark == SEEDED {
                live.insert_attrs(&t.slug, Kind::SEED, crate::targets::data::seed_attrs());
            }
            if t.purge {
                let path = self.database_path(&t.slug);
                let what = match holdings(&path).await {
                    Ok(what) => what,
                    Err(e) => format!("not counted: {}", crate::causes::chain(&e)),
                };
                // Every mode is a file here, whatever the slice's name says.
                let file = path.strip_prefix(&self.dir).unwrap_or(&path).display();
                live.holds_as(
                    &t.slug,
                    Kind::DATABASE,
                    format!("database file {file}"),
                    what,
                );
            }
        }
        live.calls.push((self.name(), 2 + targets.len()));
        Ok(())
    }

    async fn apply(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        let desired = desired_of(change)?;
        match change.key.kind {
            Kind::ROLE => {
                let name = self.naming.role(&ctx.tenant.slug);
                let password = ctx.password(&name)?;
                let fp = crate::credentials::fingerprint(&password);
                let login = ctx.login_opens(&desired.attrs);
                sqlx::query(
                    "INSERT INTO roles (name, slug, login, credentials_version, password_fingerprint) VALUES (?, ?, ?, ?, ?)
                     ON CONFLICT (name) DO UPDATE SET login = excluded.login,
                       credentials_version = excluded.credentials_version, password_fingerprint = excluded.password_fingerprint",
                )
                .bind(&name)
                .bind(ctx.tenant.slug.as_str())
                .bind(login)
                .bind(ctx.credentials_version as i64)
                .bind(&fp)
                .execute(self.catalog().await?)
                .await
                .map_err(ProviderError::sql("write the login role"))?;
                Ok(Some(crate::model::attrs::attrs([
                    ("name", json!(name)),
                    ("login", json!(login)),
                    ("credentials_version", json!(ctx.credentials_version)),
                    ("password_fingerprint", json!(fp)),
                ])))
            }
            Kind::DATABASE => self
                .apply_database(&ctx.tenant.slug, &desired.attrs)
                .await
                .map(Some),
            Kind::SEED => {
                self.apply_seed(&ctx.tenant.slug, seed_rows_of(desired)?)
                    .await?;
                Ok(Some(desired.attrs.clone()))
            }
            other => Err(unmanaged(self, other)),
        }
    }

    crate::targets::provider::capabilities!(Export, Purge, Smoke);
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

#[async_trait]
impl Purge for LocalData {
    /// Its purges never leave the machine.
    fn remote_per_tenant(&self) -> bool {
        false
    }

    async fn purge(&self, ctx: &StepContext<'_>, key: &Key) -> Result<(), ProviderError> {
        let slug = &ctx.tenant.slug;
        match key.kind {
            Kind::ROLE => {
                sqlx::query("DELETE FROM roles WHERE name = ?")
                    .bind(self.naming.role(slug))
                    .execute(self.catalog().await?)
                    .await
                    .map_err(ProviderError::sql("purge the login role"))?;
            }
            Kind::DATABASE => {
                let path = self.database_path(slug);
                // The database with the journals SQLite may keep beside it.
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    let file = PathBuf::from(file);
                    match std::fs::remove_file(&file) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(ProviderError::io(format!("remove {}", file.display()))(e))
                        }
                        _ => {}
                    }
                }
                sqlx::query("DELETE FROM slices WHERE slug = ?")
                    .bind(slug.as_str())
                    .execute(self.catalog().await?)
                    .await
                    .map_err(ProviderError::sql("forget the data slice"))?;
            }
            other => return Err(unmanaged(self, other)),
        }
        Ok(())
    }
}

#[async_trait]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A file whose header says (2, 7) and a hot journal keeping page one as (1, 0): the
    /// committed header is the journal's.
    #[test]
    fn a_hot_journal_holds_the_committed_header() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = dir.path().join("t.sqlite");
        let page = |user_version: u32, application_id: u32| {
            let mut p = vec![0u8; 512];
            p[60..64].copy_from_slice(&user_version.to_be_bytes());
            p[68..72].copy_from_slice(&application_id.to_be_bytes());
            p
        };
        std::fs::write(&db, page(2, 7)).unwrap();
        assert_eq!(read_header(&db), Some((2, 7)));
        let mut journal = vec![0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];
        for n in [1u32, 0, 1, 512, 512] {
            journal.extend(n.to_be_bytes());
        }
        journal.resize(512, 0);
        journal.extend(1u32.to_be_bytes());
        journal.extend(page(1, 0));
        journal.extend(0u32.to_be_bytes());
        let path = dir.path().join("t.sqlite-journal");
        std::fs::write(&path, &journal).unwrap();
        assert_eq!(read_header(&db), Some((1, 0)));
        // A journal whose header is zeroed (committed, kept by journal_mode=PERSIST) is not hot.
        journal[..8].fill(0);
        std::fs::write(&path, &journal).unwrap();
        assert_eq!(read_header(&db), Some((2, 7)));
    }
}

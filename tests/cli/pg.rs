//! Test support for the Postgres target: a database and name prefixes of the test's own on
//! the real server at 127.0.0.1:5432, removed again when the test ends.

use serde_json::Value;
use sqlx::{Connection, PgConnection};

use crate::support::Repo;

pub const SERVER: &str = "postgres://postgres@127.0.0.1:5432";
pub const MASTER_KEY: &str = "test-master-key-0123456789abcdef0123456789";

/// A database `trx_<id>` and role/schema/database prefix `t<id>_`, unique to one test, so
/// tests never collide and leftovers never matter.
pub struct Pg {
    pub db: String,
    pub prefix: String,
    rt: tokio::runtime::Runtime,
}

impl Pg {
    pub fn new() -> Pg {
        Pg::create(None)
    }

    /// Another environment on the same server: a database of its own and the same name
    /// prefixes, as every environment's defaults are the same. Roles and databases are
    /// global on a server, so the two meet there.
    pub fn sibling(&self) -> Pg {
        Pg::create(Some(self.prefix.clone()))
    }

    fn create(prefix: Option<String>) -> Pg {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
        let pg = Pg {
            db: format!("trx_{id}"),
            prefix: prefix.unwrap_or_else(|| format!("t{id}_")),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        let create = format!("CREATE DATABASE \"{}\"", pg.db);
        pg.rt.block_on(async {
            let mut c = PgConnection::connect(&format!("{SERVER}/postgres"))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "these tests need PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth): {e}\n  \
                         start it with `service postgresql start` (or `pg_ctlcluster 15 main start`)"
                    )
                });
            sqlx::query(&create).execute(&mut c).await.unwrap();
        });
        pg
    }

    pub fn url(&self) -> String {
        format!("{SERVER}/{}", self.db)
    }

    /// The example repo pointed at this database, its state in Postgres too.
    pub fn repo(&self) -> Repo {
        let mut repo = Repo::example();
        repo.write("tenant-reconcile.hcl", &self.config(""));
        repo.env = vec![
            ("DATABASE_URL".into(), self.url()),
            ("TENANT_RECONCILE_MASTER_KEY".into(), MASTER_KEY.into()),
        ];
        repo
    }

    /// tenant-reconcile.hcl for this database, with `extra` lines in the postgres block.
    pub fn config(&self, extra: &str) -> String {
        format!(
            "state {{\n  backend = \"postgres\"\n}}\ntargets {{\n  control_plane = \"postgres\"\n  data = \"postgres\"\n}}\npostgres {{\n  role_prefix = \"{p}\"\n  schema_prefix = \"{p}\"\n  database_prefix = \"{p}\"\n{extra}}}\n",
            p = self.prefix
        )
    }

    /// A tenant's role, schema or database name.
    pub fn name(&self, slug: &str) -> String {
        format!("{}{}", self.prefix, slug.replace('-', "_"))
    }

    /// Rows of `sql` run by the admin on the test database, each as a JSON object.
    pub fn query(&self, sql: &str) -> Vec<Value> {
        self.query_as("postgres", &self.db, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Rows of `sql` run as `role` on `db` (trust auth: the role's own rights apply).
    pub fn query_as(&self, role: &str, db: &str, sql: &str) -> Result<Vec<Value>, String> {
        let url = format!("postgres://{role}@127.0.0.1:5432/{db}");
        self.rt.block_on(rows_at(&url, sql))
    }

    /// Runs statements as the admin on the test database.
    pub fn exec(&self, sql: &str) {
        self.exec_on(&self.db, sql);
    }

    pub fn exec_on(&self, db: &str, sql: &str) {
        let url = format!("{SERVER}/{db}");
        self.rt.block_on(async {
            let mut c = PgConnection::connect(&url).await.unwrap();
            sqlx::raw_sql(sql)
                .execute(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let _ = c.close().await;
        });
    }

    pub fn count(&self, sql: &str) -> i64 {
        let rows = self.query(sql);
        rows[0]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_i64()
            .unwrap()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let prefix = self.prefix.clone();
        let db = self.db.clone();
        let _ = self.rt.block_on(async move {
            let mut c = PgConnection::connect(&format!("{SERVER}/postgres")).await?;
            let like = format!("{}%", prefix.replace('_', "\\_"));
            let dbs: Vec<(String,)> = sqlx::query_as(
                "SELECT datname FROM pg_database WHERE datname LIKE $1 OR datname = $2",
            )
            .bind(&like)
            .bind(&db)
            .fetch_all(&mut c)
            .await?;
            for (d,) in dbs {
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{d}\" WITH (FORCE)"))
                    .execute(&mut c)
                    .await?;
            }
            let roles: Vec<(String,)> =
                sqlx::query_as("SELECT rolname FROM pg_roles WHERE rolname LIKE $1")
                    .bind(&like)
                    .fetch_all(&mut c)
                    .await?;
            for (r,) in roles {
                sqlx::query(&format!("DROP ROLE IF EXISTS \"{r}\""))
                    .execute(&mut c)
                    .await?;
            }
            c.close().await
        });
    }
}

/// Rows of `sql` run at the connection URL `url`, each as a JSON object; the error as text
/// (a refused login, a refused read).
pub async fn rows_at(url: &str, sql: &str) -> Result<Vec<Value>, String> {
    // A CTE, so statements with RETURNING work too.
    let wrapped = format!("WITH q AS ({sql}) SELECT coalesce(json_agg(q), '[]')::text FROM q");
    let mut c = PgConnection::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    let (text,): (String,) = sqlx::query_as(&wrapped)
        .fetch_one(&mut c)
        .await
        .map_err(|e| e.to_string())?;
    let _ = c.close().await;
    Ok(serde_json::from_str::<Vec<Value>>(&text).unwrap())
}

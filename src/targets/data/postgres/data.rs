//! Tenants' data on PostgreSQL: a login role per tenant and an isolated slice.
//!
//! | isolation | slice | the tenant role gets |
//! |---|---|---|
//! | `shared` | rows in the shared schema's tables, each with a `tenant_id` column under ENABLE + FORCE row-level security | membership of the shared group role, which has DML on those tables |
//! | `schema` | the schema `<schema_prefix><slug>`, owned by the admin | USAGE on it, DML on its tables and sequences |
//! | `database` | the database `<database_prefix><slug>`, owned by the admin, CONNECT revoked from PUBLIC | CONNECT, USAGE on its `public` schema, DML on its tables |
//!
//! A catalog in the admin schema records roles (credentials version, fingerprint, and a
//! digest of the password verifier), slices, applied migrations and seeds. Refresh reads it
//! together with `pg_roles`, `pg_namespace`, `pg_database` and privilege functions in a
//! fixed number of queries, whatever the fleet's size.
//!
//! Migrations and seeds of schema and shared slices are recorded in the same transaction as
//! the change they record. A database slice's own copy (in its `tenant_reconcile_meta`
//! schema) is authoritative; the catalog mirrors it after commit, so a crash in between is
//! repaired by the next run, which finds the change done and only records it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use sqlx::{Connection, Executor as _, PgConnection};
use tokio::sync::OnceCell;

use crate::clients::group_commit::{GroupCommit, Together, TENANTS_PER_BATCH};
use crate::clients::postgres::scram;
use crate::clients::postgres::server::{connection, literal, quote, retry, PgServer};
use crate::export::sink::ExportSink;
use crate::model::attrs::Attrs;
use crate::model::change::ResourceChange;
use crate::model::migration::Migration;
use crate::model::resource::{Key, Kind};
use crate::model::tenant::Isolation;
use crate::slug::Slug;
use crate::targets::data::postgres::reach;
use crate::targets::data::Naming;
use crate::targets::provider::{
    check_ours, desired_of, schema_version, seed_rows_of, unmanaged, Export, ExportRequest,
    LiveFleet, Owner, Provider, ProviderError, Purge, RefreshTarget, Smoke, StepContext,
};

const CATALOG: &str = r#"
CREATE SCHEMA IF NOT EXISTS {schema};
REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;
CREATE TABLE IF NOT EXISTS {schema}.roles (
    name                 text PRIMARY KEY,
    slug                 text NOT NULL UNIQUE,
    tenant_id            text NOT NULL,
    credentials_version  integer NOT NULL,
    password_fingerprint text NOT NULL,
    verifier_digest      text NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}.slices (
    slug      text PRIMARY KEY,
    name      text NOT NULL,
    isolation text NOT NULL,
    role      text NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}.slice_migrations (
    isolation  text NOT NULL,
    slice      text NOT NULL,
    version    text NOT NULL,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (isolation, slice, version)
);
CREATE TABLE IF NOT EXISTS {schema}.seeds (
    slug       text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"#;

/// Inside a tenant's own database: its authoritative migration and seed records.
const META: &str = r#"
CREATE SCHEMA IF NOT EXISTS tenant_reconcile_meta;
REVOKE ALL ON SCHEMA tenant_reconcile_meta FROM PUBLIC;
CREATE TABLE IF NOT EXISTS tenant_reconcile_meta.migrations (
    version    text PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS tenant_reconcile_meta.seed (
    applied_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON SCHEMA public FROM PUBLIC;
"#;

/// What a shared tenant's rows are filtered by: for a tenant's own login role, the tenant
/// its role belongs to (it cannot choose another); for any other role (the product's
/// pooled service role), the session setting `app.tenant_id`.
const SHARED: &str = r#"
CREATE SCHEMA IF NOT EXISTS {shared};
REVOKE ALL ON SCHEMA {shared} FROM PUBLIC;
GRANT USAGE ON SCHEMA {shared} TO {group};
CREATE OR REPLACE FUNCTION {shared}.current_tenant_id() RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(
        (SELECT tenant_id FROM {schema}.roles WHERE name = session_user),
        nullif(current_setting('app.tenant_id', true), '')
    )
$$;
"#;

/// A schema-mode tenant's purge, queued to go with others' ([`PgData::purge_together`]).
struct TogetherPurge {
    slug: Slug,
    slice: Slice,
    /// This state's mark for the tenant: what its schema and role must carry.
    mark: crate::targets::provider::Mark,
}

/// A tenant whose schema (when it goes too) and role are about to be dropped, as the look
/// before found them.
struct Purging<'a> {
    slice: Option<&'a Slice>,
    slug: &'a Slug,
    role: &'a str,
    found: &'a BeforePurge,
}

/// The most tables a schema may have to go with others (at most `TENANTS_PER_BATCH` of
/// them): the locks of every object dropped are held until the commit, and the server's
/// lock table is shared by every session.
const TOGETHER_RELATIONS: i64 = 20;

/// A tenant's slice as refresh finds it.
struct SliceFound {
    name: String,
    isolation: String,
    present: bool,
    granted: bool,
    owner: Owner,
}

pub struct PgData {
    server: Arc<PgServer>,
    naming: Naming,
    migrations: Vec<Migration>,
    schema: String,
    catalog_ready: OnceCell<()>,
    shared_ready: OnceCell<()>,
    purges: GroupCommit<TogetherPurge, Together<()>>,
}

/// Where a slice's migrations run and how they are recorded.
#[derive(Clone)]
struct Slice {
    isolation: Isolation,
    /// Schema or database name (plain identifier).
    name: String,
    /// The schema its tables live in.
    schema: String,
    /// Who gets DML on its tables: the tenant's role, or the shared group.
    grantee: String,
}

impl PgData {
    pub fn new(server: Arc<PgServer>, migrations: Vec<Migration>, naming: Naming) -> PgData {
        PgData {
            schema: server.schema(),
            server,
            naming,
            migrations,
            catalog_ready: OnceCell::new(),
            shared_ready: OnceCell::new(),
            purges: GroupCommit::with_limit(TENANTS_PER_BATCH),
        }
    }

    fn sql(&self, sql: &str) -> String {
        sql.replace("{schema}", &self.schema)
            .replace("{shared}", &quote(&self.naming.shared_schema))
            .replace("{group}", &quote(&self.naming.shared_group()))
    }

    async fn pool(&self) -> Result<&sqlx::PgPool, ProviderError> {
        let pool = self.server.pool().await?;
        crate::clients::postgres::ensure_once(
            pool,
            &self.catalog_ready,
            &self.schema,
            &self.sql(CATALOG),
            "the data catalog",
        )
        .await?;
        Ok(pool)
    }

    /// The shared schema, its group role and its tenant function, once per run.
    async fn ensure_shared(&self) -> Result<(), ProviderError> {
        let pool = self.pool().await?;
        if self.shared_ready.get().is_none() {
            let group = self.naming.shared_group();
            let create_group = format!("CREATE ROLE {} NOLOGIN", quote(&group));
            let shared = self.sql(SHARED);
            let mut tx = pool.begin().await.map_err(ProviderError::sql("begin"))?;
            crate::clients::postgres::lock_ddl(tx.as_mut()).await?;
            if !role_exists(tx.as_mut(), &group).await? {
                tx.as_mut()
                    .execute(create_group.as_str())
                    .await
                    .map_err(ProviderError::sql("create the shared group role"))?;
            }
            if !schema_exists(tx.as_mut(), &self.naming.shared_schema).await? {
                self.forget_slice(
                    tx.as_mut(),
                    Isolation::Shared,
                    &self.naming.shared_schema,
                    None,
                )
                .await?;
            }
            tx.as_mut()
                .execute(shared.as_str())
                .await
                .map_err(ProviderError::sql("create the shared schema"))?;
            tx.commit().await.map_err(ProviderError::sql("commit"))?;
            let _ = self.shared_ready.set(());
        }
        Ok(())
    }

    fn slice(&self, slug: &Slug, isolation: Isolation) -> Slice {
        let role = self.naming.role(slug);
        match isolation {
            Isolation::Shared => Slice {
                isolation,
                name: self.naming.shared_schema.clone(),
                schema: self.naming.shared_schema.clone(),
                grantee: self.naming.shared_group(),
            },
            Isolation::Schema => Slice {
                isolation,
                name: self.naming.schema(slug),
                schema: self.naming.schema(slug),
                grantee: role,
            },
            Isolation::Database => Slice {
                isolation,
                name: self.naming.database(slug),
                schema: "public".into(),
                grantee: role,
            },
        }
    }

    async fn apply_role(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
        attrs: &Attrs,
    ) -> Result<Attrs, ProviderError> {
        let tenant_id = ctx.tenant_id()?;
        let name = self.naming.role(&ctx.tenant.slug);
        let login = ctx.login_opens(attrs);
        let password = ctx.password(&name)?;
        let fingerprint = crate::credentials::fingerprint(&password);
        let verifier = scram::verifier(&password);
        // The verifier is base64 and `$:`; it can hold no quote, and the server stores it
        // as it is, so the password itself never leaves this process.
        debug_assert!(!verifier.contains('\''));
        let pool = self.pool().await?;
        let mut tx = pool.begin().await.map_err(ProviderError::sql("begin"))?;
        crate::clients::postgres::advisory_xact_lock(
            tx.as_mut(),
            &format!("tenant-reconcile/role/{name}"),
        )
        .await?;
        let existing = comment(tx.as_mut(), Marked::Role, &name).await?;
        if let Some(comment) = &existing {
            check_ours(
                ctx,
                change,
                &format!("the role {name}"),
                &Owner::from_text(comment.as_deref()),
            )?;
        }
        let verb = if existing.is_some() {
            "ALTER"
        } else {
            "CREATE"
        };
        let options = if login { "LOGIN" } else { "NOLOGIN" };
        tx.as_mut()
            .execute(
                format!(
                    "{verb} ROLE {} WITH {options} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD '{verifier}'",
                    quote(&name)
                )
                .as_str(),
            )
            .await
            .map_err(ProviderError::sql(format!("{} the role {name}", verb.to_lowercase())))?;
        // In the same transaction as the role: it never exists without its mark.
        tx.as_mut()
            .execute(
                format!(
                    "COMMENT ON ROLE {} IS {}",
                    quote(&name),
                    literal(&ctx.mark.text())
                )
                .as_str(),
            )
            .await
            .map_err(ProviderError::sql(format!("mark the role {name}")))?;
        let sql_0 = self.sql(
            "INSERT INTO {schema}.roles (name, slug, tenant_id, credentials_version, password_fingerprint, verifier_digest)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (name) DO UPDATE SET slug = excluded.slug, tenant_id = excluded.tenant_id,
               credentials_version = excluded.credentials_version,
               password_fingerprint = excluded.password_fingerprint, verifier_digest = excluded.verifier_digest",
        );
        sqlx::query(&sql_0)
            .bind(&name)
            .bind(ctx.tenant.slug.as_str())
            .bind(tenant_id)
            .bind(ctx.credentials_version as i32)
            .bind(&fingerprint)
            .bind(scram::digest(&verifier))
            .execute(tx.as_mut())
            .await
            .map_err(ProviderError::sql("record the role"))?;
        tx.commit().await.map_err(ProviderError::sql("commit"))?;
        if !login {
            // Suspension also ends the sessions the role already has.
            let ended = sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            )
            .bind(&name)
            .execute(pool)
            .await;
            if let Err(e) = ended {
                tracing::warn!(role = %name, error = %e, "could not end the suspended role's sessions");
            }
        }
        Ok(crate::model::attrs::attrs([
            ("name", json!(name)),
            ("login", json!(login)),
            ("credentials_version", json!(ctx.credentials_version)),
            ("password_fingerprint", json!(fingerprint)),
        ]))
    }

    async fn apply_database(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
        attrs: &Attrs,
    ) -> Result<Attrs, ProviderError> {
        let slug = &ctx.tenant.slug;
        let slice = self.slice(slug, ctx.tenant.isolation);
        let role = self.naming.role(slug);
        let pool = self.pool().await?;
        // First what the role (and in shared mode its group) was given beyond its slice is
        // taken back; the slice's own grants, some of which that may take too, follow.
        let (group, shared) = (self.naming.shared_group(), &self.naming.shared_schema);
        reach::confine(
            &self.server,
            &role,
            slice.isolation.as_str(),
            &slice.name,
            &group,
            shared,
        )
        .await?;
        if slice.isolation == Isolation::Shared
            && reach::confine(&self.server, &group, "group", shared, &group, shared).await?
        {
            // Its rights on the shared schema went too; its tables' come back below.
            let mut tx = pool.begin().await.map_err(ProviderError::sql("begin"))?;
            crate::clients::postgres::lock_ddl(tx.as_mut()).await?;
            tx.as_mut()
                .execute(
                    self.sql("GRANT USAGE ON SCHEMA {shared} TO {group}")
                        .as_str(),
                )
                .await
                .map_err(ProviderError::sql("grant the shared schema"))?;
            tx.commit().await.map_err(ProviderError::sql("commit"))?;
        }
        let applied = match slice.isolation {
            Isolation::Shared | Isolation::Schema => {
                if slice.isolation == Isolation::Shared {
                    self.ensure_shared().await?;
                    pool.execute(
                        format!("GRANT {} TO {}", quote(&slice.grantee), quote(&role)).as_str(),
                    )
                    .await
                    .map_err(ProviderError::sql("grant the shared group"))?;
                } else {
                    let s = quote(&slice.schema);
                    let mut tx = pool.begin().await.map_err(ProviderError::sql("begin"))?;
                    crate::clients::postgres::advisory_xact_lock(
                        tx.as_mut(),
                        &format!("tenant-reconcile/slice/schema/{}", slice.name),
                    )
                    .await?;
                    match comment(tx.as_mut(), Marked::Schema, &slice.name).await? {
                        Some(comment) => check_ours(
                            ctx,
                            change,
                            &format!("the schema {}", slice.name),
                            &Owner::from_text(comment.as_deref()),
                        )?,
                        None => {
                            self.forget_slice(
                                tx.as_mut(),
                                Isolation::Schema,
                                &slice.name,
                                Some(slug),
                            )
                            .await?
                        }
                    }
                    let create = format!(
                        "CREATE SCHEMA IF NOT EXISTS {s};
                         COMMENT ON SCHEMA {s} IS {mark};
                         REVOKE ALL ON SCHEMA {s} FROM PUBLIC;
                         GRANT USAGE ON SCHEMA {s} TO {r};",
                        r = quote(&role),
                        mark = literal(&ctx.mark.text())
                    );
                    tx.as_mut()
                        .execute(create.as_str())
                        .await
                        .map_err(ProviderError::sql(format!(
                            "create the schema {}",
                            slice.name
                        )))?;
                    tx.commit().await.map_err(ProviderError::sql("commit"))?;
                }
                let mut conn = connection(pool).await?;
                self.migrate(&mut conn, &slice, None).await?
            }
            Isolation::Database => {
                let db = quote(&slice.name);
                // Whose it is was checked before this step's first attempt (`apply`).
                self.create_database(pool, &slice.name, slug).await?;
                // CREATE DATABASE cannot share a transaction with its comment: the executor
                // recorded its intent first (`marks_after_create`).
                let grant = format!(
                    "COMMENT ON DATABASE {db} IS {mark}; REVOKE ALL ON DATABASE {db} FROM PUBLIC; GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {r};",
                    r = quote(&role),
                    mark = literal(&ctx.mark.text())
                );
                pool.execute(grant.as_str())
                    .await
                    .map_err(ProviderError::sql(format!(
                        "grant the database {}",
                        slice.name
                    )))?;
                let mut conn = self.server.connect_to(&slice.name).await?;
                let result = async {
                    (&mut conn)
                        .execute(META)
                        .await
                        .map_err(ProviderError::sql("prepare the tenant database"))?;
                    conn.execute(
                        format!("GRANT USAGE ON SCHEMA public TO {}", quote(&role)).as_str(),
                    )
                    .await
                    .map_err(ProviderError::sql("grant the public schema"))?;
                    self.migrate(&mut conn, &slice, Some(pool)).await
                }
                .await;
                let _ = conn.close().await;
                result?
            }
        };
        let sql_1 = self.sql(
            "INSERT INTO {schema}.slices (slug, name, isolation, role) VALUES ($1, $2, $3, $4)
             ON CONFLICT (slug) DO UPDATE SET name = excluded.name, isolation = excluded.isolation, role = excluded.role",
        );
        sqlx::query(&sql_1)
            .bind(slug.as_str())
            .bind(&slice.name)
            .bind(slice.isolation.as_str())
            .bind(&role)
            .execute(pool)
            .await
            .map_err(ProviderError::sql("record the slice"))?;
        let mut out = attrs.clone();
        out.insert("name", json!(slice.name));
        out.insert("schema_version", schema_version(&self.migrations, applied));
        out.insert("access", json!("granted"));
        Ok(out)
    }

    /// Applies the migrations the slice has not had, each in its own transaction with its
    /// record, then grants the slice's tables; returns how many migrations are applied.
    /// `mirror` is the admin pool when the slice is a database of its own.
    async fn migrate(
        &self,
        conn: &mut PgConnection,
        slice: &Slice,
        mirror: Option<&sqlx::PgPool>,
    ) -> Result<usize, ProviderError> {
        let schema = quote(&slice.schema);
        let lock = format!(
            "tenant-reconcile/slice/{}/{}",
            slice.isolation.as_str(),
            slice.name
        );
        for m in &self.migrations {
            let mut tx = conn.begin().await.map_err(ProviderError::sql("begin"))?;
            crate::clients::postgres::advisory_xact_lock(tx.as_mut(), &lock).await?;
            let recorded: Option<(String,)> = if mirror.is_some() {
                sqlx::query_as("SELECT checksum FROM tenant_reconcile_meta.migrations WHERE version = $1")
                    .bind(&m.version)
                    .fetch_optional(tx.as_mut())
                    .await
            } else {
                let sql_2 = self.sql(
                    "SELECT checksum FROM {schema}.slice_migrations WHERE isolation = $1 AND slice = $2 AND version = $3",
                );
                sqlx::query_as(&sql_2)
                .bind(slice.isolation.as_str())
                .bind(&slice.name)
                .bind(&m.version)
                .fetch_optional(tx.as_mut())
                .await
            }
            .map_err(ProviderError::sql("read the applied migrations"))?;
            match recorded {
                Some((checksum,)) if checksum != m.checksum => {
                    return Err(ProviderError::Refused(format!(
                        "migration {} was edited after it was applied to {} (checksum {} there, {} in the repo)",
                        m.id(), slice.name, checksum, m.checksum
                    )))
                }
                Some(_) => {}
                None => {
                    // Migrations are written by the repo's operators, not by tenants; they
                    // run as the SQL they are, in the slice's schema.
                    tx.as_mut()
                        .execute(format!("SET LOCAL search_path = {schema}").as_str())
                        .await
                        .map_err(ProviderError::sql("set the search path"))?;
                    tx.as_mut().execute(m.sql.as_str())
                        .await
                        .map_err(ProviderError::sql(format!("migration {} on {}", m.id(), slice.name)))?;
                    if slice.isolation == Isolation::Shared {
                        refuse_unsafe(tx.as_mut(), &slice.schema, &format!("migration {} on {}", m.id(), slice.name)).await?;
                        self.tenantize(tx.as_mut(), &slice.schema).await?;
                    }
                    if mirror.is_some() {
                        sqlx::query("INSERT INTO tenant_reconcile_meta.migrations (version, name, checksum) VALUES ($1, $2, $3)")
                            .bind(&m.version)
                            .bind(&m.name)
                            .bind(&m.checksum)
                            .execute(tx.as_mut())
                            .await
                            .map(drop)
                    } else {
                        self.record_migration(tx.as_mut(), slice, m).await
                    }
                    .map_err(ProviderError::sql("record the migration"))?;
                }
            }
            tx.commit()
                .await
                .map_err(ProviderError::sql("commit the migration"))?;
            if let Some(pool) = mirror {
                let mut c = connection(pool).await?;
                self.record_migration(&mut c, slice, m)
                    .await
                    .map_err(ProviderError::sql("record the migration in the catalog"))?;
            }
        }
        // Grants are (re)applied every time: a revoked grant is drift this repairs. They
        // take the slice's lock too: concurrent GRANTs on the same tables (shared tenants
        // applied in parallel) fail with "tuple concurrently updated".
        let grant = format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {g};
             GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {g};",
            g = quote(&slice.grantee)
        );
        let mut tx = conn.begin().await.map_err(ProviderError::sql("begin"))?;
        crate::clients::postgres::advisory_xact_lock(tx.as_mut(), &lock).await?;
        if slice.isolation == Isolation::Shared {
            // Made by hand since: granting it would show every tenant's rows.
            refuse_unsafe(
                tx.as_mut(),
                &slice.schema,
                &format!("the shared schema {}", slice.name),
            )
            .await?;
        }
        tx.as_mut()
            .execute(grant.as_str())
            .await
            .map_err(ProviderError::sql(format!(
                "grant the tables of {}",
                slice.name
            )))?;
        if slice.isolation == Isolation::Shared {
            // Row-level security switched off or a policy edited by hand is drift too.
            self.tenantize(tx.as_mut(), &slice.schema).await?;
        }
        tx.commit().await.map_err(ProviderError::sql("commit"))?;
        Ok(self.migrations.len())
    }

    /// Creates the database `name` unless it exists. CREATE DATABASE cannot run in a
    /// transaction, so another session may be creating the same one (a twin, or the backend
    /// of a killed run still finishing): its "already exists" or duplicate-key error means
    /// wait and look again, until that session commits or gives up.
    async fn create_database(
        &self,
        pool: &sqlx::PgPool,
        name: &str,
        slug: &Slug,
    ) -> Result<(), ProviderError> {
        // From template0: whatever someone put in template1 (a large object a tenant made
        // there, a table, a grant) is not copied into every tenant's database.
        let create = format!("CREATE DATABASE {} TEMPLATE template0", quote(name));
        for _ in 0..50 {
            let (exists,): (bool,) =
                sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(name)
                    .fetch_one(pool)
                    .await
                    .map_err(ProviderError::sql("look for the database"))?;
            if exists {
                return Ok(());
            }
            let mut c = connection(pool).await?;
            self.forget_slice(&mut c, Isolation::Database, name, Some(slug))
                .await?;
            match pool.execute(create.as_str()).await {
                Ok(_) => return Ok(()),
                Err(sqlx::Error::Database(e))
                    if matches!(e.code().as_deref(), Some("42P04" | "23505")) =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(source) => {
                    return Err(ProviderError::Sql {
                        context: format!("create the database {name}"),
                        source,
                    })
                }
            }
        }
        Err(ProviderError::TimedOut(format!(
            "another session kept creating the database {name} for 5 s without finishing; run apply again"
        )))
    }

    /// A slice that is not there (never made, or dropped behind our back) has no
    /// migrations and no seed, whatever the catalog remembers: forget it, so that building
    /// it again migrates and seeds it again. `slug` is its only tenant; `None` means the
    /// shared schema, whose tenants all lost their rows.
    async fn forget_slice(
        &self,
        conn: &mut PgConnection,
        isolation: Isolation,
        name: &str,
        slug: Option<&Slug>,
    ) -> Result<(), ProviderError> {
        let migrations =
            self.sql("DELETE FROM {schema}.slice_migrations WHERE isolation = $1 AND slice = $2");
        sqlx::query(&migrations)
            .bind(isolation.as_str())
            .bind(name)
            .execute(&mut *conn)
            .await
            .map_err(ProviderError::sql("forget the slice's migrations"))?;
        let seeds = match slug {
            Some(_) => self.sql("DELETE FROM {schema}.seeds WHERE slug = $1"),
            None => self.sql(
                "DELETE FROM {schema}.seeds WHERE slug IN (SELECT slug FROM {schema}.slices WHERE isolation = 'shared')",
            ),
        };
        sqlx::query(&seeds)
            .bind(slug.map(Slug::as_str))
            .execute(&mut *conn)
            .await
            .map_err(ProviderError::sql("forget the slice's seed"))?;
        Ok(())
    }

    async fn record_migration(
        &self,
        conn: &mut PgConnection,
        slice: &Slice,
        m: &Migration,
    ) -> Result<(), sqlx::Error> {
        let sql_3 = self.sql(
            "INSERT INTO {schema}.slice_migrations (isolation, slice, version, name, checksum) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (isolation, slice, version) DO NOTHING",
        );
        sqlx::query(&sql_3)
            .bind(slice.isolation.as_str())
            .bind(&slice.name)
            .bind(&m.version)
            .bind(&m.name)
            .bind(&m.checksum)
            .execute(&mut *conn)
            .await
            .map(drop)
    }

    /// Gives every table of the shared schema a `tenant_id` column filled from the session's
    /// tenant, and row-level security (forced, so even the owner is filtered) on it.
    async fn tenantize(&self, tx: &mut PgConnection, schema: &str) -> Result<(), ProviderError> {
        let tables: Vec<(String, bool, bool, bool)> = sqlx::query_as(
            "SELECT c.relname,
                    EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped),
                    c.relrowsecurity AND c.relforcerowsecurity,
                    EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'tenant_isolation'
                      AND p.polcmd = '*' AND p.polpermissive AND p.polroles = '{0}'
                      AND pg_get_expr(p.polqual, p.polrelid) = ANY($2)
                      AND pg_get_expr(p.polwithcheck, p.polrelid) = ANY($2))
             FROM {relations}
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')"
            .replace("{relations}", crate::clients::postgres::RELATIONS_OF_SCHEMA)
            .as_str(),
        )
        .bind(schema)
        .bind(policy_texts(schema))
        .fetch_all(&mut *tx)
        .await
        .map_err(ProviderError::sql("list the shared tables"))?;
        let shared = quote(schema);
        for (table, has_column, secured, has_policy) in tables {
            if !crate::targets::data::is_plain_ident(&table) {
                return Err(ProviderError::Refused(format!(
                    "the shared table {table:?} needs a plain lower-case name to be put under row-level security"
                )));
            }
            let t = format!("{shared}.{}", quote(&table));
            let mut sql = String::new();
            if !has_column {
                sql += &format!("ALTER TABLE {t} ADD COLUMN tenant_id text NOT NULL DEFAULT {shared}.current_tenant_id();");
            }
            if !secured {
                sql += &format!("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY; ALTER TABLE {t} FORCE ROW LEVEL SECURITY;");
            }
            if !has_policy {
                // Missing, or changed by hand (another expression, roles or command).
                sql += &format!(
                    "DROP POLICY IF EXISTS tenant_isolation ON {t};
                     CREATE POLICY tenant_isolation ON {t}
                       USING (tenant_id = {shared}.current_tenant_id())
                       WITH CHECK (tenant_id = {shared}.current_tenant_id());"
                );
            }
            if !sql.is_empty() {
                tx.execute(sql.as_str())
                    .await
                    .map_err(ProviderError::sql(format!(
                        "secure the shared table {table}"
                    )))?;
            }
        }
        Ok(())
    }

    async fn apply_seed(
        &self,
        ctx: &StepContext<'_>,
        rows_json: &str,
    ) -> Result<(), ProviderError> {
        let slug = &ctx.tenant.slug;
        let tenant_id = ctx.tenant_id()?;
        let rows: Vec<(String, Vec<Map<String, Value>>)> =
            serde_json::from_str::<HashMap<String, Vec<Map<String, Value>>>>(rows_json)
                .map_err(ProviderError::failed("seed rows"))?
                .into_iter()
                .collect();
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
        crate::clients::postgres::advisory_xact_lock(
            tx.as_mut(),
            &format!("tenant-reconcile/seed/{slug}"),
        )
        .await?;
        let (done,): (bool,) = sqlx::query_as(
            &self.sql("SELECT EXISTS (SELECT 1 FROM {schema}.seeds WHERE slug = $1)"),
        )
        .bind(slug.as_str())
        .fetch_one(tx.as_mut())
        .await
        .map_err(ProviderError::sql("read the seed mark"))?;
        if done {
            return Ok(());
        }
        let shared = slice.isolation == Isolation::Shared;
        insert_rows(tx.as_mut(), &slice.schema, tenant_id, &rows, slug, shared).await?;
        self.record_seed(tx.as_mut(), slug).await?;
        tx.commit()
            .await
            .map_err(ProviderError::sql("commit the seed"))
    }

    async fn record_seed(&self, conn: &mut PgConnection, slug: &Slug) -> Result<(), ProviderError> {
        sqlx::query(
            &self
                .sql("INSERT INTO {schema}.seeds (slug) VALUES ($1) ON CONFLICT (slug) DO NOTHING"),
        )
        .bind(slug.as_str())
        .execute(&mut *conn)
        .await
        .map_err(ProviderError::sql("record the seed"))?;
        Ok(())
    }

    /// Refuses a database slice that exists and is not this state's.
    async fn check_database(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<(), ProviderError> {
        let name = self.naming.database(&ctx.tenant.slug);
        let mut conn = connection(self.pool().await?).await?;
        match comment(&mut conn, Marked::Database, &name).await? {
            Some(comment) => check_ours(
                ctx,
                change,
                &format!("the database {name}"),
                &Owner::from_text(comment.as_deref()),
            ),
            None => Ok(()),
        }
    }

    /// The slice the tenant has, where the state recorded it (its file may ask for another
    /// mode by now), by the name the config derives, which must be the recorded one.
    fn recorded_slice(&self, ctx: &StepContext<'_>) -> Result<Option<Slice>, ProviderError> {
        let Some(attrs) = ctx.recorded.get(&Key::new(Kind::DATABASE)) else {
            return Ok(None);
        };
        let isolation = match attrs.str("isolation") {
            "shared" => Isolation::Shared,
            "database" => Isolation::Database,
            _ => Isolation::Schema,
        };
        let slice = self.slice(&ctx.tenant.slug, isolation);
        if slice.name != attrs.str("name") {
            return Err(ProviderError::Refused(format!(
                "the slice is recorded as {:?}, and the postgres block now names it {:?}; nothing was purged\n  hint: restore the prefixes it was made with",
                attrs.str("name"),
                slice.name
            )));
        }
        Ok(Some(slice))
    }

    /// Destroys the tenant's slice: its schema, or its database (`WITH (FORCE)`, ending the
    /// sessions still in it, outside any transaction as DROP DATABASE must be), or its rows
    /// of the shared tables, deleted in batches, each its own transaction, so no one
    /// transaction holds the locks of a large tenant's every row. Then the catalog forgets it.
    async fn purge_slice(&self, ctx: &StepContext<'_>) -> Result<(), ProviderError> {
        let Some(slice) = self.recorded_slice(ctx)? else {
            return Ok(());
        };
        let slug = &ctx.tenant.slug;
        let pool = self.pool().await?;
        let change = crate::targets::provider::purge_change(&Key::new(Kind::DATABASE));
        let mut conn = connection(pool).await?;
        match slice.isolation {
            Isolation::Schema => {
                if let Some(mark) = comment(&mut conn, Marked::Schema, &slice.name).await? {
                    let what = format!("the schema {}", slice.name);
                    check_ours(ctx, &change, &what, &Owner::from_text(mark.as_deref()))?;
                    drop_tables_in_batches(&mut conn, &slice.name).await?;
                    // The drop and the catalog's forgetting, in one statement list: one
                    // round trip, one transaction.
                    let statements = format!(
                        "DROP SCHEMA IF EXISTS {} CASCADE; {}",
                        quote(&slice.name),
                        self.forget_sql(&[(&slice, slug)])
                    );
                    return conn.execute(statements.as_str()).await.map(|_| ()).map_err(
                        ProviderError::sql(format!("drop the schema {}", slice.name)),
                    );
                }
            }
            Isolation::Database => {
                if let Some(mark) = comment(&mut conn, Marked::Database, &slice.name).await? {
                    let what = format!("the database {}", slice.name);
                    check_ours(ctx, &change, &what, &Owner::from_text(mark.as_deref()))?;
                    conn.execute(
                        format!(
                            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                            quote(&slice.name)
                        )
                        .as_str(),
                    )
                    .await
                    .map_err(ProviderError::sql(format!(
                        "drop the database {}",
                        slice.name
                    )))?;
                }
            }
            Isolation::Shared => {
                delete_shared_rows(&mut conn, &slice.schema, ctx.tenant_id()?).await?;
            }
        }
        conn.execute(self.forget_sql(&[(&slice, slug)]).as_str())
            .await
            .map(|_| ())
            .map_err(ProviderError::sql("forget the slice"))
    }

    /// The statement by which the catalog forgets purged slices: their migrations (a shared
    /// slice's are every shared tenant's, and stay), their seeds and themselves. Their names
    /// are checked identifiers and slugs, so they are written as literals, which lets it run
    /// in one statement list with the drops.
    fn forget_sql(&self, slices: &[(&Slice, &Slug)]) -> String {
        let owned: Vec<String> = slices
            .iter()
            .filter(|(slice, _)| slice.isolation != Isolation::Shared)
            .map(|(slice, _)| {
                format!(
                    "({}, {})",
                    literal(slice.isolation.as_str()),
                    literal(&slice.name)
                )
            })
            .collect();
        let migrations = if owned.is_empty() {
            String::new()
        } else {
            format!(
                "m AS (DELETE FROM {{schema}}.slice_migrations WHERE (isolation, slice) IN ({})), ",
                owned.join(", ")
            )
        };
        let slugs = literals(slices.iter().map(|(_, slug)| slug.as_str()));
        self.sql(&format!(
            "WITH {migrations}s AS (DELETE FROM {{schema}}.seeds WHERE slug IN ({slugs}))
             DELETE FROM {{schema}}.slices WHERE slug IN ({slugs})"
        ))
    }

    /// Drops the tenant's login role, after ending its sessions and dropping what it was
    /// granted here (its slice, dropped first, held the rest).
    async fn purge_role(&self, ctx: &StepContext<'_>) -> Result<(), ProviderError> {
        self.drop_with_role(ctx, None).await
    }

    /// The tenant's schema and its role dropped in one transaction, one commit, where the
    /// slice is a schema (with other tenants' purged at the same moment, when they can go
    /// together); otherwise one after the other.
    async fn purge_slice_and_role(&self, ctx: &StepContext<'_>) -> Result<(), ProviderError> {
        match self.recorded_slice(ctx)? {
            Some(slice) if slice.isolation == Isolation::Schema => {
                let item = TogetherPurge {
                    slug: ctx.tenant.slug.clone(),
                    mark: ctx.mark.clone(),
                    slice,
                };
                let slice = item.slice.clone();
                let together = self
                    .purges
                    .together(item, "purging schemas and roles", |items| async move {
                        self.purge_together(&items).await
                    })
                    .await;
                match together {
                    Together::Done(()) => Ok(()),
                    Together::Alone => self.drop_with_role(ctx, Some(&slice)).await,
                }
            }
            _ => {
                self.purge_slice(ctx).await?;
                self.purge_role(ctx).await
            }
        }
    }

    /// Drops the schemas and roles of tenants whose purges came at the same moment in one
    /// transaction: while one batch is written the next gathers, so a mass purge costs the
    /// server one plan of each statement and one commit per batch, not per tenant. Only
    /// what needs nothing more goes: a tenant whose schema or role is not marked as its
    /// own, or whose schema has many tables, or whose role holds something in another
    /// database is answered [`Together::Alone`], and so is every tenant of a batch that
    /// failed (rolled back, it changed nothing): each then goes through
    /// [`Self::drop_with_role`], which says why.
    async fn purge_together(
        &self,
        items: &[TogetherPurge],
    ) -> Result<Vec<Together<()>>, ProviderError> {
        let mut tx = self
            .pool()
            .await?
            .begin()
            .await
            .map_err(ProviderError::sql("begin"))?;
        let roles: Vec<String> = items.iter().map(|i| self.naming.role(&i.slug)).collect();
        let slices: Vec<_> = items
            .iter()
            .zip(&roles)
            .map(|(item, role)| (Some(item.slice.name.as_str()), role.as_str()))
            .collect();
        let found = look_before_purge(tx.as_mut(), &slices).await?;
        let mut purging = Vec::new();
        let answers = items
            .iter()
            .zip(&roles)
            .zip(&found)
            .map(|((item, role), found)| {
                // Anything more than the drops, or a refusal, is the purge of one tenant's.
                let ours = |mark: &Option<Option<String>>| {
                    mark.as_ref().is_none_or(|text| {
                        Owner::from_text(text.as_deref()).lets_change(&item.mark)
                    })
                };
                if ours(&found.schema)
                    && ours(&found.role)
                    && found.relations <= TOGETHER_RELATIONS
                    && found.elsewhere.is_empty()
                {
                    purging.push(Purging {
                        slice: Some(&item.slice),
                        slug: &item.slug,
                        role,
                        found,
                    });
                    Together::Done(())
                } else {
                    Together::Alone
                }
            })
            .collect();
        if !purging.is_empty() {
            tx.as_mut()
                .execute(self.purge_statements(&purging).as_str())
                .await
                .map_err(ProviderError::sql("drop the schemas and roles"))?;
        }
        tx.commit().await.map_err(ProviderError::sql("commit"))?;
        Ok(answers)
    }

    /// Drops the tenant's role, and with it `schema` (a schema-mode slice) when given, in
    /// one transaction of four round trips: its start, one look at everything under the
    /// role's lock (the marks, the schema's relation count, what the role holds in other
    /// databases), the drops as one batch of statements, and the commit. A schema of many
    /// tables is emptied first in batches, as [`Self::purge_slice`] does. A kill before the
    /// commit leaves everything for the rerun.
    async fn drop_with_role(
        &self,
        ctx: &StepContext<'_>,
        schema: Option<&Slice>,
    ) -> Result<(), ProviderError> {
        let role = self.naming.role(&ctx.tenant.slug);
        let schema_name = schema.map(|s| s.name.as_str());
        let mut conn = connection(self.pool().await?).await?;
        let mut tx = conn.begin().await.map_err(ProviderError::sql("begin"))?;
        let mut found = look_before_one(tx.as_mut(), schema_name, &role).await?;
        if let (Some(mark), Some(name)) = (&found.schema, schema_name) {
            let change = crate::targets::provider::purge_change(&Key::new(Kind::DATABASE));
            let what = format!("the schema {name}");
            check_ours(ctx, &change, &what, &Owner::from_text(mark.as_deref()))?;
        }
        if let Some(mark) = &found.role {
            let change = crate::targets::provider::purge_change(&Key::new(Kind::ROLE));
            let what = format!("the role {role}");
            check_ours(ctx, &change, &what, &Owner::from_text(mark.as_deref()))?;
        }
        if let (true, Some(name)) = (found.relations > 100, schema_name) {
            // Let go of the role's lock while the tables go, batch by batch.
            tx.rollback()
                .await
                .map_err(ProviderError::sql("rollback"))?;
            drop_tables_in_batches(&mut conn, name).await?;
            tx = conn.begin().await.map_err(ProviderError::sql("begin"))?;
            found = look_before_one(tx.as_mut(), schema_name, &role).await?;
        }
        // What the role owns or was granted in other databases (a large object it made in
        // `postgres`, which it could connect to) would keep DROP ROLE from working: the
        // server says where, and each is dropped there first.
        for db in &found.elsewhere {
            reach::drop_owned_in(&self.server, Some(db), &role).await?;
        }
        let batch = self.purge_statements(&[Purging {
            slice: schema,
            slug: &ctx.tenant.slug,
            role: &role,
            found: &found,
        }]);
        let what = match schema_name {
            Some(name) => format!("drop the schema {name} and the role {role}"),
            None => format!("drop the role {role}"),
        };
        tx.as_mut()
            .execute(batch.as_str())
            .await
            .map_err(ProviderError::sql(what))?;
        tx.commit().await.map_err(ProviderError::sql("commit"))
    }

    /// The statements that drop the tenants' schemas (where given) and roles, as the look
    /// before found them, and make the catalog forget them: a statement of each kind for all
    /// of them, written with literals (checked identifiers and slugs), so the whole list is
    /// one round trip and is planned once however many tenants it drops.
    fn purge_statements(&self, purging: &[Purging<'_>]) -> String {
        let mut batch = String::new();
        let schemas: Vec<&Slice> = purging
            .iter()
            .filter(|p| p.found.schema.is_some())
            .filter_map(|p| p.slice)
            .collect();
        if !schemas.is_empty() {
            let names: Vec<String> = schemas.iter().map(|s| quote(&s.name)).collect();
            batch += &format!("DROP SCHEMA IF EXISTS {} CASCADE; ", names.join(", "));
        }
        let roles: Vec<String> = purging
            .iter()
            .filter(|p| p.found.role.is_some())
            .map(|p| quote(p.role))
            .collect();
        if !roles.is_empty() {
            let oids: Vec<String> = roles
                .iter()
                .map(|quoted| format!("{}::regrole", literal(quoted)))
                .collect();
            batch += &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_get_activity(NULL) WHERE usesysid IN ({}); DROP OWNED BY {roles}; DROP ROLE {roles}; ",
                oids.join(", "),
                roles = roles.join(", ")
            );
        }
        let slices: Vec<(&Slice, &Slug)> = purging
            .iter()
            .filter_map(|p| Some((p.slice?, p.slug)))
            .collect();
        if !slices.is_empty() {
            batch += &self.forget_sql(&slices);
            batch += "; ";
        }
        batch += &self.sql(&format!(
            "DELETE FROM {{schema}}.roles WHERE name IN ({})",
            literals(purging.iter().map(|p| p.role))
        ));
        batch
    }

    /// Counts what the slices of tenants about to be purged hold and records it in `live`;
    /// returns the queries sent. Schemas are counted together: their tables in one catalog
    /// query, their rows in one more, however many tenants; a database or a shared
    /// tenant's rows need a connection or a transaction each. A count that fails (a table
    /// whose name cannot be quoted) says so on its line instead of failing every plan.
    async fn count_holdings(
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
    async fn holdings(
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

    async fn apply_once(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        let desired = desired_of(change)?;
        match change.key.kind {
            Kind::ROLE => self.apply_role(ctx, change, &desired.attrs).await.map(Some),
            Kind::DATABASE => self
                .apply_database(ctx, change, &desired.attrs)
                .await
                .map(Some),
            Kind::SEED => {
                self.apply_seed(ctx, seed_rows_of(desired)?).await?;
                Ok(Some(desired.attrs.clone()))
            }
            other => Err(unmanaged(self, other)),
        }
    }
}

/// Writes every table of `schema` as CSV with a header, each with `COPY … TO STDOUT`
/// streamed to its file, in one read-only snapshot so the row counts match the files. With
/// `tenant`, only that tenant's rows of the shared tables.
async fn export_tables(
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
async fn tables_of(conn: &mut PgConnection, schema: &str) -> Result<Vec<String>, ProviderError> {
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

/// How many tables `schema` has and the rows in them (with `tenant`, only that tenant's
/// rows of the shared tables), in one query.
async fn count_rows(
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
    let counts: Vec<String> = tables
        .iter()
        .map(|t| {
            format!(
                "(SELECT count(*) FROM {}.{}{filter})",
                quote(schema),
                quote(t)
            )
        })
        .collect();
    let (rows,): (i64,) = sqlx::query_as(&format!("SELECT ({})::bigint", counts.join(" + ")))
        .fetch_one(tx.as_mut())
        .await
        .map_err(ProviderError::sql(format!("count the rows of {schema}")))?;
    tx.commit().await.map_err(ProviderError::sql("commit"))?;
    Ok((tables.len(), rows as u64))
}

/// Drops a schema's tables a hundred at a time, each batch its own transaction: one DROP
/// SCHEMA … CASCADE of thousands of tables takes a lock on each, and can run out of them.
/// What a schema-and-role purge finds, read under the role's lock: each mark (`None` when
/// the object is gone; `Some(None)` when it has no comment), how many relations the schema
/// holds (tables, sequences, views: counted in `pg_depend` by index, as
/// [`crate::clients::postgres::RELATIONS_OF_SCHEMA`] finds them; scanning `pg_class` was two thirds of a
/// 1,000-tenant purge's server time), and the other databases where the role holds something.
struct BeforePurge {
    schema: Option<Option<String>>,
    relations: i64,
    role: Option<Option<String>>,
    elsewhere: Vec<String>,
}

/// Takes the locks of the roles (as every change of a role does, in one order, so two
/// runs taking several never wait on each other in a circle) and reads [`BeforePurge`] of
/// each `(schema, role)`, in one statement: the locks are in the FROM clause, so they are
/// held before anything is read.
async fn look_before_purge(
    tx: &mut PgConnection,
    slices: &[(Option<&str>, &str)],
) -> Result<Vec<BeforePurge>, ProviderError> {
    // A mark as an array of the one comment: no row (gone) is told from no comment.
    type Mark = Option<Vec<Option<String>>>;
    let schemas: Vec<Option<&str>> = slices.iter().map(|(schema, _)| *schema).collect();
    let roles: Vec<&str> = slices.iter().map(|(_, role)| *role).collect();
    let locks: Vec<String> = roles
        .iter()
        .map(|role| format!("tenant-reconcile/role/{role}"))
        .collect();
    let rows: Vec<(i64, Mark, i64, Mark, Vec<String>)> = sqlx::query_as(
        // Names resolved by `to_reg*`, comments read from their catalogs (`obj_description`
        // is a SQL function, planned at each call): the server plans every statement of a
        // purge anew (each DROP invalidates its plan cache), so plans must be cheap.
        "SELECT u.i,
           CASE WHEN to_regnamespace(quote_ident(u.s)) IS NOT NULL
             THEN ARRAY[(SELECT description FROM pg_description
               WHERE objoid = to_regnamespace(quote_ident(u.s))
                 AND classoid = 'pg_namespace'::regclass AND objsubid = 0)] END,
           (SELECT count(*) FROM pg_depend
             WHERE refclassid = 'pg_namespace'::regclass AND refobjid = to_regnamespace(quote_ident(u.s))
               AND classid = 'pg_class'::regclass AND objsubid = 0 AND deptype = 'n'),
           CASE WHEN to_regrole(quote_ident(u.r)) IS NOT NULL
             THEN ARRAY[(SELECT description FROM pg_shdescription
               WHERE objoid = to_regrole(quote_ident(u.r)) AND classoid = 'pg_authid'::regclass)] END,
           ARRAY(SELECT DISTINCT db.datname::text FROM pg_shdepend d JOIN pg_database db ON db.oid = d.dbid
             WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = to_regrole(quote_ident(u.r))
               AND d.deptype IN ('o', 'a') AND db.datname <> current_database() AND db.datallowconn
             ORDER BY 1)
         FROM (SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0)))
               FROM (SELECT k FROM unnest($3::text[]) AS k ORDER BY k) AS sorted) AS locked,
           unnest($1::text[], $2::text[]) WITH ORDINALITY AS u (s, r, i)
         ORDER BY u.i",
    )
    .bind(&schemas)
    .bind(&roles)
    .bind(&locks)
    .fetch_all(&mut *tx)
    .await
    .map_err(ProviderError::sql(match roles.as_slice() {
        [role] => format!("look for the role {role} and its schema"),
        _ => format!("look for {} roles and their schemas", roles.len()),
    }))?;
    let mark = |m: Mark| m.map(|v| v.into_iter().next().flatten());
    Ok(rows
        .into_iter()
        .map(|(_, schema, relations, role, elsewhere)| BeforePurge {
            schema: mark(schema),
            relations,
            role: mark(role),
            elsewhere,
        })
        .collect())
}

/// `'a', 'b'`: texts as a list of SQL literals.
fn literals<'a>(texts: impl Iterator<Item = &'a str>) -> String {
    texts.map(literal).collect::<Vec<_>>().join(", ")
}

/// [`look_before_purge`] of one tenant.
async fn look_before_one(
    tx: &mut PgConnection,
    schema: Option<&str>,
    role: &str,
) -> Result<BeforePurge, ProviderError> {
    let mut found = look_before_purge(tx, &[(schema, role)]).await?;
    Ok(found.pop().expect("one row per slice"))
}

async fn drop_tables_in_batches(
    conn: &mut PgConnection,
    schema: &str,
) -> Result<(), ProviderError> {
    loop {
        let tables = tables_of(conn, schema).await?;
        if tables.len() <= 100 {
            return Ok(());
        }
        let batch: Vec<String> = tables
            .iter()
            .take(100)
            .map(|t| format!("{}.{}", quote(schema), quote(t)))
            .collect();
        conn.execute(format!("DROP TABLE IF EXISTS {} CASCADE", batch.join(", ")).as_str())
            .await
            .map_err(ProviderError::sql(format!("drop tables of {schema}")))?;
    }
}

/// How many of a tenant's shared rows one transaction deletes.
const SHARED_BATCH: i64 = 5_000;

/// Deletes a tenant's rows from every shared table, a batch per transaction. A table whose
/// rows other tables' rows still point at is tried again after those.
async fn delete_shared_rows(
    conn: &mut PgConnection,
    schema: &str,
    tenant_id: &str,
) -> Result<(), ProviderError> {
    let mut pending = tables_of(conn, schema).await?;
    for _round in 0..pending.len().max(1) {
        let mut blocked = Vec::new();
        for table in pending {
            let t = format!("{}.{}", quote(schema), quote(&table));
            let delete = format!(
                "DELETE FROM {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE tenant_id = current_setting('app.tenant_id') LIMIT {SHARED_BATCH}))"
            );
            loop {
                let mut tx = conn.begin().await.map_err(ProviderError::sql("begin"))?;
                sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
                    .bind(tenant_id)
                    .execute(tx.as_mut())
                    .await
                    .map_err(ProviderError::sql("set the tenant"))?;
                match tx.as_mut().execute(delete.as_str()).await {
                    Ok(done) => {
                        tx.commit().await.map_err(ProviderError::sql("commit"))?;
                        if done.rows_affected() < SHARED_BATCH as u64 {
                            break;
                        }
                    }
                    // Rows of another table still refer to these: after that table.
                    Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23503") => {
                        blocked.push(table.clone());
                        break;
                    }
                    Err(source) => {
                        return Err(ProviderError::Sql {
                            context: format!("delete the tenant's rows of {table}"),
                            source,
                        })
                    }
                }
            }
        }
        if blocked.is_empty() {
            return Ok(());
        }
        pending = blocked;
    }
    Err(ProviderError::Refused(format!(
        "the tenant's rows of the shared schema {schema} could not all be deleted: references among its tables go round in a circle"
    )))
}

/// Inserts seed rows into the slice's tables. Table and column names were checked to be
/// plain identifiers when the seed was compiled, and are quoted; each row travels as one
/// bound JSON value that PostgreSQL converts to the columns' types.
async fn insert_rows(
    tx: &mut PgConnection,
    schema: &str,
    tenant_id: &str,
    rows: &[(String, Vec<Map<String, Value>>)],
    slug: &Slug,
    shared: bool,
) -> Result<(), ProviderError> {
    tx.execute(format!("SET LOCAL search_path = {}", quote(schema)).as_str())
        .await
        .map_err(ProviderError::sql("set the search path"))?;
    // Shared tables fill tenant_id from this setting when the admin inserts.
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant_id)
        .execute(&mut *tx)
        .await
        .map_err(ProviderError::sql("set the tenant"))?;
    for (table, list) in rows {
        for row in list {
            let mut row = row.clone();
            if shared {
                // A seed row of a shared table is the tenant's own, whatever its template
                // rendered into `tenant_id` (a tenant's name is not JSON-encoded everywhere):
                // the admin is not filtered by the policy's WITH CHECK when it is a superuser.
                row.insert("tenant_id".into(), Value::String(tenant_id.to_string()));
            }
            let cols: Vec<String> = row.keys().map(|c| quote(c)).collect();
            let cols = cols.join(", ");
            let t = quote(table);
            sqlx::query(&format!(
                "INSERT INTO {t} ({cols}) SELECT {cols} FROM jsonb_populate_record(NULL::{t}, $1)"
            ))
            .bind(Value::Object(row))
            .execute(&mut *tx)
            .await
            .map_err(ProviderError::sql(format!("seed table {table} of {slug}")))?;
        }
    }
    Ok(())
}

/// Refuses `what` (a migration, or the grants) when the shared schema holds a view,
/// materialized view or function that would read the shared tables with its owner's rights.
async fn refuse_unsafe(
    tx: &mut PgConnection,
    schema: &str,
    what: &str,
) -> Result<(), ProviderError> {
    let found = reach::unsafe_in_shared(tx, schema).await?;
    if found.is_empty() {
        return Ok(());
    }
    Err(ProviderError::Refused(format!(
        "{what} is refused: {}; a tenant's role would read other tenants' rows through it (row-level security filters only the roles it applies to, and neither a superuser nor a table's owner without FORCE is one)",
        found.join("; ")
    )))
}

/// The tenant policy's expression as the server prints it back, with the function's
/// schema spelled out or (when the reader's search path holds the schema) left out.
fn policy_texts(shared_schema: &str) -> Vec<String> {
    vec![
        format!("(tenant_id = {shared_schema}.current_tenant_id())"),
        "(tenant_id = current_tenant_id())".to_string(),
    ]
}

async fn schema_exists(conn: &mut PgConnection, name: &str) -> Result<bool, ProviderError> {
    let (exists,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(name)
            .fetch_one(conn)
            .await
            .map_err(ProviderError::sql("look for the schema"))?;
    Ok(exists)
}

/// The objects a mark of ownership is a comment on.
#[derive(Clone, Copy)]
enum Marked {
    Role,
    Schema,
    Database,
}

/// An object's comment: `None` when there is no such object, `Some(None)` when it has none.
async fn comment(
    conn: &mut PgConnection,
    object: Marked,
    name: &str,
) -> Result<Option<Option<String>>, ProviderError> {
    let (sql, context) = match object {
        Marked::Role => (
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
            "look for the role",
        ),
        Marked::Schema => (
            "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = $1",
            "look for the schema",
        ),
        Marked::Database => (
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            "look for the database",
        ),
    };
    sqlx::query_as::<_, (Option<String>,)>(sql)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .map(|row| row.map(|(c,)| c))
        .map_err(ProviderError::sql(context))
}

async fn role_exists(conn: &mut PgConnection, name: &str) -> Result<bool, ProviderError> {
    let (exists,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(name)
            .fetch_one(&mut *conn)
            .await
            .map_err(ProviderError::sql("look for the role"))?;
    Ok(exists)
}

#[async_trait]
impl Provider for PgData {
    fn name(&self) -> &'static str {
        "postgres data"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::ROLE, Kind::DATABASE, Kind::SEED]
    }

    fn forces_replace(&self, kind: Kind, field: &str) -> bool {
        // Moving a tenant to another isolation mode builds a new slice; the old one, with
        // its data, is kept.
        kind == Kind::DATABASE && field == "isolation"
    }

    fn marks_after_create(&self, kind: Kind) -> bool {
        // A database slice is commented on after CREATE DATABASE, which no transaction
        // holds; roles and schemas are marked in the transaction that creates them.
        kind == Kind::DATABASE
    }

    async fn refresh(
        &self,
        targets: &[RefreshTarget],
        live: &mut LiveFleet,
    ) -> Result<(), ProviderError> {
        let pool = self.server.pool().await?;
        let roles: Vec<String> = targets.iter().map(|t| self.naming.role(&t.slug)).collect();
        let slugs: Vec<&str> = targets.iter().map(|t| t.slug.as_str()).collect();
        let (catalog, superuser): (bool, bool) = sqlx::query_as(
            "SELECT to_regclass($1) IS NOT NULL, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
        )
        .bind(format!("{}.slice_migrations", self.schema))
        .fetch_one(pool)
        .await
        .map_err(ProviderError::sql("look for the data catalog"))?;
        let mut queries = 1;

        // Only a superuser may read stored password verifiers; others trust the catalog.
        let verifier = if superuser {
            "(SELECT encode(sha256(convert_to(a.rolpassword, 'UTF8')), 'hex') FROM pg_authid a WHERE a.oid = r.oid)"
        } else {
            "NULL::text"
        };
        let catalog_roles = if catalog {
            "{schema}.roles"
        } else {
            "(SELECT NULL::text AS name, NULL::int AS credentials_version, NULL::text AS password_fingerprint, NULL::text AS verifier_digest WHERE false)"
        };
        type RoleRow = (
            String,
            bool,
            Option<i32>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let sql_4 = self.sql(&format!(
            "SELECT r.rolname, r.rolcanlogin, c.credentials_version, c.password_fingerprint, c.verifier_digest, {verifier},
                    mark.description
             FROM pg_roles r LEFT JOIN {catalog_roles} c ON c.name = r.rolname
             LEFT JOIN pg_shdescription mark ON mark.objoid = r.oid AND mark.classoid = 'pg_authid'::regclass
             WHERE r.rolname = ANY($1)"
        ));
        let rows: Vec<RoleRow> = sqlx::query_as(&sql_4)
            .bind(&roles)
            .fetch_all(pool)
            .await
            .map_err(ProviderError::sql("read the tenant roles"))?;
        queries += 1;
        let mut by_role: HashMap<String, (Attrs, Owner)> = HashMap::new();
        for (name, login, version, fingerprint, digest, stored, comment) in rows {
            let mut attrs = crate::model::attrs::attrs([
                ("name", json!(name)),
                ("login", json!(login)),
                ("credentials_version", json!(version.unwrap_or(0))),
            ]);
            match (fingerprint, digest, stored) {
                (Some(f), Some(d), Some(s)) if d != s => {
                    let _ = f;
                    attrs.insert(
                        "password_fingerprint",
                        json!("(changed outside tenant-reconcile)"),
                    );
                }
                (Some(f), _, _) => {
                    attrs.insert("password_fingerprint", json!(f));
                }
                _ => {}
            }
            by_role.insert(name, (attrs, Owner::from_text(comment.as_deref())));
        }

        let mut slices: HashMap<String, SliceFound> = HashMap::new();
        let mut applied: HashMap<(String, String), HashSet<String>> = HashMap::new();
        let mut seeded: HashSet<String> = HashSet::new();
        {
            // The slice each tenant's file asks for, looked for by name when the catalog
            // has none: a schema or database made before this state (by hand, or by another
            // state) is found, and shown as not this state's. A shared tenant's slice is
            // its rows, which exist only once the catalog records them.
            let wanted: Vec<(&Slug, String, &str)> = targets
                .iter()
                .filter(|t| t.isolation != Isolation::Shared)
                .map(|t| {
                    (
                        &t.slug,
                        self.naming.slice(&t.slug, t.isolation),
                        t.isolation.as_str(),
                    )
                })
                .collect();
            let catalog_slices = if catalog {
                "{schema}.slices"
            } else {
                "(SELECT NULL::text AS slug, NULL::text AS name, NULL::text AS isolation, NULL::text AS role WHERE false)"
            };
            type SliceRow = (String, String, String, bool, Option<bool>, Option<String>);
            let sql_5 = self.sql(&format!(
                // Set-based, so it stays one pass over the catalogs however many slices
                // there are: whether each slice exists, whether its role can reach it, and
                // whose mark it carries.
                "WITH c AS (
                   SELECT slug, name, isolation, role FROM {catalog_slices} cs WHERE slug = ANY($1)
                 ), s AS (
                   SELECT slug, name, isolation, role FROM c
                   UNION ALL
                   SELECT w.slug, w.name, w.isolation, w.role
                   FROM unnest($5::text[], $6::text[], $7::text[], $8::text[]) AS w(slug, name, isolation, role)
                   WHERE NOT EXISTS (SELECT 1 FROM c WHERE c.slug = w.slug)
                 ), ns AS (
                   SELECT s.slug, n.oid AS nsp, r.oid AS rol
                   FROM s JOIN pg_namespace n ON n.nspname = s.name LEFT JOIN pg_roles r ON r.rolname = s.role
                   WHERE s.isolation <> 'database'
                 ), tables AS (
                   SELECT ns.slug, bool_and(CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(ns.rol, c.oid, 'USAGE') ELSE
                       has_table_privilege(ns.rol, c.oid, 'SELECT') AND has_table_privilege(ns.rol, c.oid, 'INSERT')
                       AND has_table_privilege(ns.rol, c.oid, 'UPDATE') AND has_table_privilege(ns.rol, c.oid, 'DELETE') END) AS ok
                   FROM ns JOIN s ON s.slug = ns.slug AND s.isolation = 'schema'
                   JOIN pg_class c ON c.relnamespace = ns.nsp AND c.relkind IN ('r', 'p', 'S')
                   WHERE ns.rol IS NOT NULL
                   GROUP BY ns.slug
                 ), shared_ok AS (
                   -- Once for every shared tenant: the group's rights on the shared schema,
                   -- its tables and sequences, and each table's row-level security.
                   SELECT has_schema_privilege(g.oid, n.oid, 'USAGE') AND coalesce((
                       SELECT bool_and(CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(g.oid, c.oid, 'USAGE')
                         ELSE has_table_privilege(g.oid, c.oid, 'SELECT') AND has_table_privilege(g.oid, c.oid, 'INSERT')
                           AND has_table_privilege(g.oid, c.oid, 'UPDATE') AND has_table_privilege(g.oid, c.oid, 'DELETE')
                           AND c.relrowsecurity AND c.relforcerowsecurity
                           AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'tenant_isolation'
                             AND p.polcmd = '*' AND p.polpermissive AND p.polroles = '{{0}}'
                             AND pg_get_expr(p.polqual, p.polrelid) = ANY($3)
                             AND pg_get_expr(p.polwithcheck, p.polrelid) = ANY($3)) END)
                       FROM pg_class c WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'S')), true) AS ok
                   FROM pg_namespace n, pg_roles g WHERE n.nspname = $4 AND g.rolname = $2
                 ), dbs AS (
                   SELECT s.slug, d.oid AS dat, r.oid AS rol
                   FROM s JOIN pg_database d ON d.datname = s.name LEFT JOIN pg_roles r ON r.rolname = s.role
                   WHERE s.isolation = 'database'
                 )
                 SELECT s.slug, s.name, s.isolation,
                   (ns.slug IS NOT NULL OR dbs.slug IS NOT NULL),
                   CASE s.isolation
                     WHEN 'schema' THEN ns.rol IS NOT NULL AND has_schema_privilege(ns.rol, ns.nsp, 'USAGE') AND coalesce(tables.ok, true)
                     WHEN 'shared' THEN ns.rol IS NOT NULL AND pg_has_role(ns.rol, (SELECT oid FROM pg_roles WHERE rolname = $2), 'MEMBER')
                       AND coalesce((SELECT ok FROM shared_ok), false)
                     ELSE dbs.rol IS NOT NULL AND has_database_privilege(dbs.rol, dbs.dat, 'CONNECT') END,
                   CASE s.isolation WHEN 'database' THEN db_mark.description WHEN 'schema' THEN ns_mark.description END
                 FROM s LEFT JOIN ns USING (slug) LEFT JOIN tables USING (slug) LEFT JOIN dbs USING (slug)
                 -- Joined rather than looked up row by row (obj_description): one pass each.
                 LEFT JOIN pg_description ns_mark
                   ON ns_mark.objoid = ns.nsp AND ns_mark.classoid = 'pg_namespace'::regclass AND ns_mark.objsubid = 0
                 LEFT JOIN pg_shdescription db_mark
                   ON db_mark.objoid = dbs.dat AND db_mark.classoid = 'pg_database'::regclass",
            ));
            let rows: Vec<SliceRow> = sqlx::query_as(&sql_5)
                .bind(&slugs)
                .bind(self.naming.shared_group())
                .bind(policy_texts(&self.naming.shared_schema))
                .bind(&self.naming.shared_schema)
                .bind(wanted.iter().map(|w| w.0.as_str()).collect::<Vec<_>>())
                .bind(wanted.iter().map(|w| w.1.as_str()).collect::<Vec<_>>())
                .bind(wanted.iter().map(|w| w.2).collect::<Vec<_>>())
                .bind(
                    wanted
                        .iter()
                        .map(|w| self.naming.role(w.0))
                        .collect::<Vec<_>>(),
                )
                .fetch_all(pool)
                .await
                .map_err(ProviderError::sql("read the tenant slices"))?;
            queries += 1;
            for (slug, name, isolation, present, granted, comment) in rows {
                let owner = if isolation == Isolation::Shared.as_str() {
                    Owner::Untracked
                } else {
                    Owner::from_text(comment.as_deref())
                };
                slices.insert(
                    slug,
                    SliceFound {
                        name,
                        isolation,
                        present,
                        granted: granted.unwrap_or(false),
                        owner,
                    },
                );
            }
        }
        if catalog {
            let sql_6 = self.sql(
                "SELECT isolation, slice, array_agg(version) FROM {schema}.slice_migrations GROUP BY isolation, slice",
            );
            let rows: Vec<(String, String, Vec<String>)> = sqlx::query_as(&sql_6)
                .fetch_all(pool)
                .await
                .map_err(ProviderError::sql("read the applied migrations"))?;
            for (isolation, slice, versions) in rows {
                applied.insert((isolation, slice), versions.into_iter().collect());
            }
            let sql_7 = self.sql("SELECT slug FROM {schema}.seeds WHERE slug = ANY($1)");
            let rows: Vec<(String,)> = sqlx::query_as(&sql_7)
                .bind(&slugs)
                .fetch_all(pool)
                .await
                .map_err(ProviderError::sql("read the seeds"))?;
            seeded.extend(rows.into_iter().map(|(s,)| s));
            queries += 2;
        }

        // What each role (and the shared group) reaches beyond its slice: one query for
        // the fleet. A tenant without a slice yet is looked at where its file puts it.
        let group = self.naming.shared_group();
        let beyond = {
            let confined: Vec<(String, &str, String)> = targets
                .iter()
                .zip(&roles)
                .map(|(t, role)| match slices.get(t.slug.as_str()) {
                    Some(f) => (role.clone(), f.isolation.as_str(), f.name.clone()),
                    None => (
                        role.clone(),
                        t.isolation.as_str(),
                        self.naming.slice(&t.slug, t.isolation),
                    ),
                })
                .collect();
            reach::beyond(pool, &confined, &group, &self.naming.shared_schema).await?
        };
        queries += 1;
        if superuser && targets.iter().any(|t| t.isolation == Isolation::Shared) {
            tracing::warn!(
                "the admin connection is a superuser, which row-level security never filters: the shared tenants' isolation rests on FORCE ROW LEVEL SECURITY on every shared table and on views WITH (security_invoker = true), which refresh checks (anything that reads the shared tables with its owner's rights is refused)"
            );
        }

        // The slices of tenants about to be purged, whose tables and rows the plan shows.
        let mut to_count: Vec<(&RefreshTarget, String, String)> = Vec::new();
        for (t, role) in targets.iter().zip(&roles) {
            if let Some((attrs, owner)) = by_role.remove(role) {
                live.insert_owned(&t.slug, Kind::ROLE, attrs, owner);
            }
            let Some(SliceFound {
                name,
                isolation,
                present,
                granted,
                owner,
            }) = slices.remove(t.slug.as_str())
            else {
                continue;
            };
            if !present {
                continue; // Dropped behind our back: the slice and its seed are gone.
            }
            let versions = applied.get(&(isolation.clone(), name.clone()));
            // Applied means: the repo's migrations in order, up to the first one missing.
            let count = self
                .migrations
                .iter()
                .take_while(|m| versions.is_some_and(|v| v.contains(&m.version)))
                .count();
            let mut attrs = crate::targets::data::database_attrs(
                &name,
                &isolation,
                schema_version(&self.migrations, count),
                granted,
            );
            let mut found = beyond.get(role).cloned().unwrap_or_default();
            if isolation == Isolation::Shared.as_str() {
                found.extend(beyond.get(&group).cloned().unwrap_or_default());
            }
            if !found.is_empty() {
                attrs.insert("access", json!(reach::access(&found)));
            }
            live.insert_owned(&t.slug, Kind::DATABASE, attrs, owner);
            if seeded.contains(t.slug.as_str()) {
                live.insert_attrs(&t.slug, Kind::SEED, crate::targets::data::seed_attrs());
            }
            if t.purge {
                to_count.push((t, isolation, name));
            }
        }
        if !to_count.is_empty() {
            queries += self.count_holdings(&to_count, live).await?;
        }
        // The slices a purge destroys as left behind by replaces: counted one by one, as
        // few tenants have any.
        for t in targets.iter().filter(|t| t.purge) {
            for r in t.retired.iter().filter(|r| r.key.kind == Kind::DATABASE) {
                let (isolation, name) = (r.attrs.str("isolation"), r.attrs.str("name"));
                queries += 1;
                let what = match self.holdings(isolation, name, t.tenant_id.as_deref()).await {
                    Ok(what) => what,
                    Err(e) => format!("not counted: {}", crate::causes::chain(&e)),
                };
                live.holds_at(&t.slug, r.address_key(), what);
            }
        }
        live.calls.push((self.name(), queries));
        Ok(())
    }

    async fn apply(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        if change.key.kind == Kind::DATABASE && ctx.tenant.isolation == Isolation::Database {
            // Once, before any attempt: an attempt cut short after CREATE DATABASE leaves an
            // unmarked database that the next attempt must not take for someone else's.
            retry!("data", self.check_database(ctx, change))?;
        }
        retry!("data", self.apply_once(ctx, change))
    }

    crate::targets::provider::capabilities!(Export, Purge, Smoke);
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

#[async_trait]
impl Purge for PgData {
    /// Drops called together go in one transaction (`purges`, a group commit).
    fn remote_per_tenant(&self) -> bool {
        false
    }

    async fn purge_all(&self, ctx: &StepContext<'_>, keys: &[Key]) -> Result<(), ProviderError> {
        match keys {
            [slice, role] if slice.kind == Kind::DATABASE && role.kind == Kind::ROLE => {
                retry!("purge", self.purge_slice_and_role(ctx))
            }
            _ => {
                for key in keys {
                    self.purge(ctx, key).await?;
                }
                Ok(())
            }
        }
    }

    async fn purge(&self, ctx: &StepContext<'_>, key: &Key) -> Result<(), ProviderError> {
        match key.kind {
            Kind::ROLE => retry!("purge", self.purge_role(ctx)),
            Kind::DATABASE => retry!("purge", self.purge_slice(ctx)),
            other => Err(unmanaged(self, other)),
        }
    }
}

#[async_trait]
impl Smoke for PgData {
    async fn smoke(
        &self,
        ctx: &StepContext<'_>,
        sql: &[&crate::model::checks::CheckSpec],
    ) -> Vec<crate::model::health::CheckOutcome> {
        let started = std::time::Instant::now();
        let fail = |why: String| {
            vec![crate::model::health::CheckOutcome::fail(
                "login",
                why,
                started.elapsed(),
            )]
        };
        let slice = match self.recorded_slice(ctx) {
            Ok(Some(s)) => s,
            Ok(None) => return Vec::new(),
            Err(e) => return fail(crate::causes::chain(&e)),
        };
        let (admin, tenant_id) = match (self.pool().await, ctx.tenant_id()) {
            (Ok(p), Ok(id)) => (p, id),
            (Err(e), _) | (_, Err(e)) => return fail(crate::causes::chain(&e)),
        };
        let role = self.naming.role(&ctx.tenant.slug);
        let target = crate::targets::data::postgres::smoke::Target {
            server: &self.server,
            admin,
            admin_schema: &self.schema,
            admin_schema_name: self.server.schema_name(),
            group: (slice.isolation == Isolation::Shared).then(|| self.naming.shared_group()),
            slug: ctx.tenant.slug.as_str(),
            tenant_id,
            password: ctx
                .key
                .password(tenant_id, ctx.incarnation, &role, ctx.credentials_version),
            role,
            isolation: slice.isolation,
            slice: slice.name,
            schema: slice.schema,
            seeded: ctx.recorded.contains_key(&Key::new(Kind::SEED)),
            held: ctx.lifecycle != crate::model::lifecycle::Lifecycle::Active,
        };
        crate::targets::data::postgres::smoke::checks(&target, sql).await
    }
}

//! The tables the target keeps: its catalog in the admin schema (roles, slices, migrations,
//! seeds), the record inside each database slice, and the shared schema with its group role
//! and tenant function.

use sqlx::{Executor as _, PgConnection};

use crate::clients::postgres::server::{literal, quote};
use crate::model::migration::Migration;
use crate::model::tenant::Isolation;
use crate::slug::Slug;
use crate::targets::provider::ProviderError;

use super::{
    mark::{role_exists, schema_exists},
    purge::literals,
    PgData, Slice,
};

impl PgData {
    /// The admin pool, with the catalog made on first use.
    pub(super) async fn pool(&self) -> Result<&sqlx::PgPool, ProviderError> {
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
    pub(super) async fn ensure_shared(&self) -> Result<(), ProviderError> {
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

    /// A slice that is not there (never made, or dropped behind our back) has no
    /// migrations and no seed, whatever the catalog remembers: forget it, so that building
    /// it again migrates and seeds it again. `slug` is its only tenant; `None` means the
    /// shared schema, whose tenants all lost their rows.
    pub(super) async fn forget_slice(
        &self,
        conn: &mut PgConnection,
        isolation: Isolation,
        name: &str,
        slug: Option<&Slug>,
    ) -> Result<(), ProviderError> {
        // One statement, one round trip: a new tenant's schema is forgotten this way before
        // it is made.
        let seeds = match slug {
            Some(_) => "slug = $3",
            None => "slug IN (SELECT slug FROM {schema}.slices WHERE isolation = 'shared')",
        };
        let sql = self.sql(&format!(
            "WITH migrations AS (
               DELETE FROM {{schema}}.slice_migrations WHERE isolation = $1 AND slice = $2)
             DELETE FROM {{schema}}.seeds WHERE {seeds}"
        ));
        let query = sqlx::query(&sql).bind(isolation.as_str()).bind(name);
        match slug {
            Some(slug) => query.bind(slug.as_str()),
            None => query,
        }
        .execute(&mut *conn)
        .await
        .map_err(ProviderError::sql("forget the slice's migrations and seed"))?;
        Ok(())
    }

    /// The migrations `applied` recorded as the slice's, in one statement.
    pub(super) async fn record_migrations(
        &self,
        conn: &mut PgConnection,
        slice: &Slice,
        applied: &[&Migration],
    ) -> Result<(), sqlx::Error> {
        if applied.is_empty() {
            return Ok(());
        }
        let [versions, names, checksums] = crate::model::migration::columns(applied);
        let sql = self.sql(
            "INSERT INTO {schema}.slice_migrations (isolation, slice, version, name, checksum)
             SELECT $1, $2, version, name, checksum
             FROM unnest($3::text[], $4::text[], $5::text[]) AS m(version, name, checksum)
             ON CONFLICT (isolation, slice, version) DO NOTHING",
        );
        sqlx::query(&sql)
            .bind(slice.isolation.as_str())
            .bind(&slice.name)
            .bind(versions)
            .bind(names)
            .bind(checksums)
            .execute(&mut *conn)
            .await
            .map(drop)
    }

    pub(super) async fn record_seed(
        &self,
        conn: &mut PgConnection,
        slug: &Slug,
    ) -> Result<(), ProviderError> {
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

    /// The statement by which the catalog forgets purged slices: their migrations (a shared
    /// slice's are every shared tenant's, and stay), their seeds and themselves. Their names
    /// are checked identifiers and slugs, so they are written as literals, which lets it run
    /// in one statement list with the drops.
    pub(super) fn forget_sql(&self, slices: &[(&Slice, &Slug)]) -> String {
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
}

pub(super) const CATALOG: &str = r#"
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
pub(super) const META: &str = r#"
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
pub(super) const SHARED: &str = r#"
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

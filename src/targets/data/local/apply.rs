//! A tenant's login role and database made as its plan says.

use serde_json::{json, Value};
use sqlx::sqlite::SqliteJournalMode;

use crate::clients::sqlite;
use crate::model::attrs::Attrs;
use crate::model::change::ResourceChange;
use crate::model::resource::Kind;
use crate::slug::Slug;
use crate::targets::provider::{
    desired_of, schema_version, seed_rows_of, unmanaged, wanted_migrations, ProviderError,
    StepContext,
};

use super::LocalData;

impl LocalData {
    pub(super) async fn apply_change(
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

    pub(super) async fn apply_database(
        &self,
        slug: &Slug,
        attrs: &Attrs,
    ) -> Result<Attrs, ProviderError> {
        let path = self.database_path(slug);
        let pool = sqlite::open(&path, true, SqliteJournalMode::Delete).await?;
        let wanted = wanted_migrations(&self.migrations, attrs);
        let result = self.migrate(&pool, slug, wanted).await;
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
}

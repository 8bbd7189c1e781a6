//! A tenant's slice and role destroyed, alone or with the purges that come at the same moment
//! (one transaction for a batch of schema-mode tenants), each object checked to carry this
//! state's mark under the role's lock first.

use async_trait::async_trait;
use sqlx::{Connection, Executor as _, PgConnection};

use crate::clients::group_commit::Together;
use crate::clients::postgres::server::{connection, literal, quote, retry};
use crate::model::resource::{Key, Kind};
use crate::model::tenant::Isolation;
use crate::slug::Slug;
use crate::targets::provider::{check_ours, unmanaged, Owner, ProviderError, Purge, StepContext};

use super::{
    export::tables_of,
    mark::{comment, Marked},
    reach, PgData, Slice, TogetherPurge,
};

impl PgData {
    /// Destroys the tenant's slice: its schema, or its database (`WITH (FORCE)`, ending the
    /// sessions still in it, outside any transaction as DROP DATABASE must be), or its rows
    /// of the shared tables, deleted in batches, each its own transaction, so no one
    /// transaction holds the locks of a large tenant's every row. Then the catalog forgets it.
    pub(super) async fn purge_slice(&self, ctx: &StepContext<'_>) -> Result<(), ProviderError> {
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

    /// Drops the tenant's login role, after ending its sessions and dropping what it was
    /// granted here (its slice, dropped first, held the rest).
    pub(super) async fn purge_role(&self, ctx: &StepContext<'_>) -> Result<(), ProviderError> {
        self.drop_with_role(ctx, None).await
    }

    /// The tenant's schema and its role dropped in one transaction, one commit, where the
    /// slice is a schema (with other tenants' purged at the same moment, when they can go
    /// together); otherwise one after the other.
    pub(super) async fn purge_slice_and_role(
        &self,
        ctx: &StepContext<'_>,
    ) -> Result<(), ProviderError> {
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
    /// transaction: while a batch is written the next gathers (or, from the other wave, is
    /// written beside it), so a mass purge costs the server one plan of each statement and
    /// one commit per batch, not per tenant. Only
    /// what needs nothing more goes: a tenant whose schema or role is not marked as its
    /// own, or whose schema has many tables, or whose role holds something in another
    /// database is answered [`Together::Alone`], and so is every tenant of a batch that
    /// failed (rolled back, it changed nothing): each then goes through
    /// [`Self::drop_with_role`], which says why.
    pub(super) async fn purge_together(
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
    pub(super) async fn drop_with_role(
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
    pub(super) fn purge_statements(&self, purging: &[Purging<'_>]) -> String {
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
}

/// A tenant whose schema (when it goes too) and role are about to be dropped, as the look
/// before found them.
pub(super) struct Purging<'a> {
    slice: Option<&'a Slice>,
    slug: &'a Slug,
    role: &'a str,
    found: &'a BeforePurge,
}

/// The most tables a schema may have to go with others (at most `TENANTS_PER_BATCH` of
/// them): the locks of every object dropped are held until the commit, and the server's
/// lock table is shared by every session.
pub(super) const TOGETHER_RELATIONS: i64 = 20;

/// What a schema-and-role purge finds, read under the role's lock: each mark (`None` when
/// the object is gone; `Some(None)` when it has no comment), how many relations the schema
/// holds (tables, sequences, views: counted in `pg_depend` by index, as
/// [`crate::clients::postgres::RELATIONS_OF_SCHEMA`] finds them; scanning `pg_class` was two thirds of a
/// 1,000-tenant purge's server time), and the other databases where the role holds something.
pub(super) struct BeforePurge {
    schema: Option<Option<String>>,
    relations: i64,
    role: Option<Option<String>>,
    elsewhere: Vec<String>,
}

/// Takes the locks of the roles (as every change of a role does, in one order, so two
/// runs taking several never wait on each other in a circle) and reads [`BeforePurge`] of
/// each `(schema, role)`, in one statement: the locks are in the FROM clause, so they are
/// held before anything is read.
pub(super) async fn look_before_purge(
    tx: &mut PgConnection,
    slices: &[(Option<&str>, &str)],
) -> Result<Vec<BeforePurge>, ProviderError> {
    // A mark as an array of the one comment: no row (gone) is told from no comment.
    type Mark = Option<Vec<Option<String>>>;
    let schemas: Vec<Option<&str>> = slices.iter().map(|(schema, _)| *schema).collect();
    let roles: Vec<&str> = slices.iter().map(|(_, role)| *role).collect();
    let locks: Vec<String> = roles.iter().map(|role| super::role_lock(role)).collect();
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
pub(super) fn literals<'a>(texts: impl Iterator<Item = &'a str>) -> String {
    texts.map(literal).collect::<Vec<_>>().join(", ")
}

/// [`look_before_purge`] of one tenant.
pub(super) async fn look_before_one(
    tx: &mut PgConnection,
    schema: Option<&str>,
    role: &str,
) -> Result<BeforePurge, ProviderError> {
    let mut found = look_before_purge(tx, &[(schema, role)]).await?;
    Ok(found.pop().expect("one row per slice"))
}

/// Drops a schema's tables a hundred at a time, each batch its own transaction: one DROP
/// SCHEMA … CASCADE of thousands of tables takes a lock on each, and can run out of them.
pub(super) async fn drop_tables_in_batches(
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
pub(super) const SHARED_BATCH: i64 = 5_000;

/// Deletes a tenant's rows from every shared table, a batch per transaction. A table whose
/// rows other tables' rows still point at is tried again after those.
pub(super) async fn delete_shared_rows(
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

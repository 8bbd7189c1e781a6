//! A tenant's role and slice made as its plan says: the role with its derived password (sent
//! as a SCRAM verifier), the slice (a shared tenant's rows, a schema or a database) with its
//! grants, marked as this state's, and a database slice checked before it is made.

use serde_json::json;
use sqlx::{Connection, Executor as _, PgConnection};

use crate::clients::postgres::server::{connection, literal, quote};
use crate::clients::postgres::{advisory_xact_locks, scram};
use crate::model::attrs::Attrs;
use crate::model::change::ResourceChange;
use crate::model::resource::{Key, Kind};
use crate::model::tenant::Isolation;
use crate::slug::Slug;
use crate::targets::provider::{
    check_ours, desired_of, schema_version, seed_rows_of, unmanaged, wanted_migrations, Owner,
    ProviderError, StepContext,
};

use super::{
    catalog::META,
    mark::{comment, role_found, Marked, RoleFound},
    reach, role_lock, PgData, Slice,
};

impl PgData {
    pub(super) async fn apply_once(
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

    pub(super) async fn apply_role(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
        attrs: &Attrs,
    ) -> Result<Attrs, ProviderError> {
        if let Some(opened) = self.open_settled(ctx, attrs).await? {
            return Ok(opened);
        }
        let name = self.naming.role(&ctx.tenant.slug);
        let pool = self.pool().await?;
        let superuser = self.superuser().await?;
        let mut tx = pool.begin().await.map_err(ProviderError::sql("begin"))?;
        advisory_xact_locks(tx.as_mut(), &[role_lock(&name)]).await?;
        let found = role_found(tx.as_mut(), &name, superuser).await?;
        let out = self
            .role_in(tx.as_mut(), ctx, change, attrs, found.as_ref())
            .await?;
        tx.commit().await.map_err(ProviderError::sql("commit"))?;
        self.settled(ctx, &out);
        if found.is_none() {
            self.made_roles
                .lock()
                .expect("never poisoned")
                .insert(name.clone());
        }
        if !ctx.login_opens(attrs) && found.is_some() {
            // Suspension also ends the sessions the role already has (a role made just now
            // has none).
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
        Ok(out)
    }

    /// Remembers a role whose step committed `made` with its login held (its tenant is not
    /// active yet), for [`PgData::open_settled`].
    pub(super) fn settled(&self, ctx: &StepContext<'_>, made: &Attrs) {
        if made.get("login") == Some(&json!(false)) {
            self.held_roles
                .lock()
                .expect("never poisoned")
                .insert(self.naming.role(&ctx.tenant.slug));
        }
    }

    /// The role's login opened, and nothing else read or written, when the role's step of
    /// this run committed it with its login held and recorded what `attrs` asks for but the
    /// login (`Executor::open_login`, right after the tenant's move to active): its mark,
    /// flags, verifier and catalog record were settled then, under its lock, and the tenant
    /// has been this run's since. The whole step otherwise. The attributes it leaves.
    async fn open_settled(
        &self,
        ctx: &StepContext<'_>,
        attrs: &Attrs,
    ) -> Result<Option<Attrs>, ProviderError> {
        let name = self.naming.role(&ctx.tenant.slug);
        if !ctx.login_opens(attrs)
            || !self
                .held_roles
                .lock()
                .expect("never poisoned")
                .remove(&name)
        {
            return Ok(None);
        }
        let fingerprint = crate::credentials::fingerprint(&ctx.password(&name)?);
        let held = role_attrs(&name, false, ctx, &fingerprint);
        if ctx.recorded.get(&Key::new(Kind::ROLE)) != Some(&held) {
            return Ok(None);
        }
        self.pool()
            .await?
            .execute(format!("ALTER ROLE {} WITH LOGIN", quote(&name)).as_str())
            .await
            .map_err(ProviderError::sql(format!("open the login of {name}")))?;
        Ok(Some(role_attrs(&name, true, ctx, &fingerprint)))
    }

    /// The role made or brought to `attrs`, marked and recorded in the catalog, in the
    /// transaction `tx` is in, which holds the role's lock (`found` is what it read).
    pub(super) async fn role_in(
        &self,
        tx: &mut PgConnection,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
        attrs: &Attrs,
        found: Option<&RoleFound>,
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
        if let Some(found) = found {
            check_ours(
                ctx,
                change,
                &format!("the role {name}"),
                &Owner::from_text(found.comment.as_deref()),
            )?;
        }
        let verb = if found.is_some() { "ALTER" } else { "CREATE" };
        let options = if login { "LOGIN" } else { "NOLOGIN" };
        let digest = scram::digest(&verifier);
        let password = password_clause(found, &verifier, &digest);
        let mark = ctx.mark.text();
        // In the same transaction as the role: it never exists without its mark, which is
        // written again only where it differs.
        let marked = match found.and_then(|f| f.comment.as_deref()) {
            Some(comment) if comment == mark => String::new(),
            _ => format!("; COMMENT ON ROLE {} IS {}", quote(&name), literal(&mark)),
        };
        tx.execute(
            format!(
                "{verb} ROLE {} WITH {options} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS{password}{marked}",
                quote(&name)
            )
            .as_str(),
        )
        .await
        .map_err(ProviderError::sql(format!("{} the role {name}", verb.to_lowercase())))?;
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
            .bind(&digest)
            .execute(&mut *tx)
            .await
            .map_err(ProviderError::sql("record the role"))?;
        Ok(role_attrs(&name, login, ctx, &fingerprint))
    }

    pub(super) async fn apply_database(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
        attrs: &Attrs,
    ) -> Result<Attrs, ProviderError> {
        let slug = &ctx.tenant.slug;
        let slice = self.slice(slug, ctx.tenant.isolation);
        let wanted = wanted_migrations(&self.migrations, attrs);
        let role = self.naming.role(slug);
        let pool = self.pool().await?;
        // First what the role (and in shared mode its group) was given beyond its slice is
        // taken back; the slice's own grants, some of which that may take too, follow. A
        // role made by this process's role step just before was given nothing: only what
        // PUBLIC holds is looked at (the whole look, planned afresh after every schema made
        // on the server, cost about 5 ms of the server's time per new tenant).
        let (group, shared) = (self.naming.shared_group(), &self.naming.shared_schema);
        let made_just_now = self
            .made_roles
            .lock()
            .expect("never poisoned")
            .remove(&role);
        if made_just_now {
            self.confine_new().await?;
        } else {
            reach::confine(
                &self.server,
                &role,
                slice.isolation.as_str(),
                &slice.name,
                &group,
                shared,
            )
            .await?;
        }
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
        match slice.isolation {
            Isolation::Shared => {
                self.ensure_shared().await?;
                pool.execute(
                    format!("GRANT {} TO {}", quote(&slice.grantee), quote(&role)).as_str(),
                )
                .await
                .map_err(ProviderError::sql("grant the shared group"))?;
                let mut tx = pool.begin().await.map_err(ProviderError::sql("begin"))?;
                advisory_xact_locks(tx.as_mut(), &[slice.lock()]).await?;
                self.migrate_in(tx.as_mut(), &slice, wanted, false).await?;
                self.record_slice(tx.as_mut(), slug, &slice, &role).await?;
                tx.commit().await.map_err(ProviderError::sql("commit"))?;
            }
            Isolation::Schema => {
                // The schema, its migrations and grants, and its record: all or none.
                let mut tx = pool.begin().await.map_err(ProviderError::sql("begin"))?;
                advisory_xact_locks(tx.as_mut(), &[slice.lock()]).await?;
                let fresh = self.schema_in(tx.as_mut(), ctx, change, &slice).await?;
                self.migrate_in(tx.as_mut(), &slice, wanted, fresh).await?;
                self.record_slice(tx.as_mut(), slug, &slice, &role).await?;
                tx.commit().await.map_err(ProviderError::sql("commit"))?;
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
                    (&mut conn)
                        .execute(
                            format!("GRANT USAGE ON SCHEMA public TO {}", quote(&role)).as_str(),
                        )
                        .await
                        .map_err(ProviderError::sql("grant the public schema"))?;
                    let mut tx = conn.begin().await.map_err(ProviderError::sql("begin"))?;
                    advisory_xact_locks(tx.as_mut(), &[slice.lock()]).await?;
                    self.migrate_in(tx.as_mut(), &slice, wanted, false).await?;
                    tx.commit()
                        .await
                        .map_err(ProviderError::sql("commit the migrations"))
                }
                .await;
                let _ = conn.close().await;
                result?;
                // The database's own record is the one that counts; the catalog mirrors it
                // once it is committed, every time: a run killed in between left them
                // applied and not mirrored.
                let mut admin = connection(pool).await?;
                let applied: Vec<_> = self.migrations[..wanted].iter().collect();
                self.record_migrations(&mut admin, &slice, &applied)
                    .await
                    .map_err(ProviderError::sql("record the migrations in the catalog"))?;
                self.record_slice(&mut admin, slug, &slice, &role).await?;
            }
        }
        Ok(self.slice_attrs(attrs, &slice, wanted))
    }

    /// A slice's attributes once it is made and migrated, as its change asked.
    pub(super) fn slice_attrs(&self, attrs: &Attrs, slice: &Slice, wanted: usize) -> Attrs {
        let mut out = attrs.clone();
        out.insert("name", json!(slice.name));
        out.insert("schema_version", schema_version(&self.migrations, wanted));
        out.insert("access", json!("granted"));
        out
    }

    /// The tenant's schema, made unless it is there and refused if it is someone else's,
    /// marked, closed to PUBLIC and opened to its role, in the transaction `tx` is in, which
    /// holds the schema's lock ([`Slice::lock`]). Whether it is fresh: made now, with
    /// nothing of it in the catalog.
    pub(super) async fn schema_in(
        &self,
        tx: &mut PgConnection,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
        slice: &Slice,
    ) -> Result<bool, ProviderError> {
        let found = comment(&mut *tx, Marked::Schema, &slice.name).await?;
        let forget = match &found {
            Some(comment) => {
                check_ours(
                    ctx,
                    change,
                    &format!("the schema {}", slice.name),
                    &Owner::from_text(comment.as_deref()),
                )?;
                String::new()
            }
            // Gone: whatever the catalog remembers of it was another schema's, and is
            // forgotten in the same message that makes it.
            None => self.forget_sql(&[(slice, &ctx.tenant.slug)]) + ";",
        };
        let s = quote(&slice.schema);
        let create = format!(
            "{forget}
             CREATE SCHEMA IF NOT EXISTS {s};
             COMMENT ON SCHEMA {s} IS {mark};
             REVOKE ALL ON SCHEMA {s} FROM PUBLIC;
             GRANT USAGE ON SCHEMA {s} TO {r};",
            r = quote(&self.naming.role(&ctx.tenant.slug)),
            mark = literal(&ctx.mark.text())
        );
        tx.execute(create.as_str())
            .await
            .map_err(ProviderError::sql(format!(
                "create the schema {}",
                slice.name
            )))?;
        Ok(found.is_none())
    }

    /// The slice recorded in the catalog as the tenant's.
    pub(super) async fn record_slice(
        &self,
        conn: &mut PgConnection,
        slug: &Slug,
        slice: &Slice,
        role: &str,
    ) -> Result<(), ProviderError> {
        let sql = self.sql(
            "INSERT INTO {schema}.slices (slug, name, isolation, role) VALUES ($1, $2, $3, $4)
             ON CONFLICT (slug) DO UPDATE SET name = excluded.name, isolation = excluded.isolation, role = excluded.role",
        );
        sqlx::query(&sql)
            .bind(slug.as_str())
            .bind(&slice.name)
            .bind(slice.isolation.as_str())
            .bind(role)
            .execute(conn)
            .await
            .map_err(ProviderError::sql("record the slice"))?;
        Ok(())
    }

    /// Creates the database `name` unless it exists. CREATE DATABASE cannot run in a
    /// transaction, so another session may be creating the same one (a twin, or the backend
    /// of a killed run still finishing): its "already exists" or duplicate-key error means
    /// wait and look again, until that session commits or gives up.
    pub(super) async fn create_database(
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
            {
                // Given back before the next statement takes one of its own.
                let mut c = connection(pool).await?;
                self.forget_slice(&mut c, Isolation::Database, name, Some(slug))
                    .await?;
            }
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

    /// Refuses a database slice that exists and is not this state's.
    pub(super) async fn check_database(
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

    /// Gives every table of the shared schema a `tenant_id` column filled from the session's
    /// tenant, and row-level security (forced, so even the owner is filtered) on it.
    pub(super) async fn tenantize(
        &self,
        tx: &mut PgConnection,
        schema: &str,
    ) -> Result<(), ProviderError> {
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
}

/// What a role's step records of the role `name`, its login open or not, with the
/// fingerprint of its password.
fn role_attrs(name: &str, login: bool, ctx: &StepContext<'_>, fingerprint: &str) -> Attrs {
    crate::model::attrs::attrs([
        ("name", json!(name)),
        ("login", json!(login)),
        ("credentials_version", json!(ctx.credentials_version)),
        ("password_fingerprint", json!(fingerprint)),
    ])
}

/// Refuses `what` (a migration, or the grants) when the shared schema holds a view,
/// materialized view or function that would read the shared tables with its owner's rights.
pub(super) async fn refuse_unsafe(
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
pub(super) fn policy_texts(shared_schema: &str) -> Vec<String> {
    vec![
        format!("(tenant_id = {shared_schema}.current_tenant_id())"),
        "(tenant_id = current_tenant_id())".to_string(),
    ]
}

/// The `PASSWORD` clause a role's statement needs: none when the server holds the verifier
/// already, as when a new tenant's login opens after its smoke tests. The server checks
/// every verifier it is given against the empty password, a whole key derivation of its own
/// (about 5 ms of its CPU). A verifier the admin cannot read is sent again, as it may have
/// been changed by hand.
fn password_clause(found: Option<&RoleFound>, verifier: &str, digest: &str) -> String {
    match found.and_then(|f| f.verifier_digest.as_deref()) {
        Some(held) if held == digest => String::new(),
        _ => format!(" PASSWORD '{verifier}'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(verifier_digest: Option<&str>) -> RoleFound {
        RoleFound {
            comment: None,
            verifier_digest: verifier_digest.map(str::to_string),
        }
    }

    #[test]
    fn a_verifier_is_sent_unless_the_server_is_seen_to_hold_it() {
        let sent = " PASSWORD 'SCRAM-SHA-256$v'";
        // A new role.
        assert_eq!(password_clause(None, "SCRAM-SHA-256$v", "d"), sent);
        // Its verifier held already: the login opens without the server deriving a key.
        assert_eq!(
            password_clause(Some(&found(Some("d"))), "SCRAM-SHA-256$v", "d"),
            ""
        );
        // Changed by hand: set again.
        assert_eq!(
            password_clause(Some(&found(Some("other"))), "SCRAM-SHA-256$v", "d"),
            sent
        );
        // Not readable (the admin is no superuser): set again, whatever it is.
        assert_eq!(
            password_clause(Some(&found(None)), "SCRAM-SHA-256$v", "d"),
            sent
        );
    }
}

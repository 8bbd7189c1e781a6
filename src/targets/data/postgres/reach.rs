//! What a tenant's role reaches beyond its own slice, found for the whole fleet in one query
//! and taken away again by apply.
//!
//! A tenant's role is promised `NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
//! NOBYPASSRLS`, no membership but the shared group's (shared mode), and no right on, nor
//! ownership of, anything outside its slice. `pg_shdepend` is a shared catalog that names,
//! for every database of the server at once, each object a role owns or is named in the
//! rights of: a grant on the control plane, on another schema, on another database, or a
//! large object the role made in `postgres`, all show there, so one query covers the server.
//!
//! Rights through `PUBLIC` are not in `pg_shdepend`: tenant databases have `CONNECT`
//! revoked from `PUBLIC` (one that has it again is reported), and `CREATE` on the admin
//! database's `public` schema is compared once for all.
//!
//! In shared mode the group's rights count for each of its members, and so does every
//! relation or function that would run with its owner's rights over the shared tables
//! (an owner that is a superuser, or one without FORCE, is not filtered by row-level
//! security): views without `security_invoker`, materialized views (their rows are the
//! owner's read), and `SECURITY DEFINER` functions the group may call.

use std::collections::HashMap;

use sqlx::{Connection as _, Executor as _, PgConnection};

use crate::clients::postgres::server::{connection, quote, PgServer};
use crate::targets::provider::ProviderError;

/// Whether a `pg_shdepend` row `d` of the role `t.rol` lies inside its slice. `h` is the
/// role's home: `dat` its database (the admin database but in database mode), `nsp` its
/// schema (schema mode). `s` is the shared schema's oid, for the group's own rows.
const INSIDE: &str = "(
    (t.isolation = 'database' AND d.dbid = h.dat)
    OR (t.isolation = 'database' AND d.deptype = 'a' AND d.dbid = 0
        AND d.classid = 'pg_database'::regclass AND d.objid = h.dat)
    OR (t.isolation = 'schema' AND d.deptype = 'a' AND d.dbid = h.dat AND (
        (d.classid = 'pg_namespace'::regclass AND d.objid = h.nsp)
        OR (d.classid = 'pg_class'::regclass
            AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = d.objid AND c.relnamespace = h.nsp))))
    OR (t.isolation = 'group' AND d.deptype = 'a' AND d.dbid = h.dat AND (
        (d.classid = 'pg_namespace'::regclass AND d.objid = h.nsp)
        OR (d.classid = 'pg_class'::regclass
            AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = d.objid AND c.relnamespace = h.nsp))))
)";

/// The roles to look at: each tenant's, with its isolation and slice name, and the shared
/// group as the pseudo-isolation `group` whose slice is the shared schema.
fn roles_cte() -> String {
    format!(
        "t AS (
           SELECT w.role, w.isolation, w.slice, r.oid AS rol, r.rolsuper, r.rolcreatedb,
                  r.rolcreaterole, r.rolreplication, r.rolbypassrls
           -- The list's own length as its limit tells the planner how many roles there
           -- are: for a few, each slice is looked up by its name's index; taken for the
           -- unknown function's 10, every schema of the fleet was read to find one.
           FROM (SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
                 LIMIT cardinality($1::text[])) AS w(role, isolation, slice)
           JOIN pg_roles r ON r.rolname = w.role
         ), g AS (
           SELECT oid FROM pg_roles WHERE rolname = $4
         ), h AS (
           SELECT t.rol,
             CASE WHEN t.isolation = 'database' THEN d.oid
                  ELSE (SELECT oid FROM pg_database WHERE datname = current_database()) END AS dat,
             n.oid AS nsp
           FROM t LEFT JOIN pg_database d ON d.datname = t.slice AND t.isolation = 'database'
           LEFT JOIN pg_namespace n ON n.nspname = t.slice AND t.isolation IN ('schema', 'group')
         ), outside AS (
           SELECT t.role, t.rol, d.dbid, d.deptype, d.classid, d.objid, d.objsubid
           FROM t JOIN h ON h.rol = t.rol
           JOIN pg_shdepend d ON d.refclassid = 'pg_authid'::regclass AND d.refobjid = t.rol
             AND d.deptype IN ('o', 'a')
           WHERE NOT coalesce({INSIDE}, false)
         )"
    )
}

/// Per role (a tenant's, or the shared group's), what it holds beyond its slice, each said
/// in a few words. `tenants` are (role, isolation, slice name); `group` and `shared` name
/// the shared group and schema. One query.
pub(crate) async fn beyond(
    pool: &sqlx::PgPool,
    tenants: &[(String, &str, String)],
    group: &str,
    shared: &str,
) -> Result<HashMap<String, Vec<String>>, ProviderError> {
    let (mut roles, mut isolations, mut slices) = (Vec::new(), Vec::new(), Vec::new());
    for (role, isolation, slice) in tenants {
        roles.push(role.as_str());
        isolations.push(*isolation);
        slices.push(slice.as_str());
    }
    roles.push(group);
    isolations.push("group");
    slices.push(shared);
    let sql = format!(
        "WITH {cte}, found AS (
           SELECT t.role, t.role || ' is ' || a.what AS what
           FROM t, unnest(ARRAY[
             CASE WHEN t.rolsuper THEN 'SUPERUSER' END, CASE WHEN t.rolcreatedb THEN 'CREATEDB' END,
             CASE WHEN t.rolcreaterole THEN 'CREATEROLE' END, CASE WHEN t.rolreplication THEN 'REPLICATION' END,
             CASE WHEN t.rolbypassrls THEN 'BYPASSRLS' END]) AS a(what)
           WHERE a.what IS NOT NULL
           UNION ALL
           SELECT t.role, t.role || ' is a member of ' || m.roleid::regrole::text
           FROM t JOIN pg_auth_members m ON m.member = t.rol
           WHERE NOT (t.isolation = 'shared' AND m.roleid = (SELECT oid FROM g))
           UNION ALL
           SELECT o.role, o.role || CASE o.deptype WHEN 'o' THEN ' owns ' ELSE ' has rights on ' END ||
             CASE WHEN o.dbid IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
               THEN pg_describe_object(o.classid, o.objid, o.objsubid)
                 || CASE WHEN o.dbid = 0 THEN '' ELSE ' in the admin database' END
               ELSE CASE o.classid WHEN 'pg_largeobject'::regclass THEN 'large object'
                      WHEN 'pg_class'::regclass THEN 'relation' WHEN 'pg_namespace'::regclass THEN 'schema'
                      WHEN 'pg_proc'::regclass THEN 'function' ELSE o.classid::regclass::text END
                 || ' ' || o.objid || ' in database ' || coalesce(quote_ident(db.datname), o.dbid::text) END
           FROM outside o LEFT JOIN pg_database db ON db.oid = o.dbid
           UNION ALL
           -- A tenant database anyone may connect to.
           SELECT t.role, 'PUBLIC may connect to the database ' || quote_ident(d.datname)
           FROM t JOIN pg_database d ON d.datname = t.slice
           WHERE t.isolation = 'database' AND has_database_privilege('public', d.oid, 'CONNECT')
           UNION ALL
           SELECT t.role, 'PUBLIC may create objects in the admin database''s public schema'
           FROM t WHERE t.isolation <> 'group' AND coalesce(has_schema_privilege('public', to_regnamespace('public'), 'CREATE'), false)
           UNION ALL
           SELECT $4, u.what FROM ({unsafe}) AS u
         )
         SELECT role, array_agg(what ORDER BY what) FROM found GROUP BY role",
        cte = roles_cte(),
        unsafe = UNSAFE_FOR_GROUP
    );
    let rows: Vec<(String, Vec<String>)> = sqlx::query_as(&sql)
        .bind(&roles)
        .bind(&isolations)
        .bind(&slices)
        .bind(group)
        .bind(shared)
        .fetch_all(pool)
        .await
        .map_err(ProviderError::sql("read what the tenant roles reach"))?;
    Ok(rows.into_iter().collect())
}

/// Relations and functions that read the shared tables with their owner's rights and that
/// the group (`$4`) can use. `$5` is the shared schema. Our own `current_tenant_id()` is
/// SECURITY DEFINER on purpose: it reads only the caller's own tenant id.
const UNSAFE_FOR_GROUP: &str = "
    SELECT CASE c.relkind WHEN 'v' THEN 'the view ' || format('%I.%I', n.nspname, c.relname)
             || ' runs with its owner''s rights, which row-level security does not filter (no security_invoker)'
           WHEN 'm' THEN 'the materialized view ' || format('%I.%I', n.nspname, c.relname)
             || ' holds rows read with its owner''s rights, which row-level security does not filter'
           ELSE 'the foreign table ' || format('%I.%I', n.nspname, c.relname) || ' has no row-level security' END AS what
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, g
    WHERE c.relkind IN ('v', 'm', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND has_schema_privilege(g.oid, n.oid, 'USAGE') AND has_table_privilege(g.oid, c.oid, 'SELECT')
      AND NOT (c.relkind = 'v' AND EXISTS (SELECT 1 FROM unnest(c.reloptions) o
               WHERE lower(o) IN ('security_invoker=true', 'security_invoker=on', 'security_invoker=1', 'security_invoker=yes')))
      AND (n.nspname = $5 OR EXISTS (
        SELECT 1 FROM pg_rewrite rw JOIN pg_depend dp ON dp.classid = 'pg_rewrite'::regclass AND dp.objid = rw.oid
          AND dp.refclassid = 'pg_class'::regclass
        JOIN pg_class rc ON rc.oid = dp.refobjid JOIN pg_namespace rn ON rn.oid = rc.relnamespace
        WHERE rw.ev_class = c.oid AND rn.nspname = $5))
    UNION ALL
    SELECT 'the function ' || format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
             || ' runs with its owner''s rights (SECURITY DEFINER), which row-level security does not filter'
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, g
    WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND p.oid IS DISTINCT FROM to_regprocedure(quote_ident($5) || '.current_tenant_id()')
      AND has_schema_privilege(g.oid, n.oid, 'USAGE') AND has_function_privilege(g.oid, p.oid, 'EXECUTE')";

/// The objects of the shared schema `schema` that would read the shared tables with their
/// owner's rights once granted to the group: checked after each migration of the shared
/// slice, in its transaction, and before each grant, so none is ever granted.
pub(crate) async fn unsafe_in_shared(
    conn: &mut PgConnection,
    schema: &str,
) -> Result<Vec<String>, ProviderError> {
    sqlx::query_scalar(
        "SELECT CASE c.relkind WHEN 'v' THEN 'the view ' || format('%I.%I', n.nspname, c.relname)
                  || ' would run with its owner''s rights, which row-level security does not filter: create it WITH (security_invoker = true)'
                WHEN 'm' THEN 'the materialized view ' || format('%I.%I', n.nspname, c.relname)
                  || ' would hold rows read with its owner''s rights, which row-level security does not filter: use a view WITH (security_invoker = true)'
                ELSE 'the foreign table ' || format('%I.%I', n.nspname, c.relname) || ' cannot have row-level security' END
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind IN ('v', 'm', 'f')
           AND NOT (c.relkind = 'v' AND EXISTS (SELECT 1 FROM unnest(c.reloptions) o
               WHERE lower(o) IN ('security_invoker=true', 'security_invoker=on', 'security_invoker=1', 'security_invoker=yes')))
         UNION ALL
         SELECT 'the function ' || format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
                  || ' would run with its owner''s rights (SECURITY DEFINER), which row-level security does not filter'
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = $1 AND p.prosecdef
           AND p.oid IS DISTINCT FROM to_regprocedure(quote_ident($1) || '.current_tenant_id()')
         ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await
    .map_err(ProviderError::sql("look for views and functions that bypass row-level security"))
}

/// How refresh says what a role reaches beyond its slice, as the `access` of its slice.
pub(crate) fn access(found: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut text = found
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if found.len() > SHOWN {
        text += &format!("; and {} more", found.len() - SHOWN);
    }
    format!("unsafe: {text}")
}

/// Takes away from `role` what it holds beyond its slice: its attributes, its memberships
/// (the shared group's excepted in shared mode), and in every database where it owns or
/// is granted something outside its slice, all of it (`DROP OWNED BY`, which revokes its
/// rights there and on shared objects, and drops what it owns). Its slice's own grants
/// are given again by the caller after this. Says whether it changed anything.
pub(crate) async fn confine(
    server: &PgServer,
    role: &str,
    isolation: &str,
    slice: &str,
    group: &str,
    shared: &str,
) -> Result<bool, ProviderError> {
    let pool = server.pool().await?;
    let sql = format!(
        "WITH {cte}
         SELECT array_remove(ARRAY[
             CASE WHEN t.rolsuper THEN 'NOSUPERUSER' END, CASE WHEN t.rolcreatedb THEN 'NOCREATEDB' END,
             CASE WHEN t.rolcreaterole THEN 'NOCREATEROLE' END, CASE WHEN t.rolreplication THEN 'NOREPLICATION' END,
             CASE WHEN t.rolbypassrls THEN 'NOBYPASSRLS' END], NULL),
           ARRAY(SELECT m.roleid::regrole::text FROM pg_auth_members m WHERE m.member = t.rol
                 AND NOT (t.isolation = 'shared' AND m.roleid = (SELECT oid FROM g))),
           ARRAY(SELECT DISTINCT coalesce(db.datname, current_database()) FROM outside o
                 LEFT JOIN pg_database db ON db.oid = o.dbid AND o.dbid <> 0 WHERE o.rol = t.rol),
           coalesce(has_schema_privilege('public', to_regnamespace('public'), 'CREATE'), false)
         FROM t",
        cte = roles_cte()
    );
    // Attributes to take, memberships to revoke, databases to drop its holdings in, and
    // whether PUBLIC may create in the admin database's `public` schema.
    type Found = (Vec<String>, Vec<String>, Vec<String>, bool);
    let mut tx = pool.begin().await.map_err(ProviderError::sql("begin"))?;
    // Planned once per connection, not once per tenant: the server's custom plans of this
    // query took 1.6 ms and more to make each time, and the generic one runs in 0.1 ms.
    tx.as_mut()
        .execute("SET LOCAL plan_cache_mode = force_generic_plan")
        .await
        .map_err(ProviderError::sql("set the plan cache mode"))?;
    let found: Option<Found> = sqlx::query_as(&sql)
        .bind(vec![role])
        .bind(vec![isolation])
        .bind(vec![slice])
        .bind(group)
        .bind(shared)
        .fetch_optional(tx.as_mut())
        .await
        .map_err(ProviderError::sql(format!("read what {role} reaches")))?;
    tx.commit().await.map_err(ProviderError::sql("commit"))?;
    let Some((attributes, memberships, databases, public_create)) = found else {
        return Ok(false);
    };
    let r = quote(role);
    let mut statements = String::new();
    if public_create {
        statements += CLOSE_PUBLIC;
    }
    if !attributes.is_empty() {
        // Only those it has: taking SUPERUSER, REPLICATION or BYPASSRLS needs a superuser
        // admin, CREATEDB and CREATEROLE do not.
        statements += &format!("ALTER ROLE {r} {};", attributes.join(" "));
    }
    for granted in &memberships {
        // `regrole` output: the server's own quoting of the name.
        statements += &format!("REVOKE {granted} FROM {r};");
    }
    if !statements.is_empty() {
        let mut tx = pool.begin().await.map_err(ProviderError::sql("begin"))?;
        crate::clients::postgres::advisory_xact_lock(tx.as_mut(), LOCK).await?;
        tx.as_mut()
            .execute(statements.as_str())
            .await
            .map_err(ProviderError::sql(format!(
                "take back what {role} was given"
            )))?;
        tx.commit().await.map_err(ProviderError::sql("commit"))?;
    }
    if !databases.is_empty() {
        let (here,): (String,) = sqlx::query_as("SELECT current_database()::text")
            .fetch_one(pool)
            .await
            .map_err(ProviderError::sql("read the admin database's name"))?;
        for db in &databases {
            drop_owned_in(server, Some(db.as_str()).filter(|db| *db != here), role).await?;
        }
    }
    Ok(!statements.is_empty() || !databases.is_empty())
}

/// The default before PostgreSQL 15: anyone may create objects in the admin database's
/// `public` schema. Taken away for every role at once.
const CLOSE_PUBLIC: &str = "REVOKE CREATE ON SCHEMA public FROM PUBLIC;";

/// What [`confine`] does for a role made just now, which holds nothing of its own beyond
/// its slice: only what every role is given through `PUBLIC` is looked at, and taken away.
pub(crate) async fn confine_new(server: &PgServer) -> Result<(), ProviderError> {
    let pool = server.pool().await?;
    let (public_create,): (bool,) = sqlx::query_as(
        "SELECT coalesce(has_schema_privilege('public', to_regnamespace('public'), 'CREATE'), false)",
    )
    .fetch_one(pool)
    .await
    .map_err(ProviderError::sql("read whether anyone may create in the public schema"))?;
    if public_create {
        let mut tx = pool.begin().await.map_err(ProviderError::sql("begin"))?;
        crate::clients::postgres::advisory_xact_lock(tx.as_mut(), LOCK).await?;
        tx.as_mut()
            .execute(CLOSE_PUBLIC)
            .await
            .map_err(ProviderError::sql(
                "take CREATE on the public schema from PUBLIC",
            ))?;
        tx.commit().await.map_err(ProviderError::sql("commit"))?;
    }
    Ok(())
}

/// `DROP OWNED BY role` in the database `db` (`None`: the admin database, through the
/// pool). It rewrites the rights of objects other roles' repairs may rewrite at the same
/// time (two tenants granted the same table): one at a time, or the server reports a
/// concurrent update.
pub(crate) async fn drop_owned_in(
    server: &PgServer,
    db: Option<&str>,
    role: &str,
) -> Result<(), ProviderError> {
    let drop = format!("DROP OWNED BY {}", quote(role));
    let context = match db {
        Some(db) => format!("drop what {role} holds in the database {db}"),
        None => format!("drop what {role} holds in the admin database"),
    };
    let mut conn = match db {
        None => connection(server.pool().await?).await?.detach(),
        Some(db) => server.connect_to(db).await?,
    };
    let done = async {
        let mut tx = conn.begin().await.map_err(ProviderError::sql("begin"))?;
        crate::clients::postgres::advisory_xact_lock(tx.as_mut(), LOCK).await?;
        tx.as_mut()
            .execute(drop.as_str())
            .await
            .map_err(ProviderError::sql(context))?;
        tx.commit().await.map_err(ProviderError::sql("commit"))
    }
    .await;
    let _ = conn.close().await;
    done
}

/// Taken by every repair that rewrites rights outside one tenant's own objects.
pub(crate) const LOCK: &str = "tenant-reconcile/confine";

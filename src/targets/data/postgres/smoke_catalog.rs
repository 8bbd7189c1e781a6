//! What a smoke test asks the catalog, as the tenant's role, in one statement: its slice's
//! tables (each with the column the write check sets), what of the control plane it
//! reaches, the powers it holds, the other tenants' slices it reaches, and every relation it
//! may read. Each answer is a subquery of its own; together they are one round trip and one
//! plan, where on their own they were six (and the server plans every one of them again
//! after each schema made anywhere on it).

use sqlx::PgConnection;

use crate::clients::postgres::{NOT_SYSTEM_SCHEMA, RELATIONS_OF_N, RELATIONS_OF_SCHEMA};
use crate::model::tenant::Isolation;

/// A relation the role may read: schema, name, kind (`pg_class.relkind`), whether it has a
/// `tenant_id` column, and whether it reads with its reader's rights (a table, or a view
/// with `security_invoker`).
pub(super) type Readable = (String, String, String, bool, bool);

/// The catalog's answers for one tenant's smoke test.
pub(super) struct Answers {
    /// The slice's tables, by name, each with its first column the write check may set.
    pub tables: Vec<(String, Option<String>)>,
    /// The control plane's schema and relations the role reaches (none asked in database
    /// mode, whose own database has no control plane: see `control_plane`).
    pub control: Vec<String>,
    /// What the role is beyond a tenant's login: its attributes, its memberships but the
    /// shared group, its schema open to anyone.
    pub powers: Vec<String>,
    /// The other tenants' slices (of `others`) it may use or connect to.
    pub reached: Vec<String>,
    /// Every relation it may read, wherever it is.
    pub readable: Vec<Readable>,
}

/// The control plane's schema and relations the current role may use, with the admin
/// schema's name as the parameter `param`. Its relations through `pg_depend`, by its index:
/// `pg_class` has none on the schema, and a scan of it (every tenant's relations, in the
/// admin database) with a privilege check on each was most of a smoke test's time on the
/// server.
pub(super) fn control_sql(param: &str) -> String {
    format!(
        "SELECT n.nspname::text FROM pg_namespace n WHERE n.nspname = {param} AND has_schema_privilege(n.oid, 'USAGE')
         UNION ALL
         SELECT c.oid::regclass::text FROM pg_namespace n
         JOIN pg_depend d ON d.refclassid = 'pg_namespace'::regclass AND d.refobjid = n.oid
           AND d.classid = 'pg_class'::regclass
         JOIN pg_class c ON c.oid = d.objid
         WHERE n.nspname = {param} AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
           AND (has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE')
                OR has_any_column_privilege(c.oid, 'SELECT, INSERT, UPDATE'))"
    )
}

/// Whose answers are asked: a tenant's role and its slice.
pub(super) struct Question<'a> {
    pub role: &'a str,
    pub isolation: Isolation,
    /// The schema its tables are in.
    pub schema: &'a str,
    /// The admin schema's plain name.
    pub admin_schema_name: &'a str,
    /// The one role it may be a member of (the shared group), in shared mode.
    pub group: Option<&'a str>,
    /// The names of a few other tenants' slices of its mode.
    pub others: &'a [&'a str],
    /// The admin database's schemas anyone may use.
    pub public_schemas: &'a [i64],
}

impl Answers {
    /// Asks the catalog on `conn`, where the role's privilege functions answer for the role
    /// (its own connection, or the admin's acting as it).
    pub(super) async fn ask(q: &Question<'_>, conn: &mut PgConnection) -> Result<Answers, String> {
        let row: (String, Vec<String>, Vec<String>, Vec<String>, String) =
            sqlx::query_as(&sql(q.isolation))
                .bind(q.schema)
                .bind(q.admin_schema_name)
                .bind(q.group)
                .bind(q.others)
                .bind(q.public_schemas)
                .fetch_one(conn)
                .await
                .map_err(|e| format!("cannot read the catalog as {}: {e}", q.role))?;
        let (tables, control, powers, reached, readable) = row;
        let json = |what: &str, text: &str| format!("the catalog's {what} did not read: {text}");
        Ok(Answers {
            tables: serde_json::from_str(&tables).map_err(|e| json("tables", &e.to_string()))?,
            control,
            powers,
            reached,
            readable: serde_json::from_str(&readable)
                .map_err(|e| json("relations", &e.to_string()))?,
        })
    }
}

/// The one statement. Parameters: `$1` the slice's schema, `$2` the admin schema's name,
/// `$3` the shared group (shared mode), `$4` the other slices' names, `$5` the schemas
/// anyone may use in the admin database.
fn sql(isolation: Isolation) -> String {
    let control = match isolation {
        Isolation::Database => "ARRAY[]::text[]".to_string(),
        _ => format!("ARRAY({})", control_sql("$2")),
    };
    // Each other slice looked up by its name's index (see `readable` for `OFFSET 0`): with
    // `nspname = ANY(...)` the planner read every tenant's schema, each with a privilege check.
    let reached = match isolation {
        Isolation::Schema => {
            "ARRAY(SELECT n.nspname::text FROM unnest($4::text[]) AS other(name),
               LATERAL (SELECT oid, nspname FROM pg_namespace WHERE nspname = other.name OFFSET 0) n
             WHERE has_schema_privilege(n.oid, 'USAGE'))"
        }
        Isolation::Database => {
            "ARRAY(SELECT d.datname::text FROM unnest($4::text[]) AS other(name),
               LATERAL (SELECT oid, datname FROM pg_database WHERE datname = other.name OFFSET 0) d
             WHERE has_database_privilege(d.oid, 'CONNECT'))"
        }
        Isolation::Shared => "ARRAY[]::text[]",
    };
    format!(
        "SELECT
           (SELECT coalesce(json_agg(json_build_array(t.relname, t.col) ORDER BY t.relname), '[]')::text
            FROM (SELECT c.relname::text AS relname,
                    (SELECT a.attname::text FROM pg_attribute a
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                       AND a.attgenerated = '' AND a.attidentity = ''
                     ORDER BY a.attnum LIMIT 1) AS col
                  FROM {RELATIONS_OF_SCHEMA}
                  WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1 LIMIT 100) t),
           {control},
           ARRAY({powers}),
           {reached},
           (SELECT coalesce(json_agg(json_build_array(r.nspname, r.relname, r.relkind, r.has_tenant, r.invoker)
                                     ORDER BY r.nspname, r.relname), '[]')::text
            FROM ({readable}) r)",
        powers = POWERS,
        readable = readable(isolation),
    )
}

/// The role's attributes and memberships, as it sees them, that a tenant's login must not
/// have (the shared group, `$3`, is the one membership it may), and its schema (`$1`)
/// open to anyone.
const POWERS: &str = "SELECT r.rolname || ' is ' || a FROM pg_roles r, unnest(ARRAY[
       CASE WHEN r.rolsuper THEN 'SUPERUSER' END, CASE WHEN r.rolcreatedb THEN 'CREATEDB' END,
       CASE WHEN r.rolcreaterole THEN 'CREATEROLE' END, CASE WHEN r.rolreplication THEN 'REPLICATION' END,
       CASE WHEN r.rolbypassrls THEN 'BYPASSRLS' END]) AS a
     WHERE r.rolname = current_user AND a IS NOT NULL
     UNION ALL
     SELECT current_user || ' is a member of ' || m.roleid::regrole::text FROM pg_auth_members m
     WHERE m.member = to_regrole(current_user::text) AND m.roleid IS DISTINCT FROM to_regrole($3)
     UNION ALL
     SELECT 'anyone (PUBLIC) may use its schema ' || n.nspname FROM pg_namespace n
     WHERE n.nspname = $1 AND has_schema_privilege('public', n.oid, 'USAGE')";

/// Every relation the role may read (tables, views, materialized views, foreign tables, in
/// any schema but the system's), found from the schemas it may use, each one's through
/// `pg_depend` by index (every relation depends on its schema), not by a scan of
/// `pg_class`, which holds every tenant's relations.
///
/// In the admin database, the schemas looked in are those the role (or a group of it) is
/// named in the rights of, or owns, found through `pg_shdepend` by its index, and those
/// anyone may use (`$5`): a check of every schema there, each tenant's among them, made
/// every tenant's smoke test cost the fleet. Each lookup is by a key, one role's dependents,
/// then one schema, then its relations: the planner, left to itself, joined the schemas
/// found to a scan of `pg_namespace` and of the database's every schema dependency in
/// `pg_shdepend` (both a row per tenant), with a privilege check on each. `OFFSET 0` keeps
/// each lateral lookup a lookup (it stops the planner from merging it into a join of its
/// choosing). A database of its own holds only its slice's schemas, each looked at.
fn readable(isolation: Isolation) -> String {
    let schemas = match isolation {
        Isolation::Database => RELATIONS_OF_SCHEMA.to_string(),
        _ => format!(
            "(WITH RECURSIVE member_of(rol) AS (
                SELECT oid FROM pg_roles WHERE rolname = current_user
                UNION SELECT m.roleid FROM pg_auth_members m JOIN member_of ON m.member = member_of.rol)
              SELECT d.objid AS oid FROM member_of, LATERAL (
                SELECT d.objid FROM pg_shdepend d
                WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = member_of.rol
                  AND d.classid = 'pg_namespace'::regclass
                  AND d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                OFFSET 0) d
              UNION SELECT CAST(unnest($5::int8[]) AS oid)) AS looked_in,
             LATERAL (SELECT * FROM pg_namespace n WHERE n.oid = looked_in.oid OFFSET 0) n
             {RELATIONS_OF_N}"
        ),
    };
    format!(
        "SELECT n.nspname::text AS nspname, c.relname::text AS relname, c.relkind::text AS relkind,
           EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped) AS has_tenant,
           c.relkind IN ('r', 'p') OR (c.relkind = 'v' AND EXISTS (SELECT 1 FROM unnest(c.reloptions) o
             WHERE lower(o) IN ('security_invoker=true', 'security_invoker=on', 'security_invoker=1', 'security_invoker=yes'))) AS invoker
         FROM {schemas}
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {NOT_SYSTEM_SCHEMA}
           AND has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT')
         ORDER BY 1, 2 LIMIT 200"
    )
}

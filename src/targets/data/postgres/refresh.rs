//! The refresh: every tenant's role, slice, applied migrations, seed and what its role reaches
//! beyond its slice, read for the whole fleet in a fixed number of queries, and what the slices
//! about to be purged hold.

use std::collections::{HashMap, HashSet};

use serde_json::json;

use crate::model::attrs::Attrs;
use crate::model::resource::Kind;
use crate::model::tenant::Isolation;
use crate::slug::Slug;
use crate::targets::provider::{
    schema_version, LiveFleet, Owner, Provider, ProviderError, RefreshTarget,
};

use super::{apply::policy_texts, reach, PgData};

/// The migrations applied to each slice (by isolation and name), and the seeded tenants.
type Applied = (HashMap<(String, String), HashSet<String>>, HashSet<String>);

impl PgData {
    /// The data target's live resources of `targets`.
    pub(super) async fn refresh_fleet(
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
        // Known now for the roles' steps of an apply after this refresh (`PgData::superuser`).
        let _ = self.superuser.set(superuser);
        let mut by_role = self.read_roles(pool, &roles, catalog, superuser).await?;
        let mut slices = self.read_slices(pool, targets, &slugs, catalog).await?;
        let (applied, seeded) = match catalog {
            true => {
                let (isolations, names): (Vec<&str>, Vec<&str>) = slices
                    .values()
                    .map(|f| (f.isolation.as_str(), f.name.as_str()))
                    .unzip();
                self.read_applied(pool, &slugs, &isolations, &names).await?
            }
            false => Default::default(),
        };
        // The catalog's and superuser's, the roles', the slices', and the catalog's two.
        let mut queries = if catalog { 5 } else { 3 };

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
                open,
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
            if open {
                found.push(format!("anyone (PUBLIC) may use the schema {name}"));
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

    /// The tenants' roles, by name: their attributes and marks, the password's fingerprint
    /// from the catalog, checked against the server's verifier where it can be read.
    async fn read_roles(
        &self,
        pool: &sqlx::PgPool,
        roles: &[String],
        catalog: bool,
        superuser: bool,
    ) -> Result<HashMap<String, (Attrs, Owner)>, ProviderError> {
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
        // The catalog's `name` is looked up with the collation of its own key: a role's
        // name compares in "C", which that key's index does not answer, and each refresh
        // of one role read the whole catalog.
        let sql_4 = self.sql(&format!(
            "SELECT r.rolname, r.rolcanlogin, c.credentials_version, c.password_fingerprint, c.verifier_digest, {verifier},
                    mark.description
             FROM pg_roles r LEFT JOIN {catalog_roles} c ON c.name = (r.rolname::text COLLATE \"default\")
             LEFT JOIN pg_shdescription mark ON mark.objoid = r.oid AND mark.classoid = 'pg_authid'::regclass
             WHERE r.rolname = ANY($1)"
        ));
        let rows: Vec<RoleRow> = sqlx::query_as(&sql_4)
            .bind(roles)
            .fetch_all(pool)
            .await
            .map_err(ProviderError::sql("read the tenant roles"))?;
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
        Ok(by_role)
    }

    /// Each tenant's slice, by slug: where the catalog records it, or where its file puts it;
    /// whether it is there, whether its role reaches it, and whose mark it carries.
    async fn read_slices(
        &self,
        pool: &sqlx::PgPool,
        targets: &[RefreshTarget],
        slugs: &[&str],
        catalog: bool,
    ) -> Result<HashMap<String, SliceFound>, ProviderError> {
        let mut slices: HashMap<String, SliceFound> = HashMap::new();
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
        type SliceRow = (
            String,
            String,
            String,
            bool,
            Option<bool>,
            Option<String>,
            bool,
        );
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
               CASE s.isolation WHEN 'database' THEN db_mark.description WHEN 'schema' THEN ns_mark.description END,
               -- Rights through PUBLIC are in no role's `pg_shdepend` (see `reach.rs`).
               coalesce(has_schema_privilege('public', ns.nsp, 'USAGE'), false)
             FROM s LEFT JOIN ns USING (slug) LEFT JOIN tables USING (slug) LEFT JOIN dbs USING (slug)
             -- Joined rather than looked up row by row (obj_description): one pass each.
             LEFT JOIN pg_description ns_mark
               ON ns_mark.objoid = ns.nsp AND ns_mark.classoid = 'pg_namespace'::regclass AND ns_mark.objsubid = 0
             LEFT JOIN pg_shdescription db_mark
               ON db_mark.objoid = dbs.dat AND db_mark.classoid = 'pg_database'::regclass",
        ));
        let rows: Vec<SliceRow> = sqlx::query_as(&sql_5)
            .bind(slugs)
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
        for (slug, name, isolation, present, granted, comment, open) in rows {
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
                    open,
                    owner,
                },
            );
        }
        Ok(slices)
    }

    /// The migrations applied to each of the slices found (by name), by isolation and name,
    /// and the seeded tenants: the rows of the tenants refreshed only.
    async fn read_applied(
        &self,
        pool: &sqlx::PgPool,
        slugs: &[&str],
        isolations: &[&str],
        slices: &[&str],
    ) -> Result<Applied, ProviderError> {
        let mut applied: HashMap<(String, String), HashSet<String>> = HashMap::new();
        let mut seeded: HashSet<String> = HashSet::new();
        let sql_6 = self.sql(
            // By the key's leading columns, so each slice is an index lookup.
            "SELECT isolation, slice, array_agg(version) FROM {schema}.slice_migrations
             WHERE (isolation, slice) IN (SELECT * FROM unnest($1::text[], $2::text[]))
             GROUP BY isolation, slice",
        );
        let rows: Vec<(String, String, Vec<String>)> = sqlx::query_as(&sql_6)
            .bind(isolations)
            .bind(slices)
            .fetch_all(pool)
            .await
            .map_err(ProviderError::sql("read the applied migrations"))?;
        for (isolation, slice, versions) in rows {
            applied.insert((isolation, slice), versions.into_iter().collect());
        }
        let sql_7 = self.sql("SELECT slug FROM {schema}.seeds WHERE slug = ANY($1)");
        let rows: Vec<(String,)> = sqlx::query_as(&sql_7)
            .bind(slugs)
            .fetch_all(pool)
            .await
            .map_err(ProviderError::sql("read the seeds"))?;
        seeded.extend(rows.into_iter().map(|(s,)| s));
        Ok((applied, seeded))
    }
}

/// A tenant's slice as refresh finds it.
pub(super) struct SliceFound {
    name: String,
    isolation: String,
    present: bool,
    granted: bool,
    /// Its schema is one anyone may use (`PUBLIC` has `USAGE` on it).
    open: bool,
    owner: Owner,
}

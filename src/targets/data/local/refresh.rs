//! The refresh: the catalog's roles and slices in two queries (each table whole for a full
//! plan, the rows of the tenants refreshed for a plan of some), and only the 100-byte header
//! of each tenant database (`header.rs`), whatever the fleet's size.

use std::collections::HashMap;

use rayon::prelude::*;
use serde_json::json;

use crate::clients::sql::{spawn_json_of, Dialect, Pool, Statement};
use crate::clients::sqlite;
use crate::model::attrs::Attrs;
use crate::model::resource::Kind;
use crate::targets::provider::{schema_version, LiveFleet, Provider, ProviderError, RefreshTarget};

use super::{header::read_header, holdings::holdings, migrate::SEEDED, LocalData};

impl LocalData {
    pub(super) async fn refresh_fleet(
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
            let reader = Pool::Sqlite(pool.clone());
            // A plan of some tenants looks their rows up; a full plan reads each table whole.
            let (roles_of, slices_of) = match live.whole_fleet {
                true => ("", ""),
                false => (" WHERE name IN ({each $1})", " WHERE slug IN ({each $1})"),
            };
            let chosen = |statement: Statement, names: Vec<String>| match live.whole_fleet {
                true => statement,
                false => statement.list(names),
            };
            let role_rows = spawn_json_of(
                &reader,
                chosen(
                    Statement::new(
                        &Dialect::Sqlite,
                        "read roles",
                        &format!(
                            "SELECT json_group_array(json_array(name, \
                             json(CASE WHEN login THEN 'true' ELSE 'false' END), \
                             credentials_version, password_fingerprint)) FROM roles{roles_of}"
                        ),
                    ),
                    targets.iter().map(|t| self.naming.role(&t.slug)).collect(),
                ),
            );
            let slice_rows = spawn_json_of(
                &reader,
                chosen(
                    Statement::new(
                        &Dialect::Sqlite,
                        "read slices",
                        &format!(
                            "SELECT json_group_array(json_array(slug, name, isolation)) \
                             FROM slices{slices_of}"
                        ),
                    ),
                    targets.iter().map(|t| t.slug.to_string()).collect(),
                ),
            );
            let rows: Vec<(String, bool, i64, String)> = role_rows.await?.unwrap_or_default();
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
            let rows: Vec<(String, String, String)> = slice_rows.await?.unwrap_or_default();
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
}

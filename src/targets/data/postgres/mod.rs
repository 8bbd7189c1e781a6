//! Each tenant's data on the Postgres server: a login role (password derived, sent as a SCRAM
//! verifier) and an isolated slice (rows under row-level security, a schema, or a database),
//! migrated and seeded, with a catalog in the admin schema that refresh reads in a constant
//! number of queries for the whole fleet. `reach` is what a tenant's role reaches beyond its
//! slice, read for the fleet in one query and taken back.
//!
//! Identifiers are built only from checked slugs and configured prefixes (plain names,
//! checked at validate time and quoted); every value is a bound parameter.
//!
//! A file per capability: `refresh`, `apply`, `migrate` (migrations and seeds), `purge`,
//! `holdings` (what a purge would take), `export`, `smoke`, `mark` (marks of ownership) and
//! `catalog` (the tables the target keeps).
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

mod apply;
mod catalog;
mod export;
mod holdings;
mod mark;
mod migrate;
mod moves;
mod purge;
pub mod reach;
mod refresh;
mod replicate;
mod servers;
pub mod smoke;
mod smoke_catalog;
mod together;

pub use servers::PgServers;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::OnceCell;

use crate::clients::group_commit::{GroupCommit, Together, TENANTS_PER_BATCH};
use crate::clients::postgres::server::{quote, retry, PgServer};
use crate::model::attrs::Attrs;
use crate::model::change::ResourceChange;
use crate::model::migration::Migration;
use crate::model::resource::{Key, Kind};
use crate::model::tenant::{Effective, Isolation};
use crate::slug::Slug;
use crate::targets::data::Naming;
use crate::targets::provider::{
    LiveFleet, Provider, ProviderError, RefreshTarget, StepContext, TogetherFailed,
};

/// The URL a tenant's role connects with: its own database, or the admin database with its
/// schema (or the shared schema) first on the search path.
pub fn tenant_url(
    server: &PgServer,
    naming: &Naming,
    slug: &Slug,
    isolation: Isolation,
    role: &str,
    password: &str,
) -> String {
    let (host, port, admin_db) = server.address();
    // Roles, passwords (hex) and names are plain identifiers: nothing needs escaping.
    let base = format!("postgresql://{role}:{password}@{host}:{port}");
    match isolation {
        Isolation::Database => format!("{base}/{}", naming.database(slug)),
        Isolation::Schema => format!(
            "{base}/{admin_db}?options=-csearch_path%3D{}",
            naming.schema(slug)
        ),
        Isolation::Shared => format!(
            "{base}/{admin_db}?options=-csearch_path%3D{}",
            naming.shared_schema
        ),
    }
}

/// A schema-mode tenant's purge, queued to go with others' ([`PgData::purge_together`]).
struct TogetherPurge {
    slug: Slug,
    slice: Slice,
    /// This state's mark for the tenant: what its schema and role must carry.
    mark: crate::targets::provider::Mark,
}

pub struct PgData {
    server: Arc<PgServer>,
    naming: Naming,
    migrations: Vec<Migration>,
    schema: String,
    catalog_ready: OnceCell<()>,
    /// Whether the admin is a superuser, who may read the roles' verifiers.
    superuser: OnceCell<bool>,
    /// Set once this run has taken from `PUBLIC` what it must not hold (`reach::confine_new`).
    public_closed: OnceCell<()>,
    /// The admin database's schemas anyone may use, once read (`PgData::public_schemas`).
    public_schemas: OnceCell<Vec<i64>>,
    shared_ready: OnceCell<()>,
    /// Schemas and roles dropped together, two batches at once (one per purge wave under
    /// way): the drops of different tenants wait on nothing of each other's, so one batch's
    /// drops go while the other's commit waits on the disk (`bench/purge.sh 1000`: 1.6 s
    /// against 2.0 s one batch at a time).
    purges: GroupCommit<TogetherPurge, Together<()>>,
    /// Roles this process has just made, whose slice is not made yet: such a role holds
    /// nothing beyond its slice (it was made without attributes, memberships or rights), so
    /// its slice's step does not look for what it reaches. Taken out by that step, so a
    /// long-lived process (`watch`) looks again on every later apply.
    made_roles: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Roles this process brought to their plan with their login held, and committed: the
    /// opening of such a role's login right after its tenant's move to active changes
    /// nothing else, so it is that one statement (`PgData::open_settled`). Taken out by it.
    held_roles: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The other slices of each mode the smoke tests try to reach, and when they were read
    /// (`PgData::other_slices`).
    others: std::sync::Mutex<std::collections::BTreeMap<Isolation, OtherSlices>>,
}

/// Other tenants' slices (slug, name, tenant id), and when they were read.
type OtherSlices = (std::time::Instant, Vec<(String, String, String)>);

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

/// The lock a tenant's role is made and changed under.
fn role_lock(name: &str) -> String {
    format!("tenant-reconcile/role/{name}")
}

/// The lock a shared or schema tenant's seed is written under: two runs never seed it twice.
fn seed_lock(slug: &Slug) -> String {
    format!("tenant-reconcile/seed/{slug}")
}

impl Slice {
    /// The lock a slice is changed under: concurrent GRANTs on the same tables (shared
    /// tenants applied in parallel) fail with "tuple concurrently updated", and two runs
    /// never make or migrate one slice at once.
    fn lock(&self) -> String {
        format!(
            "tenant-reconcile/slice/{}/{}",
            self.isolation.as_str(),
            self.name
        )
    }
}

impl PgData {
    pub fn new(server: Arc<PgServer>, migrations: Vec<Migration>, naming: Naming) -> PgData {
        PgData {
            schema: server.schema(),
            server,
            naming,
            migrations,
            catalog_ready: OnceCell::new(),
            superuser: OnceCell::new(),
            public_closed: OnceCell::new(),
            public_schemas: OnceCell::new(),
            shared_ready: OnceCell::new(),
            purges: GroupCommit::with_limit(TENANTS_PER_BATCH).writers(2),
            made_roles: Default::default(),
            held_roles: Default::default(),
            others: Default::default(),
        }
    }

    /// Whether the admin is a superuser: as the run's refresh found it, or asked once.
    /// Asked through the pool, so never while holding one of its connections: with every
    /// connection held by a step waiting for this answer, none would be left to ask with.
    async fn superuser(&self) -> Result<bool, ProviderError> {
        self.superuser
            .get_or_try_init(|| async {
                let (superuser,): (bool,) =
                    sqlx::query_as("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                        .fetch_one(self.server.pool().await?)
                        .await
                        .map_err(ProviderError::sql("read whether the admin is a superuser"))?;
                Ok(superuser)
            })
            .await
            .copied()
    }

    /// What a role made just now reaches beyond its slice: only what every role holds
    /// through `PUBLIC`, the same for every tenant, so it is looked at (and taken away) once
    /// a run, not once a tenant; the next run's refresh looks again. Asked through the pool,
    /// like [`PgData::superuser`].
    async fn confine_new(&self) -> Result<(), ProviderError> {
        self.public_closed
            .get_or_try_init(|| reach::confine_new(&self.server))
            .await
            .map(drop)
    }

    /// The admin database's schemas `PUBLIC` may use (the system's left out), by oid: the
    /// same for every tenant, so read once a run, for the smoke tests to look in beside the
    /// schemas each role holds rights on. A tenant's own schema is never among them: its
    /// smoke test fails when `PUBLIC` may use it. Asked through the pool, like
    /// [`PgData::superuser`].
    async fn public_schemas(&self) -> Result<&[i64], ProviderError> {
        self.public_schemas
            .get_or_try_init(|| async {
                sqlx::query_scalar(&format!(
                    "SELECT n.oid::int8 FROM pg_namespace n
                     WHERE {} AND has_schema_privilege('public', n.oid, 'USAGE')",
                    crate::clients::postgres::NOT_SYSTEM_SCHEMA
                ))
                .fetch_all(self.server.pool().await?)
                .await
                .map_err(ProviderError::sql("read the schemas anyone may use"))
            })
            .await
            .map(Vec::as_slice)
    }

    fn sql(&self, sql: &str) -> String {
        sql.replace("{schema}", &self.schema)
            .replace("{shared}", &quote(&self.naming.shared_schema))
            .replace("{group}", &quote(&self.naming.shared_group()))
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

    /// A connection to the database `slice` is in here: its own, or the admin one.
    async fn connect_slice(&self, slice: &Slice) -> Result<sqlx::PgConnection, ProviderError> {
        match slice.isolation {
            Isolation::Database => self.server.connect_to(&slice.name).await,
            _ => self.server.connect().await,
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

    fn marks_after_create(&self, change: &ResourceChange) -> bool {
        // A database slice is commented on after CREATE DATABASE, which no transaction
        // holds; roles and schemas are marked in the transaction that creates them, and a
        // shared tenant's slice is rows.
        change.key.kind == Kind::DATABASE
            && change
                .desired
                .as_ref()
                .is_some_and(|d| d.attrs.str("isolation") == Isolation::Database.as_str())
    }
    async fn refresh(
        &self,
        targets: &[RefreshTarget],
        live: &mut LiveFleet,
    ) -> Result<(), ProviderError> {
        self.refresh_fleet(targets, live).await
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

    fn joins(&self, tenant: &Effective, first: &ResourceChange, next: &ResourceChange) -> bool {
        together::joins(tenant, first, next)
    }

    async fn apply_together(
        &self,
        ctx: &StepContext<'_>,
        changes: &[ResourceChange],
    ) -> Result<Vec<Attrs>, TogetherFailed> {
        retry!("data", self.together_once(ctx, changes))
    }

    crate::targets::provider::capabilities!(Export, Purge, Smoke);
}

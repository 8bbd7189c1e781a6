//! The seam targets plug into.
//!
//! A [`Provider`] owns some kinds of resource (the local data target owns `role`, `database`
//! and `seed`). It reads the live state of the whole fleet in one `refresh` call, so a
//! target can use a constant number of queries instead of one per tenant, and it applies
//! one resource change at a time.
//!
//! # Guarantees every `apply` must give
//! - It is idempotent: it checks what exists before it creates, so running it again after
//!   a crash (at any point, even after it committed but before the state recorded it) ends
//!   in the same place with nothing duplicated.
//! - It returns the attributes as they now are, which the executor records at once.
//! - It never logs or returns a secret.
//!
//! The [`ControlPlane`] additionally keeps each tenant's lifecycle and current step, and
//! writes lifecycle events to the outbox in the same transaction as the change they report.

pub use crate::clients::error::ProviderError;
pub use crate::model::count::thousands;

use std::collections::HashMap;
use std::path::Path;

use async_trait::async_trait;

use crate::credentials::MasterKey;
use crate::model::attrs::Attrs;
use crate::model::change::{Action, ResourceChange};
use crate::model::lifecycle::Lifecycle;
use crate::model::migration::Migration;
use crate::model::resource::{Key, Kind, Resource};
use crate::model::tenant::Effective;
use crate::slug::Slug;

/// One tenant to refresh: its slug, its id if known, and the keys wanted (desired or
/// recorded), so named resources such as files can be found without listing folders.
#[derive(Debug, Clone)]
pub struct RefreshTarget {
    pub slug: Slug,
    /// The region its file names (a DNS record's name may hold it).
    pub region: String,
    pub tenant_id: Option<String>,
    pub keys: Vec<Key>,
    /// The bucket the tenant should have, then the one recorded if it differs (a renamed
    /// bucket is replaced and the old one is kept, so both are looked at).
    pub buckets: Vec<String>,
    /// The isolation its file asks for, so a data target can look for a slice of that
    /// name that exists before this state ever made one.
    pub isolation: crate::model::tenant::Isolation,
    /// Some resource it will want is not recorded in the state (a new tenant, a new
    /// template), so only its mark can say whether what exists is ours. A target whose
    /// marks cost a read each (rendered files) reads them only then.
    pub unclaimed: bool,
    /// Its purge is due (or under way): the plan shows what each resource holds, which a
    /// target counts for these tenants only, and the exporter checks its export.
    pub purge: bool,
    /// With `purge`: what its replaces and moves left behind, which the purge destroys too;
    /// without, the copies moves left whose hold is over, which the plan removes. A target
    /// may count what each holds (`LiveFleet::holds_at` under its address key).
    pub retired: Vec<crate::model::retired::Retired>,
    /// The Postgres server its data is on (or is to be placed on by this plan), when the
    /// config names several; `None` when it has none yet, and nothing of its data exists.
    pub server: Option<String>,
    /// The server this plan moves its data to, when it moves: a target may say what the
    /// move takes (`LiveFleet::holds_at` under the placement's key).
    pub moving_to: Option<String>,
}

/// The targets that want a resource of `kind` (desired or recorded): what a target with one
/// kind of its own refreshes, and nothing at all when there are none.
pub fn wanting(targets: &[RefreshTarget], kind: Kind) -> Vec<&RefreshTarget> {
    let key = Key::new(kind);
    targets.iter().filter(|t| t.keys.contains(&key)).collect()
}

/// What a live resource looks like now.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveResource {
    pub attrs: Attrs,
    /// Where the body text is, for resources compared by content (rendered files). It is
    /// read only when a plan shows a diff, so a fleet's files are not all held at once.
    pub content_at: Option<Box<Path>>,
    /// Whose the resource says it is, for kinds global on their server (roles, schemas,
    /// databases, buckets, rendered files).
    pub owner: Owner,
}

/// The mark of ownership everything global that tenant-reconcile creates carries: a
/// comment on a role, schema or database, a bucket tag, a file beside rendered files. It
/// names the state by its name, for people, and its lineage, which tells two states of the
/// same name (every environment's default) apart, and the tenant it was made for by its id:
/// a slug is a name that can come back (released, then given to a new file), and what the
/// state made for the tenant that had it is not the new one's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub state: String,
    pub lineage: String,
    /// The tenant's id; none on a mark written before marks named tenants, or by a run that
    /// has no registry row yet.
    pub tenant: Option<String>,
}

const MARK_PREFIX: &str = "tenant-reconcile state=";

impl Mark {
    /// The mark as written on a resource. The state's name was checked to be plain
    /// (`[A-Za-z0-9._-]`), and the lineage and tenant id are UUIDs, so it needs no quoting
    /// anywhere.
    pub fn text(&self) -> String {
        match &self.tenant {
            Some(id) => format!(
                "{MARK_PREFIX}{} lineage={} tenant={id}",
                self.state, self.lineage
            ),
            None => format!("{MARK_PREFIX}{} lineage={}", self.state, self.lineage),
        }
    }

    /// A mark read back; `None` for any other text (a comment someone else wrote).
    pub fn parse(text: &str) -> Option<Mark> {
        let rest = text.trim().strip_prefix(MARK_PREFIX)?;
        let (state, rest) = rest.split_once(" lineage=")?;
        let (lineage, tenant) = match rest.split_once(" tenant=") {
            Some((lineage, tenant)) => (lineage, Some(tenant)),
            None => (rest, None),
        };
        let plain = |s: &str| !s.is_empty() && !s.contains(' ');
        (!state.is_empty() && plain(lineage) && tenant.is_none_or(plain)).then(|| Mark {
            state: state.to_string(),
            lineage: lineage.to_string(),
            tenant: tenant.map(str::to_string),
        })
    }

    /// This run's mark for one tenant, once it has an id.
    pub fn for_tenant(&self, tenant_id: Option<&str>) -> Mark {
        Mark {
            tenant: tenant_id.map(str::to_string),
            ..self.clone()
        }
    }

    /// Whether a resource marked `found` is this tenant's, in this state: the same lineage,
    /// and the same tenant where the mark names one (a mark from before marks named tenants
    /// is taken by its lineage alone).
    pub fn claims(&self, found: &Mark) -> bool {
        found.lineage == self.lineage
            && found
                .tenant
                .as_ref()
                .is_none_or(|t| self.tenant.as_ref() == Some(t))
    }
}

/// Whose a live resource is, as its mark says.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Owner {
    /// A kind that carries no mark: rows keyed by the tenant in the control plane, or
    /// resources inside the local target's own folder.
    #[default]
    Untracked,
    /// No mark, or a comment or tag that is not one: made by hand, or by another tool.
    Unmarked,
    Marked(Box<Mark>),
}

impl Owner {
    /// Whether a step carrying `mark` may change or destroy a resource it finds with this
    /// owner (creating one is [`check_ours`]'s to judge): not when another state's mark or
    /// another tenant's is on it.
    pub fn lets_change(&self, mark: &Mark) -> bool {
        match self {
            Owner::Marked(found) => mark.claims(found),
            Owner::Unmarked | Owner::Untracked => true,
        }
    }

    /// What a comment or tag says: a mark, or nothing that is one.
    pub fn from_text(text: Option<&str>) -> Owner {
        match text.and_then(Mark::parse) {
            Some(m) => Owner::Marked(Box::new(m)),
            None => Owner::Unmarked,
        }
    }
}

impl LiveResource {
    /// The body text, read now.
    pub fn content(&self) -> Option<String> {
        std::fs::read_to_string(self.content_at.as_deref()?).ok()
    }
}

/// What a target counted in a resource a purge is to destroy.
#[derive(Debug, Clone, PartialEq)]
pub struct Holding {
    pub key: Key,
    /// What it is, when the target names it better than its attributes do.
    pub resource: Option<String>,
    /// `2 tables, 1,204 rows`.
    pub holds: String,
}

/// A tenant's row in the live registry.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveTenant {
    pub tenant_id: String,
    pub lifecycle: Lifecycle,
    pub step: Option<String>,
}

/// The live state of the fleet as read by every provider's `refresh`. A resource that is
/// not here does not exist.
#[derive(Debug, Default)]
pub struct LiveFleet {
    pub tenants: HashMap<Slug, LiveTenant>,
    /// What each provider found, kept apart. Providers own disjoint kinds, so a lookup goes
    /// straight to the one part that holds its kind, and a refresh never merges 10,000
    /// tenants' findings into one map (which was most of its single-threaded time).
    parts: Vec<Part>,
    /// Round trips each provider made, reported by benchmarks.
    pub calls: Vec<(&'static str, usize)>,
    /// Set before a provider's refresh: whether its targets are every tenant with a file (a
    /// full plan), whose rows a provider reads table by table, or some (a plan of some
    /// tenants), whose rows it looks up by their keys. Either way the same statements are
    /// sent; at 10,000 tenants the lookups cost a whole read a tenth more.
    pub whole_fleet: bool,
    /// What each resource of a tenant about to be purged holds (`2 tables, 1,204 rows`),
    /// as the target that counted it says.
    pub holdings: HashMap<Slug, Vec<Holding>>,
    /// Tenants whose export does not verify against its manifest, and why: they are not
    /// purged.
    pub unverified: HashMap<Slug, String>,
}

#[derive(Debug, Default)]
struct Part {
    /// The kinds this part holds, one bit per [`Kind`] rank.
    kinds: u128,
    /// Per tenant, so a plan looks resources up without building a key for each; a
    /// tenant's few resources sorted by key in a vector, which is a fraction of a map's size.
    resources: HashMap<Slug, Vec<(Key, LiveResource)>>,
}

fn bit(kind: Kind) -> u128 {
    1 << kind.rank()
}

impl LiveFleet {
    pub fn insert(&mut self, slug: &Slug, key: Key, resource: LiveResource) {
        let part = match self.parts.iter().position(|p| p.kinds & bit(key.kind) != 0) {
            Some(i) => &mut self.parts[i],
            None => {
                if self.parts.is_empty() {
                    self.parts.push(Part::default());
                }
                let part = &mut self.parts[0];
                part.kinds |= bit(key.kind);
                part
            }
        };
        match part.resources.get_mut(slug) {
            Some(m) => match position(m, &key) {
                Ok(i) => m[i].1 = resource,
                Err(i) => m.insert(i, (key, resource)),
            },
            None => {
                part.resources.insert(slug.clone(), vec![(key, resource)]);
            }
        }
    }

    /// Adds what another part of one provider found about other tenants (another server's
    /// tenants): its resources join this one's single part, whatever kinds each found (a
    /// server whose tenants all lack a role found no role at all), so a lookup of any kind
    /// finds every tenant's in that one part.
    pub fn absorb_alike(&mut self, other: LiveFleet) {
        for part in other.parts {
            match self.parts.first_mut() {
                Some(one) => {
                    one.kinds |= part.kinds;
                    one.resources.extend(part.resources);
                }
                None => self.parts.push(part),
            }
        }
        self.tenants.extend(other.tenants);
        self.calls.extend(other.calls);
        for (slug, found) in other.holdings {
            self.holdings.entry(slug).or_default().extend(found);
        }
        self.unverified.extend(other.unverified);
    }

    /// Adds what another provider found. Providers own disjoint kinds, so nothing clashes.
    pub fn absorb(&mut self, other: LiveFleet) {
        self.tenants.extend(other.tenants);
        self.calls.extend(other.calls);
        self.parts.extend(other.parts);
        for (slug, found) in other.holdings {
            self.holdings.entry(slug).or_default().extend(found);
        }
        self.unverified.extend(other.unverified);
    }

    /// Records what a resource of a tenant about to be purged holds.
    pub fn holds(&mut self, slug: &Slug, kind: Kind, what: String) {
        self.holdings
            .entry(slug.clone())
            .or_default()
            .push(Holding {
                key: Key::new(kind),
                resource: None,
                holds: what,
            });
    }

    /// Records what a resource of a tenant about to be purged is, where its target knows
    /// better than its attributes say (the local target keeps every slice as a file), and
    /// what it holds.
    pub fn holds_as(&mut self, slug: &Slug, kind: Kind, resource: String, what: String) {
        self.holdings
            .entry(slug.clone())
            .or_default()
            .push(Holding {
                key: Key::new(kind),
                resource: Some(resource),
                holds: what,
            });
    }

    /// Records what a resource of a tenant about to be purged holds, under `key` (a retired
    /// one's address key).
    pub fn holds_at(&mut self, slug: &Slug, key: Key, what: String) {
        self.holdings
            .entry(slug.clone())
            .or_default()
            .push(Holding {
                key,
                resource: None,
                holds: what,
            });
    }

    /// What a resource of a tenant about to be purged holds, if its target counted it.
    pub fn holding(&self, slug: &Slug, key: &Key) -> Option<&Holding> {
        self.holdings.get(slug)?.iter().find(|h| &h.key == key)
    }

    /// Records a resource compared by its attributes alone, carrying `owner`'s mark.
    pub fn insert_owned(&mut self, slug: &Slug, kind: Kind, attrs: Attrs, owner: Owner) {
        self.insert(
            slug,
            Key::new(kind),
            LiveResource {
                attrs,
                content_at: None,
                owner,
            },
        );
    }

    /// Records a resource compared by its attributes alone (no body text), of a kind that
    /// carries no mark.
    pub fn insert_attrs(&mut self, slug: &Slug, kind: Kind, attrs: Attrs) {
        self.insert_owned(slug, kind, attrs, Owner::Untracked);
    }

    pub fn get(&self, slug: &Slug, key: &Key) -> Option<&LiveResource> {
        let part = self.parts.iter().find(|p| p.kinds & bit(key.kind) != 0)?;
        let m = part.resources.get(slug)?;
        position(m, key).ok().map(|i| &m[i].1)
    }

    pub fn contains(&self, slug: &Slug, key: &Key) -> bool {
        self.get(slug, key).is_some()
    }

    /// Every resource refresh found of one tenant, in no set order.
    pub fn resources_of<'a>(
        &'a self,
        slug: &'a Slug,
    ) -> impl Iterator<Item = (&'a Key, &'a LiveResource)> + 'a {
        self.parts
            .iter()
            .filter_map(move |p| p.resources.get(slug))
            .flat_map(|found| found.iter().map(|(k, r)| (k, r)))
    }
}

/// Where `key` is in a tenant's sorted resources, or where it would go.
fn position(resources: &[(Key, LiveResource)], key: &Key) -> Result<usize, usize> {
    resources.binary_search_by(|(k, _)| k.cmp(key))
}

/// How a slice's migrations read in a plan: the id of the last one applied, counting the
/// repo's migrations in order up to the first one missing.
pub fn schema_version(migrations: &[Migration], applied: usize) -> serde_json::Value {
    match applied {
        0 => serde_json::json!(""),
        n => match migrations.get(n - 1) {
            Some(m) => serde_json::json!(m.id()),
            None => serde_json::json!(format!("{n} migrations (more than the repo has)")),
        },
    }
}

/// How many of `migrations` (the repo's, in order) a slice is to have: up to the one its
/// desired `schema_version` names. A tenant a rollout has not reached yet is compiled from
/// the shared inputs it runs on, whose migrations end earlier; one whose desired version the
/// repo does not list (none is) gets them all.
pub fn wanted_migrations(migrations: &[Migration], desired: &Attrs) -> usize {
    match desired.get("schema_version").and_then(|v| v.as_str()) {
        Some("") => 0,
        Some(id) => migrations
            .iter()
            .position(|m| m.id() == id)
            .map_or(migrations.len(), |at| at + 1),
        None => migrations.len(),
    }
}

/// What a slice holds, as a purge's plan line says it: `2 tables, 1,204 rows`.
pub fn tables_and_rows(tables: usize, rows: u64) -> String {
    format!(
        "{} table{}, {} row{}",
        tables,
        if tables == 1 { "" } else { "s" },
        thousands(rows),
        if rows == 1 { "" } else { "s" }
    )
}

/// What a bucket holds: `3 objects, 12,345 bytes`, with the older versions and delete
/// markers a versioned bucket keeps besides.
pub fn objects_and_bytes(objects: u64, bytes: u64, older: u64, markers: u64) -> String {
    let mut out = format!(
        "{} object{}, {} byte{}",
        thousands(objects),
        if objects == 1 { "" } else { "s" },
        thousands(bytes),
        if bytes == 1 { "" } else { "s" }
    );
    if older > 0 || markers > 0 {
        out += &format!(
            " (and {} older version{}, {} delete marker{})",
            thousands(older),
            if older == 1 { "" } else { "s" },
            thousands(markers),
            if markers == 1 { "" } else { "s" }
        );
    }
    out
}

/// The resource `change` asks for. Tenant resources are never deleted by a provider (a
/// tenant is never destroyed because its file is gone), so a change without one is refused.
pub fn desired_of(change: &ResourceChange) -> Result<&Resource, ProviderError> {
    change
        .desired
        .as_ref()
        .ok_or_else(|| ProviderError::Unplanned(format!("{} cannot be deleted", change.key)))
}

/// Refuses to take over `resource`, which exists with `owner`, unless it is this state's:
/// marked with its lineage, imported by the plan, or an unmarked one that the step does
/// not create (a recorded resource from before marks were written) or that an earlier run
/// claimed. The plan shows such a resource as a conflict already; this catches one made
/// since (or a saved plan applied later), as close to the change as the target allows.
pub fn check_ours(
    ctx: &StepContext<'_>,
    change: &ResourceChange,
    resource: &str,
    owner: &Owner,
) -> Result<(), ProviderError> {
    let creates = matches!(change.action, Action::Create | Action::Replace);
    let ok = match owner {
        Owner::Unmarked if creates => ctx.claimed,
        _ => owner.lets_change(&ctx.mark),
    };
    if ok || change.action == Action::Import {
        return Ok(());
    }
    Err(ProviderError::NotOurs(match owner {
        Owner::Marked(m) if m.lineage == ctx.mark.lineage => format!(
            "{resource} was made by this state for another tenant (id {}); it was left as it is",
            m.tenant.as_deref().unwrap_or("?")
        ),
        Owner::Marked(m) => format!(
            "{resource} exists and is managed by another state, {:?}; it was left as it is",
            m.state
        ),
        _ => format!(
            "{resource} exists and is not managed by this state (state {:?}); it was left as it is\n  hint: adopt it with `plan --import {}`",
            ctx.mark.state, ctx.tenant.slug
        ),
    }))
}

/// The change a purge of `key` is, for [`check_ours`]: a delete, which claims nothing.
pub fn purge_change(key: &Key) -> ResourceChange {
    ResourceChange::delete(key.clone(), None)
}

/// The seed rows a seed change carries. A plan fills them in for every tenant it seeds; one
/// without them is refused rather than read as "no rows", which would mark the tenant
/// seeded with nothing in it.
pub fn seed_rows_of(seed: &Resource) -> Result<&str, ProviderError> {
    seed.content.as_deref().ok_or_else(|| {
        ProviderError::Unplanned("the plan carries no seed rows for this tenant".into())
    })
}

/// The error for a change routed to a provider that does not own its kind.
pub fn unmanaged(provider: &dyn Provider, kind: Kind) -> ProviderError {
    ProviderError::Unplanned(format!("{} does not manage {kind:?}", provider.name()))
}

/// What a step knows about the tenant it works on.
pub struct StepContext<'a> {
    pub tenant: &'a Effective,
    /// Known once the registry row exists.
    pub tenant_id: Option<&'a str>,
    pub lifecycle: Lifecycle,
    pub credentials_version: u32,
    pub key: &'a MasterKey,
    /// The mark of ownership to write on what the step creates or imports: this state's,
    /// naming the tenant by its id.
    pub mark: Mark,
    /// Recorded when this state adopted the tenant: its passwords derive from it too.
    pub incarnation: Option<&'a str>,
    /// An earlier run recorded its intent to create this resource and stopped before it was
    /// recorded: finding it unmarked, the step knows it as its own.
    pub claimed: bool,
    /// The tenant's resources as recorded so far: where its slice and bucket are.
    pub recorded: &'a std::collections::BTreeMap<Key, Attrs>,
    /// What replaces left behind and kept: an export includes them.
    pub retired: &'a [crate::model::retired::Retired],
}

impl StepContext<'_> {
    /// Whether the tenant's database login is open in this step: what its file asks
    /// (`desired`'s `login`), once it is active. Until then it is held: the role exists
    /// without LOGIN while the tenant is provisioning or being resumed, its smoke tests run
    /// as the role from the admin's session, and the executor applies the role again right
    /// after the lifecycle moves to active (`Executor::open_login`). So a tenant whose
    /// smoke test or gating hook failed, or whose apply was killed, cannot log in.
    pub fn login_opens(&self, desired: &Attrs) -> bool {
        self.lifecycle == Lifecycle::Active
            && desired
                .get("login")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false)
    }

    pub fn tenant_id(&self) -> Result<&str, ProviderError> {
        self.tenant_id
            .ok_or_else(|| ProviderError::Unplanned("the tenant has no registry row yet".into()))
    }

    /// The password of the tenant's login `role` (derived, never stored).
    pub fn password(&self, role: &str) -> Result<String, ProviderError> {
        Ok(self.key.password(
            self.tenant_id()?,
            self.incarnation,
            role,
            self.credentials_version,
        ))
    }
}

/// What an export of one tenant works from.
pub struct ExportRequest<'a> {
    pub slug: &'a Slug,
    pub tenant_id: &'a str,
    /// The tenant's resources as the state recorded them: where its slice and bucket are
    /// now (a file may already ask for another isolation mode).
    pub recorded: &'a std::collections::BTreeMap<Key, Attrs>,
    pub sink: &'a crate::export::sink::ExportSink,
}

#[async_trait]
pub trait Provider: Send + Sync {
    fn name(&self) -> &'static str;
    fn kinds(&self) -> &'static [Kind];
    /// Whether a change to `field` of a `kind` resource needs the resource replaced.
    fn forces_replace(&self, _kind: Kind, _field: &str) -> bool {
        false
    }
    /// Whether a replace of a `kind` resource leaves the old one where it is, with what it
    /// holds (a slice, a bucket, a vhost): the state then keeps it as retired until the
    /// tenant's purge. A target whose replace removes the old one (a DNS record moves)
    /// says no.
    fn replace_keeps_old(&self, _kind: Kind) -> bool {
        true
    }
    /// Whether creating the resource `change` makes and marking it ours are two calls
    /// (CREATE DATABASE cannot run in a transaction; CreateBucket then PutBucketTagging).
    /// The executor then records its intent first, so a run killed in between still knows
    /// the unmarked resource is its own.
    fn marks_after_create(&self, _change: &ResourceChange) -> bool {
        false
    }
    async fn refresh(
        &self,
        targets: &[RefreshTarget],
        live: &mut LiveFleet,
    ) -> Result<(), ProviderError>;
    /// Brings one resource to what `change` asks for and returns its attributes now.
    async fn apply(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError>;
    /// Whether `next`, which follows `first` in the tenant's plan (both this target's, and
    /// neither a purge), is brought about in the same call as `first` and those between
    /// them ([`Provider::apply_together`]): one transaction, one step of the tenant's and
    /// one checkpoint, where each on its own would cost one of each.
    fn joins(&self, _tenant: &Effective, _first: &ResourceChange, _next: &ResourceChange) -> bool {
        false
    }
    /// Brings the resources [`Provider::joins`] put together to what `changes` ask, in one
    /// transaction: all of them, or none. Returns each one's attributes, in order.
    async fn apply_together(
        &self,
        _ctx: &StepContext<'_>,
        changes: &[ResourceChange],
    ) -> Result<Vec<Attrs>, TogetherFailed> {
        Err(TogetherFailed {
            at: 0,
            error: ProviderError::Unplanned(format!(
                "{} makes no {} changes together",
                self.name(),
                changes.len()
            )),
        })
    }
    /// What this target can purge, if anything: a plan that would purge one of its kinds
    /// without it is refused for that tenant when it is made, never half-way through.
    /// Whether it reaches anything: `false` for the owner of a kind whose slot the config
    /// names `none` (`Unconfigured`), which can neither read, export nor purge what it owns.
    fn reachable(&self) -> bool {
        true
    }
    fn as_purge(&self) -> Option<&dyn Purge> {
        None
    }
    /// What this target can export of a tenant, if it holds any of its data.
    fn as_export(&self) -> Option<&dyn Export> {
        None
    }
    /// The built-in smoke tests of this target, if it has any.
    fn as_smoke(&self) -> Option<&dyn Smoke> {
        None
    }
    /// Where tenants are placed, for the target that places them on several servers.
    fn as_placements(&self) -> Option<&dyn Placements> {
        None
    }
}

/// A target's answer to [`Provider`]'s `as_*` methods for the capabilities it has, written
/// inside its `impl Provider`: `capabilities!(Export, Purge, Smoke);`. The ones it leaves
/// out keep the default, `None`.
macro_rules! capabilities {
    ($($capability:ident),+ $(,)?) => {
        $($crate::targets::provider::capabilities!(@as $capability);)+
    };
    (@as Export) => {
        fn as_export(&self) -> Option<&dyn $crate::targets::provider::Export> {
            Some(self)
        }
    };
    (@as Purge) => {
        fn as_purge(&self) -> Option<&dyn $crate::targets::provider::Purge> {
            Some(self)
        }
    };
    (@as Smoke) => {
        fn as_smoke(&self) -> Option<&dyn $crate::targets::provider::Smoke> {
            Some(self)
        }
    };
    (@as Placements) => {
        fn as_placements(&self) -> Option<&dyn $crate::targets::provider::Placements> {
            Some(self)
        }
    };
}
pub(crate) use capabilities;

/// A target that can destroy what it holds of a tenant, for good: the purge of an offboarding.
#[async_trait]
pub trait Purge: Send + Sync {
    /// Destroys, for good, what the tenant has of `key` in this target, where
    /// `ctx.recorded` says it is: a purge that the plan showed, after the tenant's export.
    /// Idempotent: what is gone already is done. A resource that is not this state's is
    /// refused ([`check_ours`]), never destroyed.
    async fn purge(&self, ctx: &StepContext<'_>, key: &Key) -> Result<(), ProviderError>;
    /// Destroys `keys` (the tenant's, in the purge's order) as [`Purge::purge`] does each;
    /// a target that can destroys them in fewer transactions.
    async fn purge_all(&self, ctx: &StepContext<'_>, keys: &[Key]) -> Result<(), ProviderError> {
        for key in keys {
            self.purge(ctx, key).await?;
        }
        Ok(())
    }
    /// Whether each tenant's purge is a call of its own to a service elsewhere (S3,
    /// RabbitMQ, Route53): a purge wave makes at most `--parallelism` of those at once.
    /// `false` where calls made at the same moment go as one (a group commit) or never
    /// leave the machine: the wave then makes them all at once.
    fn remote_per_tenant(&self) -> bool {
        true
    }
}

/// A target that holds some of a tenant's data and writes it into an export.
#[async_trait]
pub trait Export: Send + Sync {
    /// Writes what the tenant keeps in this target into `req.sink` (tables as CSV, objects
    /// as files), streaming. A target holding none of its data writes nothing.
    async fn export(&self, req: &ExportRequest<'_>) -> Result<(), ProviderError>;
}

/// A target that places tenants on one of several servers (its `placement` resources).
#[async_trait]
pub trait Placements: Send + Sync {
    /// The tenants placed on each server, by the server's name, as its catalog counts them.
    async fn loads(&self) -> Result<Vec<(String, u32)>, ProviderError>;
}

/// A target with built-in smoke tests of what it holds of a tenant.
#[async_trait]
pub trait Smoke: Send + Sync {
    /// The built-in smoke tests of what this target holds of the tenant, where
    /// `ctx.recorded` says it is, and, for the data target, the declared `sql` checks run as
    /// the tenant's own role. A check never changes the tenant's data (writes are rolled
    /// back) and its message never holds a secret.
    async fn smoke(
        &self,
        ctx: &StepContext<'_>,
        sql: &[&crate::model::checks::CheckSpec],
    ) -> Vec<crate::model::health::CheckOutcome>;
}

/// The outbox relay's side of a control plane (`delivery`): the deliveries it keeps of its
/// outbox's events, and every attempt.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Records the subscribers (name, `history`) not seen before. A new one is given the
    /// events written from now on, or with `history` every event the outbox keeps; one
    /// seen before is left as it is.
    async fn register_subscribers(
        &self,
        subscribers: &[(String, bool)],
    ) -> Result<(), ProviderError>;
    /// Makes the deliveries of the events `subscribers` (name, event types; registered)
    /// have not been given yet, and returns those due at `now`: per tenant and subscriber only
    /// the oldest one not yet delivered or dead, at most `limit`, oldest first.
    async fn due_deliveries(
        &self,
        subscribers: &[(String, Vec<String>)],
        now: std::time::SystemTime,
        limit: usize,
    ) -> Result<Vec<crate::model::outbox::Due>, ProviderError>;
    /// Records one attempt of a delivery and what the delivery is now.
    async fn record_delivery(
        &self,
        attempt: &crate::model::outbox::Attempt,
    ) -> Result<(), ProviderError>;
    /// The deliveries `filter` asks for, oldest event first.
    async fn deliveries(
        &self,
        filter: &crate::model::outbox::Filter,
    ) -> Result<Vec<crate::model::outbox::Row>, ProviderError>;
    /// Every attempt of the deliveries of one event, oldest first.
    async fn delivery_attempts(
        &self,
        event_id: &str,
    ) -> Result<Vec<crate::model::outbox::AttemptRow>, ProviderError>;
    /// Makes the deliveries of these events due again now (dead or delivered ones too), and
    /// returns how many there were.
    async fn redeliver(&self, event_ids: &[String]) -> Result<usize, ProviderError>;
    /// Removes the events delivered to every subscriber before `cutoff`, with their
    /// deliveries and attempts; returns how many events.
    async fn prune_deliveries(&self, cutoff: std::time::SystemTime)
        -> Result<usize, ProviderError>;
    /// Enables a subscriber a `410 Gone` disabled; whether it was disabled.
    async fn enable_subscriber(&self, name: &str) -> Result<bool, ProviderError>;
}

/// What [`ControlPlane::end_purge`] does: each part may be empty.
#[derive(Default)]
pub struct PurgeEnd<'a> {
    /// The control plane's own resources of the tenant to delete (owner, features, quotas).
    pub rows: &'a [Key],
    /// The addresses whose audit rows are completed.
    pub audited: &'a [String],
    /// The registry row's change to a tombstone.
    pub tombstone: Option<&'a ResourceChange>,
    /// The lifecycle the tenant moves to, with its events.
    pub to: Option<Lifecycle>,
}

/// One of several changes made together failed, and none of them was made: which one
/// (its index), and why.
#[derive(Debug)]
pub struct TogetherFailed {
    pub at: usize,
    pub error: ProviderError,
}

impl TogetherFailed {
    /// Whether trying all of them again may succeed.
    pub fn is_transient(&self) -> bool {
        self.error.is_transient()
    }
}

/// Said as the failed change's error: the caller names the change.
impl std::fmt::Display for TogetherFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for TogetherFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

#[async_trait]
pub trait ControlPlane: Provider + Outbox + Purge {
    /// Creates the tenant's registry row if there is none, in `provisioning`, and returns
    /// the tenant's id (the existing one when the row was already there).
    async fn register(&self, ctx: &StepContext<'_>, attrs: &Attrs)
        -> Result<String, ProviderError>;
    /// Makes the current step visible on the registry row while provisioning.
    async fn set_step(&self, tenant_id: &str, step: Option<&str>) -> Result<(), ProviderError>;
    /// Moves the tenant to `to`, writing the matching events to the outbox in the same
    /// transaction. Does nothing when the tenant is already there. Moving to
    /// `deprovisioned` leaves the registry row as a tombstone: the owner's email is erased
    /// from the tenant's events too.
    async fn transition(&self, ctx: &StepContext<'_>, to: Lifecycle) -> Result<(), ProviderError>;
    /// Records that the resources of `entries` (one tenant's) are about to be purged, each
    /// once: a row that is there already (a run stopped after writing it) is kept as it
    /// was. The registry row's step shows the purge from the same statement.
    async fn audit_begin(
        &self,
        entries: &[crate::model::audit::AuditEntry],
    ) -> Result<(), ProviderError>;
    /// The control plane's part of a tenant's purge, once every other resource of it is
    /// destroyed, in one transaction: its rows of `end.rows` deleted, the audit of
    /// `end.audited` completed (once; a later call keeps the first time), the tombstone
    /// written and the tenant moved to `end.to`. Returns the tombstone's attributes.
    async fn end_purge(
        &self,
        ctx: &StepContext<'_>,
        end: &PurgeEnd<'_>,
    ) -> Result<Option<Attrs>, ProviderError>;
    /// Writes an event about the tenant to the outbox that no lifecycle move carries
    /// (`TenantProvisioningFailed`).
    async fn emit_event(
        &self,
        ctx: &StepContext<'_>,
        kind: &str,
        detail: serde_json::Value,
    ) -> Result<(), ProviderError>;
    /// Writes an event about the fleet rather than one tenant (`RolloutHalted`), with no
    /// tenant id. `event_id` is the caller's, so writing it again writes nothing: a run
    /// killed before it recorded having written it writes it once all the same.
    async fn emit_fleet_event(
        &self,
        event_id: &str,
        kind: &str,
        detail: serde_json::Value,
    ) -> Result<(), ProviderError>;
    /// Records what the tenant's hooks gave back on its registry row.
    async fn set_outputs(
        &self,
        tenant_id: &str,
        outputs: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), ProviderError>;
    /// The deletion audit, oldest first, of one tenant or all.
    async fn audit_log(
        &self,
        slug: Option<&Slug>,
    ) -> Result<Vec<crate::model::audit::AuditEntry>, ProviderError>;
}

/// The lifecycle events written to the outbox, the same on every control plane.
pub mod events {
    use serde_json::{json, Value};

    use crate::model::lifecycle::{now, Lifecycle};
    use crate::targets::provider::{ProviderError, StepContext};

    pub const PROVISIONED: &str = "TenantProvisioned";
    pub const SUSPENDED: &str = "TenantSuspended";
    pub const RESUMED: &str = "TenantResumed";
    pub const UPDATED: &str = "TenantUpdated";
    pub const OFFBOARDING_STARTED: &str = "TenantOffboardingStarted";
    pub const DEPROVISIONED: &str = "TenantDeprovisioned";
    /// Its smoke tests (or a gating hook) failed: it stays in provisioning.
    pub const PROVISIONING_FAILED: &str = "TenantProvisioningFailed";
    /// Its data moved to another Postgres server (`{from, to}`).
    pub const MOVED: &str = "TenantMoved";
    /// A rollout stopped on its halt rule (`{rollout, wave, reason, failed}`); an event of
    /// the fleet, with no tenant id.
    pub const ROLLOUT_HALTED: &str = "RolloutHalted";
    /// A rollout's last wave is done (`{rollout, from, to, tenants}`); of the fleet too.
    pub const ROLLOUT_COMPLETED: &str = "RolloutCompleted";

    /// One outbox row: the event's id, when it happened, and what consumers read.
    pub struct Event {
        pub id: String,
        pub at: String,
        pub payload: Value,
    }

    pub fn new(ctx: &StepContext<'_>, tenant_id: &str, kind: &str, detail: Value) -> Event {
        let t = ctx.tenant;
        let id = uuid::Uuid::new_v4().to_string();
        let at = now();
        let payload = json!({
            "event_id": id,
            "type": kind,
            "occurred_at": at,
            "tenant_id": tenant_id,
            "slug": t.slug,
            "plan": t.plan,
            "region": t.region,
            "locale": t.locale,
            "isolation": t.isolation.as_str(),
            // A tombstone's event carries no personal data, as the tombstone does not.
            "owner_email": (kind != DEPROVISIONED).then_some(&t.owner_email),
            "features": t.features,
            "quotas": t.quotas,
            "detail": detail,
        });
        Event { id, at, payload }
    }

    /// The events a move from `from` to `to` announces, in order.
    pub fn for_transition(
        from: Lifecycle,
        to: Lifecycle,
    ) -> Result<&'static [&'static str], ProviderError> {
        Ok(match (from, to) {
            (Lifecycle::Pending | Lifecycle::Provisioning, Lifecycle::Active) => &[PROVISIONED],
            (Lifecycle::Pending | Lifecycle::Provisioning, Lifecycle::Suspended) => {
                &[PROVISIONED, SUSPENDED]
            }
            (Lifecycle::Active, Lifecycle::Suspended) => &[SUSPENDED],
            (Lifecycle::Suspended, Lifecycle::Active) => &[RESUMED],
            (Lifecycle::Active | Lifecycle::Suspended, Lifecycle::Deprovisioning) => {
                &[OFFBOARDING_STARTED]
            }
            // Called back during the hold: what was revoked is given back.
            (Lifecycle::Deprovisioning, Lifecycle::Active) => &[RESUMED],
            (Lifecycle::Deprovisioning, Lifecycle::Suspended) => &[SUSPENDED],
            (Lifecycle::Deprovisioning, Lifecycle::Deprovisioned) => &[DEPROVISIONED],
            _ => {
                return Err(ProviderError::Unplanned(format!(
                    "cannot move a tenant from {from} to {to}"
                )))
            }
        })
    }

    /// The detail of a lifecycle move's events: from and to, and for an offboarding the
    /// export's location (where the data went; never a download link, which is a secret).
    pub fn transition_detail(ctx: &StepContext<'_>, from: Lifecycle, to: Lifecycle) -> Value {
        let mut detail = json!({ "from": from.as_str(), "to": to.as_str() });
        let export = ctx.recorded.get(&crate::model::resource::Key::new(
            crate::model::resource::Kind::EXPORT,
        ));
        if let (Lifecycle::Deprovisioning | Lifecycle::Deprovisioned, Some(export)) = (to, export) {
            detail["export"] = json!(export.str("location"));
        }
        if to == Lifecycle::Deprovisioned {
            detail["erasure"] = json!(ctx.tenant.offboarding.erase);
        }
        detail
    }

    /// The detail of a TenantUpdated event for `change`.
    pub fn update_detail(change: &crate::model::change::ResourceChange) -> Value {
        let fields: Vec<String> = change.fields().iter().map(|f| f.field.clone()).collect();
        json!({ "resource": change.key.to_string(), "fields": fields })
    }

    /// Whether a change is announced as TenantUpdated: only for a tenant already live; a
    /// tenant still provisioning gets its TenantProvisioned event instead.
    pub fn announces_update(
        ctx: &StepContext<'_>,
        change: &crate::model::change::ResourceChange,
    ) -> bool {
        matches!(ctx.lifecycle, Lifecycle::Active | Lifecycle::Suspended)
            && change.action != crate::model::change::Action::Create
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_several_servers_found_is_looked_up_as_one_whatever_kinds_each_found() {
        let (lone, other) = (Slug::parse("lone").unwrap(), Slug::parse("other").unwrap());
        let attrs = || crate::model::attrs::attrs([("name", serde_json::json!("x"))]);
        // One server's only tenant has lost its role; another's has everything.
        let mut first = LiveFleet::default();
        first.insert_attrs(&lone, Kind::DATABASE, attrs());
        let mut second = LiveFleet::default();
        for kind in [Kind::ROLE, Kind::DATABASE, Kind::SEED] {
            second.insert_attrs(&other, kind, attrs());
        }
        let mut live = LiveFleet::default();
        live.absorb_alike(first);
        live.absorb_alike(second);
        for kind in [Kind::ROLE, Kind::DATABASE, Kind::SEED] {
            assert!(live.contains(&other, &Key::new(kind)), "{kind:?}");
        }
        assert!(live.contains(&lone, &Key::new(Kind::DATABASE)));
        assert!(!live.contains(&lone, &Key::new(Kind::ROLE)));
    }
}

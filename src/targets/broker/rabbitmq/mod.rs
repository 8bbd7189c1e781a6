//! The RabbitMQ target: per tenant a vhost, a user of its own, that user's permissions on
//! that vhost only, and the vhost's limits, through the management HTTP API.
//!
//! Refresh reads the whole fleet in four calls (vhosts, users, permissions, limits),
//! whatever its size. The vhost's description carries the mark of ownership; a user of the
//! tenant's name without a vhost of ours is someone else's. The user's password is sent as
//! a hash computed here; the user carries a tag recording which password it was given and a
//! digest of the hash, so refresh tells a password changed by hand (as the Postgres target
//! does with its catalog) without the master key.

mod api;
mod smoke;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::model::attrs::Attrs;
use crate::model::change::{Action, ResourceChange, MARK_FIELD};
use crate::model::resource::{Key, Kind};
use crate::targets::broker::RabbitmqConfig;
use crate::targets::broker::{self, PERMISSIONS_ALL, PERMISSIONS_NONE};
use crate::targets::provider::{
    check_ours, desired_of, Export, ExportRequest, LiveFleet, Owner, Provider, ProviderError,
    Purge, RefreshTarget, Smoke, StepContext,
};

pub use api::Api;

/// The user tag that records the password a user was given: `tenant-reconcile-password=`
/// its fingerprint, then `;hash=` and a digest of the hash set.
const PASSWORD_TAG: &str = "tenant-reconcile-password=";
/// The tag every tenant vhost carries, for people listing vhosts.
const VHOST_TAG: &str = "tenant-reconcile";
/// How long a vhost may take to start on every node.
const VHOST_START_TIMEOUT: Duration = Duration::from_secs(30);
/// What `password_fingerprint` reads when the user's hash is not the one set here.
const CHANGED_OUTSIDE: &str = "(changed outside tenant-reconcile)";

pub struct RabbitMq {
    config: RabbitmqConfig,
    /// Made on first use, so a run that touches no vhost needs no API variables.
    api: tokio::sync::OnceCell<Api>,
}

#[derive(Deserialize)]
struct VhostRow {
    name: String,
    #[serde(default)]
    description: Option<String>,
    /// Each node's word for the vhost: `running`, `stopped`, `nodedown`.
    #[serde(default)]
    cluster_state: BTreeMap<String, String>,
}

impl VhostRow {
    /// `running` when every node runs it, or what the others say (`stopped on rabbit@a`).
    /// A vhost whose start was cut off (its creator killed mid-request) exists and is
    /// listed, yet refuses every connection until it is started.
    fn state(&self) -> String {
        let down: Vec<String> = self
            .cluster_state
            .iter()
            .filter(|(_, state)| state.as_str() != broker::RUNNING)
            .map(|(node, state)| format!("{state} on {node}"))
            .collect();
        if self.cluster_state.is_empty() {
            "not started on any node".to_string()
        } else if down.is_empty() {
            broker::RUNNING.to_string()
        } else {
            down.join(", ")
        }
    }
}

#[derive(Deserialize)]
struct UserRow {
    name: String,
    #[serde(default)]
    password_hash: String,
    #[serde(default)]
    tags: Tags,
}

/// A user's tags: a list on RabbitMQ 3.9 and later, one comma-separated string before.
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Tags {
    List(Vec<String>),
    Text(String),
    #[default]
    None,
}

impl Tags {
    fn list(&self) -> Vec<String> {
        match self {
            Tags::List(l) => l.clone(),
            Tags::Text(t) => t
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
            Tags::None => Vec::new(),
        }
    }
}

#[derive(Deserialize)]
struct PermissionRow {
    user: String,
    vhost: String,
    configure: String,
    write: String,
    read: String,
}

#[derive(Deserialize)]
struct LimitRow {
    vhost: String,
    /// The limits set, by name; a vhost whose limits were all cleared has `[]` (an empty
    /// Erlang map, as the API writes it).
    value: Value,
}

#[derive(Deserialize)]
struct QueueRow {
    #[serde(default)]
    messages: Option<u64>,
}

/// The tag recording that `user` was given `password`, whose hash is `hash`.
fn password_tag(password: &str, hash: &str) -> String {
    format!(
        "{PASSWORD_TAG}{};hash={}",
        crate::credentials::fingerprint(password),
        hash_digest(hash)
    )
}

fn hash_digest(hash: &str) -> String {
    crate::model::digest::sha256_hex(hash)[..16].to_string()
}

/// What a user's tags say of its password: the fingerprint recorded, if the hash it has now
/// is the one that was set with it.
fn recorded_password(tags: &[String], hash: &str) -> Option<String> {
    let tag = tags.iter().find_map(|t| t.strip_prefix(PASSWORD_TAG))?;
    let (fingerprint, digest) = tag.split_once(";hash=")?;
    Some(if digest == hash_digest(hash) {
        fingerprint.to_string()
    } else {
        CHANGED_OUTSIDE.to_string()
    })
}

impl RabbitMq {
    pub fn new(config: RabbitmqConfig) -> RabbitMq {
        RabbitMq {
            config,
            api: tokio::sync::OnceCell::new(),
        }
    }

    async fn api(&self) -> Result<&Api, ProviderError> {
        self.api
            .get_or_try_init(|| async { Api::from_env(&self.config) })
            .await
    }

    /// Requests sent to the management API so far, for benchmarks.
    pub fn calls(&self) -> usize {
        self.api.get().map_or(0, Api::calls)
    }

    /// Whose the vhost `name` is now, if it exists.
    async fn vhost_owner(&self, name: &str) -> Result<Option<Owner>, ProviderError> {
        let row: Option<VhostRow> = self.api().await?.get(&["vhosts", name], None).await?;
        Ok(row.map(|v| Owner::from_text(v.description.as_deref())))
    }

    /// Starts the vhost on each node that does not run it, and waits until all do.
    async fn start(&self, vhost: &str) -> Result<(), ProviderError> {
        let api = self.api().await?;
        let deadline = tokio::time::Instant::now() + VHOST_START_TIMEOUT;
        let mut asked = false;
        loop {
            let row: Option<VhostRow> = api
                .get(&["vhosts", vhost], Some("columns=name,cluster_state"))
                .await?;
            let Some(row) = row else {
                return Err(ProviderError::Refused(format!(
                    "the vhost {vhost} is gone: it was deleted while this apply made it"
                )));
            };
            let state = row.state();
            if state == broker::RUNNING {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProviderError::TimedOut(format!(
                    "the vhost {vhost} is not running after {}s ({state})",
                    VHOST_START_TIMEOUT.as_secs()
                )));
            }
            // Once: a node that is starting it already answers the same, and one that is
            // down cannot be asked again to any effect.
            if !asked {
                for (node, _) in row
                    .cluster_state
                    .iter()
                    .filter(|(_, s)| s.as_str() != broker::RUNNING && s.as_str() != "nodedown")
                {
                    api.post(&["vhosts", vhost, "start", node]).await?;
                }
                asked = true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Makes `vhost` again when its creation was cut off: a run killed while the broker
    /// made it (the management API's handler dies with its connection) can leave the vhost
    /// listed, marked and running, but without its default exchanges, so nothing can be
    /// published in it and the tenant's smoke test fails on every run. Such a vhost holds
    /// no queue, so nothing is lost; one that holds queues is left as it is and refused.
    /// Whether it was made again.
    async fn remake_if_half_made(
        &self,
        ctx: &StepContext<'_>,
        vhost: &str,
    ) -> Result<bool, ProviderError> {
        let api = self.api().await?;
        // The default exchange, whose name is empty, is `amq.default` in the API's paths.
        let default: Option<Value> = api.get(&["exchanges", vhost, "amq.default"], None).await?;
        if default.is_some() {
            return Ok(false);
        }
        let queues: Vec<Value> = api
            .get(&["queues", vhost], Some("columns=name"))
            .await?
            .unwrap_or_default();
        if !queues.is_empty() {
            return Err(ProviderError::Refused(format!(
                "the vhost {vhost} has no default exchange but holds {} queues: it was left as it is; \
                 its definitions can be exported and the vhost made again by hand",
                queues.len()
            )));
        }
        tracing::warn!(
            vhost,
            "the vhost has no default exchange (its creation was cut off): making it again"
        );
        api.delete(&["vhosts", vhost]).await?;
        api.put(
            &["vhosts", vhost],
            &json!({ "description": ctx.mark.text(), "tags": VHOST_TAG }),
        )
        .await?;
        self.start(vhost).await?;
        Ok(true)
    }

    async fn user_exists(&self, name: &str) -> Result<bool, ProviderError> {
        let row: Option<Value> = self.api().await?.get(&["users", name], None).await?;
        Ok(row.is_some())
    }

    /// Gives the user its password (as a hash) and its tag, nothing else: a tenant user
    /// has no management access.
    async fn put_user(&self, ctx: &StepContext<'_>, user: &str) -> Result<String, ProviderError> {
        let tenant_id = ctx.tenant_id()?;
        let password = broker::password(
            ctx.key,
            tenant_id,
            ctx.incarnation,
            user,
            ctx.credentials_version,
        );
        let mut salt = [0u8; 4];
        getrandom::fill(&mut salt)
            .map_err(|e| ProviderError::failed("no random salt")(e.to_string()))?;
        let hash = broker::password_hash(&password, salt);
        self.api()
            .await?
            .put(
                &["users", user],
                &json!({
                    "password_hash": hash,
                    "hashing_algorithm": "rabbit_password_hashing_sha256",
                    "tags": password_tag(&password, &hash),
                }),
            )
            .await?;
        Ok(crate::credentials::fingerprint(&password))
    }

    /// Takes away every permission the user has on other vhosts.
    async fn narrow(&self, user: &str, vhost: &str) -> Result<(), ProviderError> {
        let api = self.api().await?;
        let held: Vec<PermissionRow> = api
            .get(&["users", user, "permissions"], None)
            .await?
            .unwrap_or_default();
        for p in held.iter().filter(|p| p.vhost != vhost) {
            api.delete(&["permissions", &p.vhost, user]).await?;
        }
        Ok(())
    }

    /// The permissions the attributes ask for; closing the user's connections when they are
    /// taken away (a connection keeps working after its permissions go).
    async fn put_permissions(
        &self,
        vhost: &str,
        user: &str,
        permissions: &str,
    ) -> Result<(), ProviderError> {
        let api = self.api().await?;
        if permissions == PERMISSIONS_ALL {
            api.put(
                &["permissions", vhost, user],
                &json!({"configure": ".*", "write": ".*", "read": ".*"}),
            )
            .await
        } else {
            api.delete(&["permissions", vhost, user]).await?;
            api.delete(&["connections", "username", user]).await?;
            Ok(())
        }
    }

    /// Sets the limits the attributes give and clears the others (on a `fresh` vhost there
    /// are none to clear).
    async fn put_limits(
        &self,
        vhost: &str,
        attrs: &Attrs,
        fresh: bool,
    ) -> Result<(), ProviderError> {
        let api = self.api().await?;
        for (field, limit) in broker::LIMITS {
            match attrs.get(field).and_then(Value::as_i64) {
                Some(n) => {
                    api.put(&["vhost-limits", vhost, limit], &json!({ "value": n }))
                        .await?
                }
                None if fresh => {}
                None => {
                    api.delete(&["vhost-limits", vhost, limit]).await?;
                }
            }
        }
        Ok(())
    }

    /// What a vhost about to be purged holds: its queues and their messages.
    async fn holdings(&self, vhost: &str) -> Result<String, ProviderError> {
        let queues: Vec<QueueRow> = self
            .api()
            .await?
            .get(&["queues", vhost], Some("columns=name,messages"))
            .await?
            .unwrap_or_default();
        let messages: u64 = queues.iter().filter_map(|q| q.messages).sum();
        let n = queues.len();
        Ok(format!(
            "{} queue{}, {} message{}",
            n,
            if n == 1 { "" } else { "s" },
            crate::targets::provider::thousands(messages),
            if messages == 1 { "" } else { "s" }
        ))
    }
}

#[async_trait]
impl Provider for RabbitMq {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::VHOST]
    }

    fn forces_replace(&self, _kind: Kind, field: &str) -> bool {
        broker::forces_replace(field)
    }

    async fn refresh(
        &self,
        targets: &[RefreshTarget],
        live: &mut LiveFleet,
    ) -> Result<(), ProviderError> {
        let wanted = crate::targets::provider::wanting(targets, Kind::VHOST);
        if wanted.is_empty() {
            return Ok(());
        }
        let api = self.api().await?;
        let before = api.calls();
        let (vhosts, users, permissions, limits) = tokio::try_join!(
            api.list::<VhostRow>(&["vhosts"], Some("columns=name,description,cluster_state")),
            api.list::<UserRow>(&["users"], Some("columns=name,password_hash,tags")),
            api.list::<PermissionRow>(&["permissions"], None),
            api.list::<LimitRow>(&["vhost-limits"], None),
        )?;
        let vhosts: HashMap<String, VhostRow> =
            vhosts.into_iter().map(|v| (v.name.clone(), v)).collect();
        let users: HashMap<String, UserRow> =
            users.into_iter().map(|u| (u.name.clone(), u)).collect();
        let mut by_user: HashMap<String, Vec<PermissionRow>> = HashMap::new();
        for p in permissions {
            by_user.entry(p.user.clone()).or_default().push(p);
        }
        let limits: HashMap<String, Value> =
            limits.into_iter().map(|l| (l.vhost, l.value)).collect();
        for t in wanted {
            let vhost = broker::vhost(&self.config, &t.slug);
            let user = broker::user(&self.config, &t.slug);
            let found_vhost = vhosts.get(&vhost);
            let found_user = users.get(&user);
            if found_vhost.is_none() && found_user.is_none() {
                continue;
            }
            let held = by_user.get(&user).map(Vec::as_slice).unwrap_or_default();
            let permissions = held
                .iter()
                .find(|p| p.vhost == vhost)
                .map(|p| broker::permissions_text(&p.configure, &p.write, &p.read))
                .unwrap_or_else(|| PERMISSIONS_NONE.to_string());
            let mut others: Vec<&str> = held
                .iter()
                .filter(|p| p.vhost != vhost)
                .map(|p| p.vhost.as_str())
                .collect();
            others.sort_unstable();
            let tags = found_user.map(|u| u.tags.list()).unwrap_or_default();
            let other_tags: Vec<&String> = tags
                .iter()
                .filter(|t| !t.starts_with(PASSWORD_TAG))
                .collect();
            let vhost_limits = limits.get(&vhost);
            let limit = |name: &str| {
                broker::limit_value(
                    vhost_limits
                        .and_then(|l| l.get(name))
                        .and_then(Value::as_i64),
                )
            };
            let mut attrs = crate::model::attrs::attrs([
                ("permissions", json!(permissions)),
                ("other_vhosts", json!(others)),
                ("user_tags", json!(other_tags)),
                ("max_connections", limit("max-connections")),
                ("max_queues", limit("max-queues")),
            ]);
            // One that is missing is not reported, so the plan sets it in place (`+ vhost`)
            // rather than replacing what is left.
            if let Some(row) = found_vhost {
                attrs.insert("vhost", json!(vhost));
                attrs.insert("state", json!(row.state()));
            }
            if let Some(u) = found_user {
                attrs.insert("user", json!(user));
                // Without our tag, its password is one this tool did not set.
                let fingerprint = recorded_password(&tags, &u.password_hash)
                    .unwrap_or_else(|| CHANGED_OUTSIDE.to_string());
                attrs.insert("password_fingerprint", json!(fingerprint));
            }
            let owner = match found_vhost {
                Some(row) => Owner::from_text(row.description.as_deref()),
                // A user of the tenant's name beside no vhost of ours.
                None => Owner::Unmarked,
            };
            if t.purge && found_vhost.is_some() {
                let what = match self.holdings(&vhost).await {
                    Ok(what) => what,
                    Err(e) => format!("not counted: {}", crate::causes::chain(&e)),
                };
                live.holds_as(
                    &t.slug,
                    Kind::VHOST,
                    format!("vhost {vhost} and user {user}"),
                    what,
                );
            }
            live.insert_owned(&t.slug, Kind::VHOST, attrs, owner);
        }
        live.calls.push((self.name(), api.calls() - before));
        Ok(())
    }

    async fn apply(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        let attrs = &desired_of(change)?.attrs;
        let vhost = attrs.str("vhost");
        let user = attrs.str("user");
        let changed = |f: &str| change.fields.iter().any(|c| c.field == f);
        let whole = matches!(
            change.action,
            Action::Create | Action::Replace | Action::Import
        );
        // Whose it is, checked as close to the change as the API allows: a vhost or user of
        // these names made since the plan is not taken over.
        let resource = format!("the vhost {vhost}");
        let owner = self.vhost_owner(vhost).await?;
        // Whether a user of that name may be there already (with permissions elsewhere):
        // asked only where it matters, for a vhost not there yet.
        let user_there = match &owner {
            Some(owner) => {
                check_ours(ctx, change, &resource, owner)?;
                true
            }
            None if whole => {
                let there = self.user_exists(user).await?;
                if there {
                    let user = format!("the broker user {user}");
                    check_ours(ctx, change, &user, &Owner::Unmarked)?;
                }
                there
            }
            None => true,
        };
        // A vhost made now has no limits and no permissions to take away.
        let mut fresh = owner.is_none();
        let api = self.api().await?;
        if whole || fresh || changed("vhost") || changed(MARK_FIELD) {
            api.put(
                &["vhosts", vhost],
                &json!({ "description": ctx.mark.text(), "tags": VHOST_TAG }),
            )
            .await?;
        }
        // Even a vhost just made is asked: when an earlier run was killed mid-create, the
        // PUT above finds the vhost there, answers at once, and it may not be running yet.
        if whole || fresh || changed("vhost") || changed("state") {
            self.start(vhost).await?;
        }
        // One that stood before this call may be half made (a PUT that completed made it
        // whole): made again, then given everything a new vhost is given.
        if !fresh && self.remake_if_half_made(ctx, vhost).await? {
            fresh = true;
        }
        let mut out = attrs.clone();
        // The desired attributes carry the fingerprint whenever the tenant's id was known at
        // plan time; a new tenant's is known now.
        if whole || changed("user") || changed("user_tags") || changed("password_fingerprint") {
            let fingerprint = self.put_user(ctx, user).await?;
            out.insert("password_fingerprint", json!(fingerprint));
        }
        if whole || fresh || changed("permissions") {
            self.put_permissions(vhost, user, attrs.str("permissions"))
                .await?;
        }
        if (whole && user_there) || changed("other_vhosts") {
            self.narrow(user, vhost).await?;
        }
        if whole || fresh || changed("max_connections") || changed("max_queues") {
            self.put_limits(vhost, attrs, fresh).await?;
        }
        Ok(Some(out))
    }

    crate::targets::provider::capabilities!(Export, Purge, Smoke);
}

#[async_trait]
impl Export for RabbitMq {
    async fn export(&self, req: &ExportRequest<'_>) -> Result<(), ProviderError> {
        let Some(recorded) = req.recorded.get(&Key::new(Kind::VHOST)) else {
            return Ok(());
        };
        let vhost = recorded.str("vhost");
        // Its queues, exchanges, bindings and policies, as RabbitMQ can import them again.
        let definitions: Option<Value> =
            self.api().await?.get(&["definitions", vhost], None).await?;
        let Some(definitions) = definitions else {
            return Ok(());
        };
        let text = serde_json::to_vec_pretty(&definitions).expect("JSON serializes");
        let mut file = req.sink.file("broker/definitions.json").await?;
        file.write(&text).await?;
        req.sink
            .finish_file(&format!("definitions of the vhost {vhost}"), file)
            .await
    }
}

#[async_trait]
impl Purge for RabbitMq {
    async fn purge(&self, ctx: &StepContext<'_>, key: &Key) -> Result<(), ProviderError> {
        let Some(recorded) = ctx.recorded.get(key) else {
            return Ok(());
        };
        let (vhost, user) = (recorded.str("vhost"), recorded.str("user"));
        if let Some(owner) = self.vhost_owner(vhost).await? {
            check_ours(
                ctx,
                &crate::targets::provider::purge_change(key),
                &format!("the vhost {vhost}"),
                &owner,
            )?;
        }
        let api = self.api().await?;
        // Its connections first, so nothing is left publishing into a vhost going away.
        api.delete(&["connections", "username", user]).await?;
        api.delete(&["vhosts", vhost]).await?;
        api.delete(&["users", user]).await?;
        Ok(())
    }
}

#[async_trait]
impl Smoke for RabbitMq {
    async fn smoke(
        &self,
        ctx: &StepContext<'_>,
        _sql: &[&crate::model::checks::CheckSpec],
    ) -> Vec<crate::model::health::CheckOutcome> {
        let Some(recorded) = ctx.recorded.get(&Key::new(Kind::VHOST)) else {
            return Vec::new();
        };
        smoke::run(&self.config, ctx, recorded).await
    }
}

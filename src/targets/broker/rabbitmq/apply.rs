//! A tenant's vhost, user, permissions and limits made as its plan says; a vhost whose
//! creation was cut off is made again.

use std::time::Duration;

use serde_json::{json, Value};

use crate::model::attrs::Attrs;
use crate::model::change::{Action, ResourceChange, MARK_FIELD};
use crate::targets::broker::{self, PERMISSIONS_ALL};
use crate::targets::provider::{check_ours, desired_of, Owner, ProviderError, StepContext};

use super::{
    password::password_tag,
    rows::{PermissionRow, VhostRow},
    RabbitMq,
};

impl RabbitMq {
    /// Starts the vhost on each node that does not run it, and waits until all do.
    pub(super) async fn start(&self, vhost: &str) -> Result<(), ProviderError> {
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
    pub(super) async fn remake_if_half_made(
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

    pub(super) async fn user_exists(&self, name: &str) -> Result<bool, ProviderError> {
        let row: Option<Value> = self.api().await?.get(&["users", name], None).await?;
        Ok(row.is_some())
    }

    /// Gives the user its password (as a hash) and its tag, nothing else: a tenant user
    /// has no management access.
    pub(super) async fn put_user(
        &self,
        ctx: &StepContext<'_>,
        user: &str,
    ) -> Result<String, ProviderError> {
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
    pub(super) async fn narrow(&self, user: &str, vhost: &str) -> Result<(), ProviderError> {
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
    pub(super) async fn put_permissions(
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
    pub(super) async fn put_limits(
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

    pub(super) async fn apply_change(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        let attrs = &desired_of(change)?.attrs;
        let vhost = attrs.str("vhost");
        let user = attrs.str("user");
        let changed = |f: &str| change.fields().iter().any(|c| c.field == f);
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
}

/// The tag every tenant vhost carries, for people listing vhosts.
pub(super) const VHOST_TAG: &str = "tenant-reconcile";

/// How long a vhost may take to start on every node.
pub(super) const VHOST_START_TIMEOUT: Duration = Duration::from_secs(30);

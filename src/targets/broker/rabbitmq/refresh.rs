//! The refresh: the whole fleet's vhosts, users, permissions and limits in four calls.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::model::resource::Kind;
use crate::targets::broker::{self, PERMISSIONS_NONE};
use crate::targets::provider::{LiveFleet, Owner, Provider, ProviderError, RefreshTarget};

use super::{
    password::{recorded_password, CHANGED_OUTSIDE, PASSWORD_TAG},
    rows::{LimitRow, PermissionRow, UserRow, VhostRow},
    RabbitMq,
};

impl RabbitMq {
    pub(super) async fn refresh_fleet(
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
}

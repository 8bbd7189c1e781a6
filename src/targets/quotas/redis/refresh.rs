//! The refresh: every ACL user in one `ACL LIST`, and the tenants' limits hashes in pipelines
//! of a thousand.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use crate::model::attrs::Attrs;
use crate::targets::provider::wanting;
use crate::targets::provider::{LiveFleet, Owner, Provider, ProviderError, RefreshTarget};
use crate::targets::quotas::{LIMITS, MARK_FIELD};

use super::{
    acl::{recorded_password, AclUser},
    RedisQuotas, PIPELINE,
};

impl RedisQuotas {
    /// Every ACL user, by name.
    pub(super) async fn users(&self) -> Result<HashMap<String, AclUser>, ProviderError> {
        let lines: Vec<String> = self
            .query("ACL LIST", redis::cmd("ACL").arg("LIST"))
            .await?;
        Ok(lines.iter().filter_map(|l| AclUser::parse(l)).collect())
    }

    /// A tenant's hash and user as they are now.
    pub(super) async fn read(
        &self,
        key: &str,
        user: &str,
    ) -> Result<(HashMap<String, String>, bool), ProviderError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(key);
        pipe.cmd("ACL").arg("GETUSER").arg(user);
        let (hash, found): (HashMap<String, String>, redis::Value) =
            self.pipeline(&format!("reading {key}"), &pipe).await?;
        Ok((hash, found != redis::Value::Nil))
    }

    /// Who owns a tenant's hash (and the user beside it): its mark, or nobody we know.
    pub(super) fn owner(hash: &HashMap<String, String>) -> Owner {
        Owner::from_text(hash.get(MARK_FIELD).map(String::as_str))
    }

    pub(super) fn attrs(
        &self,
        key: &str,
        user_name: &str,
        hash: &HashMap<String, String>,
        user: Option<&AclUser>,
    ) -> Attrs {
        let limits: BTreeMap<&str, Value> = hash
            .iter()
            .filter(|(field, _)| !field.starts_with('_'))
            .map(|(field, value)| (field.as_str(), limit(value)))
            .collect();
        let none = AclUser::default();
        let acl = user.unwrap_or(&none);
        crate::model::attrs::attrs([
            ("key", json!(key)),
            ("limits", json!(limits)),
            // Always its name: a user deleted by hand is an update of the fields below (an
            // empty rule set), not another user.
            ("user", json!(user_name)),
            ("enabled", json!(acl.enabled)),
            ("keys", json!(acl.keys)),
            ("channels", json!(acl.channels)),
            ("commands", json!(acl.commands)),
            ("password_fingerprint", json!(recorded_password(hash, acl))),
        ])
    }

    pub(super) async fn refresh_fleet(
        &self,
        targets: &[RefreshTarget],
        live: &mut LiveFleet,
    ) -> Result<(), ProviderError> {
        let wanted = wanting(targets, LIMITS);
        if wanted.is_empty() {
            return Ok(());
        }
        let before = self.calls();
        let users = self.users().await?;
        for chunk in wanted.chunks(PIPELINE) {
            let mut pipe = redis::pipe();
            for t in chunk {
                pipe.cmd("HGETALL").arg(self.config.limits_key(&t.slug));
            }
            let hashes: Vec<HashMap<String, String>> =
                self.pipeline("reading the limits", &pipe).await?;
            for (t, hash) in chunk.iter().zip(hashes) {
                let (key, name) = (self.config.limits_key(&t.slug), self.config.user(&t.slug));
                let user = users.get(&name);
                if hash.is_empty() && user.is_none() {
                    continue;
                }
                let attrs = self.attrs(&key, &name, &hash, user);
                live.insert_owned(&t.slug, LIMITS, attrs, Self::owner(&hash));
            }
        }
        live.calls.push((self.name(), self.calls() - before));
        Ok(())
    }
}

/// A limit as the hash holds it: a number, or the text someone wrote.
pub(super) fn limit(text: &str) -> Value {
    text.parse::<u64>()
        .map_or_else(|_| json!(text), |n| json!(n))
}

//! A tenant's limits hash and ACL user written in one `MULTI`, moved to a new key prefix
//! when it changes.

use serde_json::{json, Value};

use crate::model::attrs::Attrs;
use crate::model::change::ResourceChange;
use crate::model::digest::sha256_hex;
use crate::targets::provider::{check_ours, desired_of, Owner, ProviderError, StepContext};
use crate::targets::quotas::{login, MARK_FIELD, PASSWORD_FIELD};

use super::{acl::password_record, prefix_of, RedisQuotas};

impl RedisQuotas {
    pub(super) async fn apply_change(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        let attrs = &desired_of(change)?.attrs;
        let (key, user) = (attrs.str("key"), attrs.str("user"));
        let (hash, user_there) = self.read(key, user).await?;
        if !hash.is_empty() || user_there {
            let resource = format!("the limits {key} and user {user}");
            check_ours(ctx, change, &resource, &Self::owner(&hash))?;
        }
        let password = ctx.password(&login(user))?;
        let fingerprint = crate::credentials::fingerprint(&password);
        let acl_hash = sha256_hex(&password);
        let enabled = attrs.get("enabled").and_then(Value::as_bool) == Some(true);

        let mut pipe = redis::pipe();
        pipe.atomic();
        // Names changed by the config (a new key or user prefix): what the old names held
        // goes with them, if it was ours. Refresh reads the names the config gives, so this is
        // found here, from the names the state recorded, whatever the change's action.
        if let Some(old) = ctx.recorded.get(&change.key) {
            let (old_key, old_user) = (old.str("key"), old.str("user"));
            if old_key != key || old_user != user {
                let (old_hash, _) = self.read(old_key, old_user).await?;
                if matches!(Self::owner(&old_hash), Owner::Marked(ref m) if ctx.mark.claims(m)) {
                    // The quota service's counters under the old prefix move to the new one
                    // first: the old hash stays marked until the transaction below, so a run
                    // cut off here moves the rest when it is applied again.
                    let (old_prefix, prefix) = (prefix_of(old_key), prefix_of(key));
                    if old_prefix != prefix {
                        for moved in self.keys_under(old_prefix).await? {
                            if moved == old_key {
                                continue;
                            }
                            let to = format!("{prefix}{}", &moved[old_prefix.len()..]);
                            self.query::<()>(
                                &format!("moving {moved}"),
                                redis::cmd("RENAME").arg(&moved).arg(&to),
                            )
                            .await?;
                        }
                    }
                    if old_user != user {
                        pipe.cmd("ACL").arg("DELUSER").arg(old_user).ignore();
                    }
                    if old_key != key {
                        pipe.cmd("DEL").arg(old_key).ignore();
                    }
                }
            }
        }
        pipe.cmd("DEL").arg(key).ignore();
        let hset = pipe.cmd("HSET").arg(key);
        hset.arg(MARK_FIELD).arg(ctx.mark.text());
        hset.arg(PASSWORD_FIELD)
            .arg(password_record(&fingerprint, &acl_hash));
        if let Some(limits) = attrs.get("limits").and_then(Value::as_object) {
            for (name, value) in limits {
                hset.arg(name).arg(value.to_string());
            }
        }
        hset.ignore();
        let setuser = pipe.cmd("ACL").arg("SETUSER").arg(user).arg("reset");
        setuser.arg(if enabled { "on" } else { "off" });
        setuser.arg(format!("#{acl_hash}"));
        let rules = |name: &str| -> Vec<&str> {
            let list = attrs.get(name).and_then(Value::as_array);
            list.into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect()
        };
        setuser.arg(rules("keys"));
        // Rules apply in order: a category taken away (`-@all`) before the commands given.
        let (categories, commands): (Vec<&str>, Vec<&str>) = rules("commands")
            .into_iter()
            .partition(|c| c.starts_with("-@"));
        setuser.arg(categories).arg(commands);
        setuser.arg("resetchannels").ignore();
        if !enabled {
            // A user turned off keeps the connections it has: they are closed in the same
            // transaction, so no run cut short leaves them open.
            pipe.cmd("CLIENT")
                .arg("KILL")
                .arg("USER")
                .arg(user)
                .ignore();
        }
        self.pipeline::<()>(&format!("writing {key} and the user {user}"), &pipe)
            .await?;
        let mut out = attrs.clone();
        out.insert("password_fingerprint", json!(fingerprint));
        Ok(Some(out))
    }
}

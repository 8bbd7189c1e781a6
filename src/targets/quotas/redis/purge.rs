//! A tenant's user, then its other keys, then its marked hash deleted, so a purge cut off is
//! finished by the next run.

use async_trait::async_trait;

use crate::model::resource::Key;
use crate::targets::provider::{check_ours, purge_change, ProviderError, Purge, StepContext};

use super::{prefix_of, RedisQuotas, PIPELINE};

#[async_trait]
impl Purge for RedisQuotas {
    /// The user first (its connections go with it), then the tenant's other keys, then the
    /// marked hash last: a purge cut short is found ours and carried on.
    async fn purge(&self, ctx: &StepContext<'_>, key: &Key) -> Result<(), ProviderError> {
        let Some(recorded) = ctx.recorded.get(key) else {
            return Ok(());
        };
        let (limits, user) = (recorded.str("key"), recorded.str("user"));
        let (hash, user_there) = self.read(limits, user).await?;
        if hash.is_empty() {
            // Gone already (the user without its hash is not known to be ours).
            return Ok(());
        }
        check_ours(
            ctx,
            &purge_change(key),
            &format!("the limits {limits} and user {user}"),
            &Self::owner(&hash),
        )?;
        if user_there {
            self.query::<i64>(
                &format!("deleting the user {user}"),
                redis::cmd("ACL").arg("DELUSER").arg(user),
            )
            .await?;
        }
        let prefix = prefix_of(limits);
        let others: Vec<String> = self
            .keys_under(prefix)
            .await?
            .into_iter()
            .filter(|k| k != limits)
            .collect();
        for batch in others.chunks(PIPELINE) {
            self.query::<i64>(
                &format!("deleting the keys under {prefix}"),
                redis::cmd("UNLINK").arg(batch),
            )
            .await?;
        }
        self.query::<i64>(&format!("deleting {limits}"), redis::cmd("DEL").arg(limits))
            .await?;
        Ok(())
    }
}

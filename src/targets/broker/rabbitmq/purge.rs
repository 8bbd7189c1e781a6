//! A tenant's vhost and user deleted, once the vhost is found ours.

use async_trait::async_trait;

use crate::model::resource::Key;
use crate::targets::provider::{check_ours, ProviderError, Purge, StepContext};

use super::RabbitMq;

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

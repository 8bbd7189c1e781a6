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
mod apply;
mod export;
mod holdings;
mod password;
mod purge;
mod refresh;
mod rows;
mod smoke;

use async_trait::async_trait;

use crate::model::attrs::Attrs;
use crate::model::change::ResourceChange;
use crate::model::resource::Kind;
use crate::targets::broker;
use crate::targets::broker::RabbitmqConfig;
use crate::targets::provider::{
    LiveFleet, Owner, Provider, ProviderError, RefreshTarget, StepContext,
};

use rows::VhostRow;

pub use api::Api;

pub struct RabbitMq {
    config: RabbitmqConfig,
    /// Made on first use, so a run that touches no vhost needs no API variables.
    api: tokio::sync::OnceCell<Api>,
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
        self.refresh_fleet(targets, live).await
    }

    async fn apply(
        &self,
        ctx: &StepContext<'_>,
        change: &ResourceChange,
    ) -> Result<Option<Attrs>, ProviderError> {
        self.apply_change(ctx, change).await
    }

    crate::targets::provider::capabilities!(Export, Purge, Smoke);
}

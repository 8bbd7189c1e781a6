//! The broker's smoke tests, as the tenant's application would meet its vhost: its own user
//! and password over AMQP, a message published (confirmed) and read back from a queue of
//! its own, and the broker's default vhost refused to it.

use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};

use crate::model::attrs::Attrs;
use crate::model::health::CheckOutcome;
use crate::model::resource::{Key, Kind};
use crate::targets::broker::RabbitmqConfig;
use crate::targets::broker::{self, PERMISSIONS_ALL};
use crate::targets::provider::{Smoke, StepContext};

use super::RabbitMq;

const TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(
    config: &RabbitmqConfig,
    ctx: &StepContext<'_>,
    recorded: &Attrs,
) -> Vec<CheckOutcome> {
    // A suspended tenant's user has no permissions: there is nothing to test.
    if recorded.str("permissions") != PERMISSIONS_ALL {
        return Vec::new();
    }
    let Ok(tenant_id) = ctx.tenant_id() else {
        return Vec::new();
    };
    let (vhost, user) = (recorded.str("vhost"), recorded.str("user"));
    let password = broker::password(
        ctx.key,
        tenant_id,
        ctx.incarnation,
        user,
        ctx.credentials_version,
    );
    let started = Instant::now();
    let own = round_trip(&broker::amqp_url(config, user, &password, vhost), vhost).await;
    let mut out = vec![CheckOutcome::of("broker", started, own)];
    let started = Instant::now();
    let refused = match connect(&broker::amqp_url(config, user, &password, "/")).await {
        Ok(c) => {
            let _ = c.close(200, "done").await;
            Err(format!(
                "{user} can open the default vhost /, which is not its own"
            ))
        }
        Err(_) => Ok(format!("{user} is refused the default vhost /")),
    };
    out.push(CheckOutcome::of("broker_isolation", started, refused));
    out
}

async fn connect(url: &str) -> Result<Connection, String> {
    crate::clients::amqp::connect(url, "tenant-reconcile smoke test", TIMEOUT)
        .await
        .map_err(|e| match e {
            crate::clients::amqp::ConnectError::Timeout => {
                format!("no answer within {} s", TIMEOUT.as_secs())
            }
            crate::clients::amqp::ConnectError::Failed(e) => e.to_string(),
        })
}

/// Connects, publishes a probe to an exclusive queue of its own and reads it back.
async fn round_trip(url: &str, vhost: &str) -> Result<String, String> {
    let connection = connect(url)
        .await
        .map_err(|e| format!("cannot connect to {vhost} with its own user: {e}"))?;
    let probe = async {
        let failed = |what: &str, e: lapin::Error| format!("{what} in {vhost}: {e}");
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| failed("open a channel", e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| failed("ask for confirms", e))?;
        let queue = channel
            .queue_declare(
                "",
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| failed("declare a queue", e))?;
        let body = uuid::Uuid::new_v4().to_string();
        let confirm = channel
            .basic_publish(
                "",
                queue.name().as_str(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .map_err(|e| failed("publish", e))?
            .await
            .map_err(|e| failed("confirm", e))?;
        if !matches!(confirm, Confirmation::Ack(_)) {
            return Err(format!(
                "the broker did not take the probe message in {vhost}"
            ));
        }
        let got = channel
            .basic_get(queue.name().as_str(), BasicGetOptions { no_ack: true })
            .await
            .map_err(|e| failed("read the probe back", e))?;
        match got {
            Some(m) if m.delivery.data == body.as_bytes() => Ok(format!(
                "published and read back a message in {vhost} as its own user"
            )),
            _ => Err(format!("the probe message did not come back in {vhost}")),
        }
    };
    let verdict = tokio::time::timeout(TIMEOUT, probe)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "{vhost} did not answer within {} s",
                TIMEOUT.as_secs()
            ))
        });
    let _ = connection.close(200, "done").await;
    verdict
}

#[async_trait::async_trait]
impl Smoke for RabbitMq {
    async fn smoke(
        &self,
        ctx: &StepContext<'_>,
        _sql: &[&crate::model::checks::CheckSpec],
    ) -> Vec<crate::model::health::CheckOutcome> {
        let Some(recorded) = ctx.recorded.get(&Key::new(Kind::VHOST)) else {
            return Vec::new();
        };
        run(&self.config, ctx, recorded).await
    }
}

//! Publishing to a message bus: a RabbitMQ exchange (topic, durable, declared if missing),
//! each event a persistent message with the event's id as `message_id` and its type as the
//! routing key, counted as delivered only once the broker confirms it (publisher confirms).

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ExchangeKind};

use super::Due;
use crate::repo::subscribers::Bus;

pub struct Publisher {
    channel: lapin::Channel,
    exchange: String,
    /// Kept open for the channel's sake.
    _connection: Connection,
}

/// Where a URL points, without its user or password, for messages.
fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}{}",
            u.host_str().unwrap_or("?"),
            u.port().unwrap_or(5672),
            u.path()
        ),
        Err(_) => "(a URL that does not parse)".into(),
    }
}

impl Publisher {
    pub async fn connect(bus: &Bus) -> Result<Publisher, String> {
        let url = std::env::var(&bus.amqp_url_env).map_err(|_| {
            format!(
                "the bus {} has no broker: set {} to its amqp:// URL",
                bus.name, bus.amqp_url_env
            )
        })?;
        let at = shown(&url);
        let connection =
            crate::clients::amqp::connect(&url, "tenant-reconcile", Duration::from_secs(10))
                .await
                .map_err(|e| match e {
                    crate::clients::amqp::ConnectError::Timeout => {
                        format!("the bus {} at {at} did not answer within 10 s", bus.name)
                    }
                    crate::clients::amqp::ConnectError::Failed(e) => {
                        format!("cannot reach the bus {} at {at}: {e}", bus.name)
                    }
                })?;
        let failed =
            |what: &str, e: lapin::Error| format!("the bus {} at {at}: {what}: {e}", bus.name);
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| failed("open a channel", e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| failed("ask for publisher confirms", e))?;
        channel
            .exchange_declare(
                &bus.exchange,
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| failed(&format!("declare the exchange {}", bus.exchange), e))?;
        Ok(Publisher {
            channel,
            exchange: bus.exchange.clone(),
            _connection: connection,
        })
    }

    pub async fn publish(&self, d: &Due) -> Result<(), String> {
        let properties = BasicProperties::default()
            .with_message_id(ShortString::from(d.event_id.clone()))
            .with_content_type(ShortString::from("application/json"))
            .with_delivery_mode(2);
        let confirm = self
            .channel
            .basic_publish(
                &self.exchange,
                &d.event_type,
                BasicPublishOptions::default(),
                d.payload.as_bytes(),
                properties,
            )
            .await
            .map_err(|e| format!("publishing failed: {e}"))?
            .await
            .map_err(|e| format!("the broker did not confirm: {e}"))?;
        match confirm {
            Confirmation::Ack(_) => Ok(()),
            Confirmation::Nack(_) => Err("the broker refused the message (nack)".into()),
            Confirmation::NotRequested => Err("the broker was not asked to confirm".into()),
        }
    }
}

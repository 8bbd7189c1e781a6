//! The offboarding's export of a vhost's definitions.

use async_trait::async_trait;
use serde_json::Value;

use crate::model::resource::{Key, Kind};
use crate::targets::provider::{Export, ExportRequest, ProviderError};

use super::RabbitMq;

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

//! Connecting to an AMQP broker (RabbitMQ) with lapin on tokio, for every caller: the
//! outbox relay's bus and the broker target's smoke tests.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

/// Why a connection was not made.
pub enum ConnectError {
    /// No answer within the time given.
    Timeout,
    /// The broker refused it, or could not be reached.
    Failed(lapin::Error),
}

/// Connects to `url` within `timeout`, naming the connection `name` in the broker's list.
pub async fn connect(url: &str, name: &str, timeout: Duration) -> Result<Connection, ConnectError> {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio)
        .with_connection_name(name.into());
    tokio::time::timeout(timeout, Connection::connect(url, properties))
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(ConnectError::Failed)
}

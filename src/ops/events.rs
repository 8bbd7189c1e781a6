//! `events`: the outbox's deliveries and their attempts read, deliveries made due again, a
//! webhook a `410 Gone` disabled enabled again, and a round of delivery.

use std::sync::Arc;

use crate::delivery::{AttemptRow, Filter, Report, Row};
use crate::targets::provider::ControlPlane;
use crate::workspace::Workspace;
use crate::Error;

/// The control plane the config names, which keeps the outbox and its deliveries.
fn control(ws: &Workspace) -> Arc<dyn ControlPlane> {
    ws.targets(ws.repo.migrations.clone()).control
}

/// The deliveries `filter` asks for, oldest event first.
pub async fn deliveries(ws: &Workspace, filter: &Filter) -> Result<Vec<Row>, Error> {
    let control = control(ws);
    control.deliveries(filter).await.map_err(Error::Control)
}

/// The deliveries of one event, and every attempt of them, oldest first.
pub async fn event(ws: &Workspace, id: &str) -> Result<(Vec<Row>, Vec<AttemptRow>), Error> {
    let control = control(ws);
    let filter = Filter {
        event_id: Some(id.to_string()),
        ..Default::default()
    };
    let rows = control.deliveries(&filter).await.map_err(Error::Control)?;
    if rows.is_empty() {
        return Ok((rows, Vec::new()));
    }
    let attempts = control
        .delivery_attempts(id)
        .await
        .map_err(Error::Control)?;
    Ok((rows, attempts))
}

/// Makes the deliveries of these events due again; how many there were.
pub async fn redeliver(ws: &Workspace, ids: &[String]) -> Result<usize, Error> {
    let control = control(ws);
    control.redeliver(ids).await.map_err(Error::Control)
}

/// Enables the webhook `name` again; whether it was disabled. A webhook the config does not
/// declare is refused, and nothing is changed.
pub async fn enable_webhook(ws: &Workspace, name: &str) -> Result<bool, Error> {
    if !ws.repo.config.webhooks.iter().any(|w| w.name == name) {
        return Err(Error::Usage(format!(
            "tenant-reconcile.hcl declares no webhook {name:?}; nothing was changed"
        )));
    }
    let control = control(ws);
    control
        .enable_subscriber(name)
        .await
        .map_err(Error::Control)
}

/// One round of delivery: every subscriber's due events sent, and each attempt recorded.
pub async fn deliver(ws: &Workspace) -> Result<Report, Error> {
    crate::delivery::deliver(ws).await
}

//! `events deliver`: the outbox relay, run on demand.

use std::path::Path;

use clap::Subcommand;
use tenant_reconcile::workspace::Workspace;

use super::ExitCode;

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Deliver the outbox's events that are due to the config's webhooks, and exit: each
    /// at least once, in order per tenant and subscriber, failures retried by later runs.
    Deliver,
}

pub async fn run(root: &Path, cmd: EventsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        EventsCommand::Deliver => {
            let ws = Workspace::open(root)?;
            if ws.repo.config.webhooks.is_empty() {
                println!("No subscribers: tenant-reconcile.hcl declares no webhook.");
                return Ok(0);
            }
            let report = tenant_reconcile::delivery::deliver(&ws).await?;
            println!(
                "Delivered {} event{}; {} failed and will be retried; {} dead.",
                report.delivered,
                if report.delivered == 1 { "" } else { "s" },
                report.failed,
                report.dead
            );
            for s in &report.disabled {
                println!("The webhook {s} answered 410 Gone and is disabled.");
            }
            Ok(0)
        }
    }
}

//! `events deliver`: the outbox relay, run on demand.

use std::path::Path;

use clap::Subcommand;
use tenant_reconcile::workspace::Workspace;

use super::ExitCode;

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Deliver the outbox's events that are due to the config's webhooks, and exit: each
    /// at least once, in order per tenant and subscriber, failures retried by later runs.
    Deliver {
        /// Keep delivering as new events arrive and retries fall due (a long-running relay).
        #[arg(long)]
        follow: bool,
        /// With --follow: how often the outbox is looked at.
        #[arg(long, value_parser = super::parse_duration, default_value = "1s", value_name = "DURATION")]
        every: std::time::Duration,
    },
}

/// `Delivered 5 events; 1 failed and will be retried; 0 dead.`, and each webhook a 410
/// disabled.
pub fn summary(report: &tenant_reconcile::delivery::Report) -> String {
    let mut out = format!(
        "Delivered {} event{}; {} failed and will be retried; {} dead.",
        report.delivered,
        if report.delivered == 1 { "" } else { "s" },
        report.failed,
        report.dead
    );
    for s in &report.disabled {
        out += &format!("\nThe webhook {s} answered 410 Gone and is disabled.");
    }
    out
}

pub async fn run(root: &Path, cmd: EventsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        EventsCommand::Deliver { follow, every } => {
            let ws = Workspace::open(root)?;
            if ws.repo.config.webhooks.is_empty() {
                println!("No subscribers: tenant-reconcile.hcl declares no webhook.");
                return Ok(0);
            }
            loop {
                let report = tenant_reconcile::delivery::deliver(&ws).await?;
                if !follow || report.delivered + report.failed + report.dead > 0 {
                    println!("{}", summary(&report));
                }
                if !follow {
                    return Ok(0);
                }
                tokio::time::sleep(every).await;
            }
        }
    }
}

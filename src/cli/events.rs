//! `events deliver`: the outbox relay, run on demand.

use std::path::Path;

use clap::Subcommand;
use tenant_reconcile::ops::events;
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
    /// List the deliveries: each event for each subscriber, with its status and last error.
    List {
        /// Only this tenant's.
        #[arg(long, value_name = "SLUG")]
        tenant: Option<String>,
        /// Only those that failed and are to be tried again.
        #[arg(long, conflicts_with = "dead")]
        failed: bool,
        /// Only those given up.
        #[arg(long)]
        dead: bool,
        #[arg(long)]
        json: bool,
    },
    /// One event's deliveries and every attempt of them.
    Show {
        /// The event's id (its webhook-id).
        id: String,
    },
    /// Deliver these events again, dead or delivered: they are due now.
    Redeliver {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Enable a webhook that a `410 Gone` disabled.
    Enable {
        /// The webhook's name in tenant-reconcile.hcl.
        webhook: String,
    },
}

/// One line per delivery: event, type, tenant, subscriber, status, attempts, what is next.
fn table(rows: &[tenant_reconcile::delivery::Row]) -> String {
    use std::fmt::Write;
    if rows.is_empty() {
        return "No deliveries.\n".into();
    }
    let mut out = format!(
        "{:36}  {:24}  {:14}  {:10}  {:9}  {:>8}  NEXT / LAST ERROR\n",
        "EVENT", "TYPE", "TENANT", "WEBHOOK", "STATUS", "ATTEMPTS"
    );
    for r in rows {
        let next = match (r.status.as_str(), &r.next_at, &r.last_error) {
            ("delivered", ..) => r.delivered_at.clone().unwrap_or_default(),
            ("pending", Some(at), Some(e)) => format!("{at} (last: {e})"),
            ("pending", Some(at), None) => at.clone(),
            (_, _, Some(e)) => e.clone(),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{:36}  {:24}  {:14}  {:10}  {:9}  {:>8}  {next}",
            r.event_id,
            r.event_type,
            r.slug.as_deref().unwrap_or("-"),
            r.subscriber,
            r.status,
            r.attempts
        );
    }
    out
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
    if report.pruned > 0 {
        out += &format!(
            "\nPruned {} event{} delivered more than keep_days ago.",
            report.pruned,
            if report.pruned == 1 { "" } else { "s" }
        );
    }
    out
}

pub async fn run(root: &Path, cmd: EventsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        EventsCommand::List {
            tenant,
            failed,
            dead,
            json,
        } => {
            let ws = Workspace::open(root)?;
            let filter = tenant_reconcile::delivery::Filter {
                slug: tenant,
                failed,
                dead,
                event_id: None,
            };
            let rows = events::deliveries(&ws, &filter).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", table(&rows));
            }
            Ok(0)
        }
        EventsCommand::Show { id } => {
            let ws = Workspace::open(root)?;
            let (rows, attempts) = events::event(&ws, &id).await?;
            if rows.is_empty() {
                anyhow::bail!("no delivery of an event {id:?}\n  hint: `tenant-reconcile events list` lists them");
            }
            print!("{}", table(&rows));
            println!();
            for a in attempts {
                println!(
                    "  {}  {:10}  {:>4}  {:>6} ms  {}",
                    a.at,
                    a.subscriber,
                    a.status_code.map_or("-".into(), |c| c.to_string()),
                    a.latency_ms,
                    a.error.as_deref().unwrap_or("")
                );
            }
            Ok(0)
        }
        EventsCommand::Redeliver { ids } => {
            let ws = Workspace::open(root)?;
            let n = events::redeliver(&ws, &ids).await?;
            if n == 0 {
                anyhow::bail!("no delivery of those events\n  hint: `tenant-reconcile events list --dead` lists the dead ones");
            }
            println!(
                "{n} deliver{} due again: `tenant-reconcile events deliver` sends them.",
                if n == 1 { "y is" } else { "ies are" }
            );
            Ok(0)
        }
        EventsCommand::Enable { webhook } => {
            let ws = Workspace::open(root)?;
            if events::enable_webhook(&ws, &webhook).await? {
                println!(
                    "The webhook {webhook} is enabled again; what waited for it is delivered next."
                );
            } else {
                println!("The webhook {webhook} was not disabled.");
            }
            Ok(0)
        }
        EventsCommand::Deliver { follow, every } => {
            let ws = Workspace::open(root)?;
            if ws.repo.config.webhooks.is_empty() && ws.repo.config.buses.is_empty() {
                println!("No subscribers: tenant-reconcile.hcl declares no webhook or bus.");
                return Ok(0);
            }
            // Interrupted, the round under way ends with what it sent recorded: a delivery
            // cut short would be sent again by the next run (at least once, never lost).
            let stop =
                super::interrupt::listen("Stopping once the deliveries under way are recorded.")?;
            loop {
                let report = events::deliver(&ws).await?;
                if !follow || report.delivered + report.failed + report.dead > 0 {
                    println!("{}", summary(&report));
                }
                if !follow || stop.is_cancelled() {
                    return Ok(0);
                }
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = stop.cancelled() => return Ok(0),
                }
            }
        }
    }
}

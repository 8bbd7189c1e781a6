//! `check [SLUG…]`: the smoke tests of active tenants, as a health table or JSON. Exit 0
//! when every tenant is healthy, 2 when one is not, 1 when the checks could not run.

use std::path::Path;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tenant_reconcile::check::{CheckOptions, CheckReport};
use tenant_reconcile::workspace::Workspace;

use super::ExitCode;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Only these tenants (every active one by default).
    #[arg(value_name = "SLUG")]
    slugs: Vec<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Tenants checked at once.
    #[arg(long, default_value_t = 8)]
    parallelism: usize,
    /// How long to wait for the state lock to record the outcomes (for `show`).
    #[arg(long, value_parser = super::parse_duration, default_value = "10s", value_name = "DURATION")]
    lock_timeout: Duration,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

pub async fn run(root: &Path, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let tenants = args
        .slugs
        .iter()
        .map(|s| tenant_reconcile::slug::Slug::parse(s).map_err(|e| anyhow::anyhow!("{s:?}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (ws, state) = Workspace::open_with_state(root, None).await?;
    let opts = CheckOptions {
        tenants,
        parallelism: args.parallelism,
        lock_timeout: args.lock_timeout,
    };
    let report = tenant_reconcile::check::check(&ws, state, &opts).await?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&json(&report))?),
        Format::Text => print!("{}", table(&report)),
    }
    if let Some(why) = &report.not_recorded {
        anstream::eprintln!("Warning: the outcomes were not recorded for `show`: {why}");
    }
    Ok(if report.healthy() { 0 } else { 2 })
}

/// Each checked tenant's health, then each tenant not checked with why
/// (`"checked": false`, no checks, `healthy` false when it should be active).
fn json(report: &CheckReport) -> serde_json::Value {
    let mut out: Vec<serde_json::Value> = report
        .tenants
        .iter()
        .map(|t| serde_json::to_value(t).unwrap_or_default())
        .collect();
    out.extend(report.not_checked.iter().map(|t| {
        serde_json::json!({
            "slug": t.slug,
            "checked": false,
            "healthy": !t.should_be_active,
            "checks": [],
            "lifecycle": t.lifecycle,
            "reason": t.reason,
        })
    }));
    serde_json::Value::Array(out)
}

/// One line per check: tenant, check, outcome, latency, what it found; then a summary.
fn table(report: &CheckReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if report.tenants.is_empty() {
        out.push_str(&format!("No active tenants to check{}.\n", stuck(report)));
        not_checked(&mut out, report);
        return out;
    }
    let tw = report
        .tenants
        .iter()
        .map(|t| t.slug.as_str().len())
        .max()
        .unwrap_or(6)
        .max(6);
    let cw = report
        .tenants
        .iter()
        .flat_map(|t| t.health.checks.iter().map(|c| c.name.len()))
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(
        out,
        "{:tw$}  {:cw$}  {:8}  {:>8}  DETAIL",
        "TENANT", "CHECK", "RESULT", "LATENCY"
    );
    for t in &report.tenants {
        for c in &t.health.checks {
            let result = match (c.ok, c.advisory) {
                (true, _) => "ok",
                (false, true) => "advisory",
                (false, false) => "FAILED",
            };
            let _ = writeln!(
                out,
                "{:tw$}  {:cw$}  {result:8}  {:>5} ms  {}",
                t.slug.as_str(),
                c.name,
                c.latency_ms,
                c.message.lines().next().unwrap_or_default()
            );
        }
    }
    let unhealthy: Vec<&str> = report
        .tenants
        .iter()
        .filter(|t| !t.healthy)
        .map(|t| t.slug.as_str())
        .collect();
    let n = report.tenants.len();
    let stuck = stuck(report);
    if unhealthy.is_empty() {
        let _ = write!(out, "\n{n} tenant{} healthy", if n == 1 { "" } else { "s" });
    } else {
        let _ = write!(
            out,
            "\n{} of {n} tenant{} unhealthy: {}",
            unhealthy.len(),
            if n == 1 { "" } else { "s" },
            unhealthy.join(", ")
        );
    }
    let _ = writeln!(out, "{stuck}.");
    not_checked(&mut out, report);
    out
}

/// `; 1 tenant that should be active is not: initech`, or nothing.
fn stuck(report: &CheckReport) -> String {
    let stuck: Vec<&str> = report
        .not_checked
        .iter()
        .filter(|t| t.should_be_active)
        .map(|t| t.slug.as_str())
        .collect();
    match stuck.len() {
        0 => String::new(),
        1 => format!("; 1 tenant that should be active is not: {}", stuck[0]),
        n => format!(
            "; {n} tenants that should be active are not: {}",
            stuck.join(", ")
        ),
    }
}

/// The tenants not checked, each with why.
fn not_checked(out: &mut String, report: &CheckReport) {
    use std::fmt::Write;
    if report.not_checked.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nNot checked (only active tenants are):");
    for t in &report.not_checked {
        let _ = writeln!(out, "  {}: {}", t.slug, t.reason);
    }
}

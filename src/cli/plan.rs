use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use tenant_reconcile::provider::files::write_atomic;
use tenant_reconcile::render;
use tenant_reconcile::workspace::Workspace;

use super::{ExitCode, SelectArgs};

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Exit 0 with no changes, 1 on error, 2 when there are changes.
    #[arg(long)]
    detailed_exitcode: bool,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Save the plan for `apply FILE`.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    select: SelectArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
    Markdown,
}

pub async fn run(root: &Path, args: PlanArgs) -> anyhow::Result<ExitCode> {
    let ws = Workspace::open(root)?;
    let plan = tenant_reconcile::ops::plan(&ws, &args.select.options()?).await?;
    match args.format {
        Format::Text => anstream::print!("{}", render::text::render(&plan)),
        Format::Json => println!("{}", render::json(&plan)),
        Format::Markdown => print!("{}", render::markdown::render(&plan)),
    }
    if let Some(out) = &args.out {
        write_atomic(out, plan.to_json().as_bytes())
            .map_err(|e| anyhow::anyhow!("cannot write the plan to {}: {e}", out.display()))?;
        if matches!(args.format, Format::Text) {
            anstream::println!("\nSaved the plan to {}. Apply exactly this plan with:\n    tenant-reconcile apply {}", out.display(), out.display());
        }
    }
    Ok(if args.detailed_exitcode && plan.has_changes() {
        2
    } else {
        0
    })
}

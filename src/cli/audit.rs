//! `audit [SLUG]`: the deletion audit, as a table or JSON.

use std::path::Path;

use clap::Args;
use tenant_reconcile::workspace::Workspace;

use super::ExitCode;

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this tenant.
    slug: Option<String>,
    /// One JSON array, for compliance tooling.
    #[arg(long)]
    json: bool,
}

pub async fn run(root: &Path, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let slug = args
        .slug
        .as_deref()
        .map(|s| tenant_reconcile::slug::Slug::parse(s).map_err(|e| anyhow::anyhow!("{s:?}: {e}")))
        .transpose()?;
    let ws = Workspace::open(root)?;
    let entries = tenant_reconcile::ops::audit(&ws, slug.as_ref()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        print!("{}", tenant_reconcile::model::audit::render(&entries));
    }
    Ok(0)
}

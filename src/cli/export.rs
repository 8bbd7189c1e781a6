//! `export SLUG`: a tenant's data in a form it can load again, with a manifest.

use std::path::{Path, PathBuf};

use clap::Args;
use tenant_reconcile::workspace::Workspace;

use super::ExitCode;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The tenant.
    slug: String,
    /// The folder to write into (it must be empty or not exist yet). Default: a new folder
    /// under the local target's `exports/<slug>/`.
    #[arg(long, value_name = "DIR")]
    to: Option<PathBuf>,
}

pub async fn run(root: &Path, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let slug = tenant_reconcile::slug::Slug::parse(&args.slug)
        .map_err(|e| anyhow::anyhow!("{:?}: {e}", args.slug))?;
    let ws = Workspace::open(root)?;
    let (dir, manifest, sha256) = tenant_reconcile::ops::export(&ws, &slug, args.to).await?;
    let rows: u64 = manifest.tables.iter().map(|t| t.rows).sum();
    let bytes: u64 = manifest.objects.iter().map(|o| o.size).sum();
    println!("Exported {slug} to {}:", dir.display());
    println!(
        "  {} table{} ({rows} row{}), {} object{} ({bytes} bytes), schema version {}",
        manifest.tables.len(),
        if manifest.tables.len() == 1 { "" } else { "s" },
        if rows == 1 { "" } else { "s" },
        manifest.objects.len(),
        if manifest.objects.len() == 1 { "" } else { "s" },
        if manifest.schema_version.is_empty() {
            "(none)"
        } else {
            &manifest.schema_version
        }
    );
    println!("  manifest.json sha256 {sha256}");
    Ok(0)
}

#[derive(Debug, Args)]
pub struct ExportUrlArgs {
    /// The tenant.
    slug: String,
    /// How long the links work (at most 7 days).
    #[arg(long, value_parser = super::parse_duration, default_value = "7d", value_name = "DURATION")]
    expires_in: std::time::Duration,
}

/// `export-url SLUG`: presigned links to the files of an offboarding export kept in S3. They
/// are secrets, printed to stdout only.
pub async fn url(root: &Path, args: ExportUrlArgs) -> anyhow::Result<ExitCode> {
    let slug = tenant_reconcile::slug::Slug::parse(&args.slug)
        .map_err(|e| anyhow::anyhow!("{:?}: {e}", args.slug))?;
    let ws = Workspace::open(root)?;
    let links = tenant_reconcile::ops::export_links(&ws, &slug, args.expires_in).await?;
    eprintln!(
        "Links to {slug}'s export, valid for {}; anyone holding one can download that file:",
        humantime::format_duration(args.expires_in)
    );
    for (file, link) in links {
        println!("{file}\t{link}");
    }
    Ok(0)
}

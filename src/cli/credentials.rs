//! `credentials SLUG`: the tenant's database login, for an operator to connect as it.

use std::io::IsTerminal;
use std::path::Path;

use clap::Args;
use tenant_reconcile::workspace::Workspace;

use super::ExitCode;

#[derive(Debug, Args)]
pub struct CredentialsArgs {
    /// The tenant.
    slug: String,
}

pub async fn run(root: &Path, args: CredentialsArgs) -> anyhow::Result<ExitCode> {
    let slug = tenant_reconcile::slug::Slug::parse(&args.slug)
        .map_err(|e| anyhow::anyhow!("{:?}: {e}", args.slug))?;
    let ws = Workspace::open(root)?;
    let login = tenant_reconcile::ops::credentials(&ws, &slug).await?;
    // Printed to stdout only, never logged; a reminder when a person is looking.
    if std::io::stderr().is_terminal() {
        eprintln!("# the login of {slug}: a secret, keep it out of logs and tickets");
    }
    if let Some(why) = &login.refused {
        eprintln!("note: {why}");
    }
    println!("{}", login.text);
    Ok(0)
}

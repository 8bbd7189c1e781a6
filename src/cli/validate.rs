use std::path::Path;

use tenant_reconcile::state::State;
use tenant_reconcile::{desired, repo};

use super::ExitCode;

#[derive(Debug, Default, clap::Args)]
pub struct ValidateArgs {
    /// Check the files as committed at this commit, branch or tag (read from git's
    /// objects, no checkout) instead of the working tree.
    #[arg(long, value_name = "REV")]
    rev: Option<String>,
}

pub fn run(root: &Path, args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let files = match &args.rev {
        Some(rev) => repo::Files::at_revision(root, rev)?,
        None => repo::Files::WorkingTree,
    };
    let repo = repo::load_from(root, &files)?;
    // Templates are rendered for every tenant too, and its checks' URLs: one that fails for
    // one tenant is a problem to see now, not during apply.
    desired::compile_each(&repo, &State::empty(), None, &Default::default(), |d| {
        tenant_reconcile::plan::declared_checks(&repo, &d)?;
        Ok(None::<()>)
    })?;
    anstream::println!(
        "Success! {} tenants, {} plans, {} templates and {} migrations are valid.",
        repo.tenants.len(),
        repo.plans.len(),
        repo.templates.files.len() + usize::from(repo.templates.has_seed),
        repo.migrations.len()
    );
    Ok(0)
}

use std::path::Path;

use tenant_reconcile::state::State;
use tenant_reconcile::{desired, repo};

use super::ExitCode;

pub fn run(root: &Path) -> anyhow::Result<ExitCode> {
    let repo = repo::load(root)?;
    // Templates are rendered for every tenant too: a template that fails for one tenant
    // is a problem to see now, not during apply.
    desired::compile(&repo, &State::empty(), None, &Default::default())?;
    anstream::println!(
        "Success! {} tenants, {} plans, {} templates and {} migrations are valid.",
        repo.tenants.len(),
        repo.plans.len(),
        repo.templates.files.len() + usize::from(repo.templates.has_seed),
        repo.migrations.len()
    );
    Ok(0)
}

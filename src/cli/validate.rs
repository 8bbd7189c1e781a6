use std::path::Path;

use tenant_reconcile::workspace::Workspace;

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
    // A slug a tombstone holds is refused as plan refuses it, from the same record.
    match recorded_state(root) {
        Ok(state) => {
            let reused = tenant_reconcile::plan::reused_slugs(&repo, &state);
            if !reused.is_empty() {
                return Err(tenant_reconcile::diagnostic::Diagnostics(reused).into());
            }
        }
        Err(why) => anstream::eprintln!(
            "Warning: the state could not be read, so slugs were not checked against deprovisioned tenants: {why}"
        ),
    }
    for shared in repo.shared_owners() {
        anstream::eprintln!("Warning: {shared}");
    }
    // The schema editors check tenant files with is written once (`init`): a plan, flag or
    // quota added since is missing from it, and editors would refuse what validate accepts.
    let schema_file = root.join(tenant_reconcile::scaffold::SCHEMA_FILE);
    if let (None, Ok(written)) = (&args.rev, std::fs::read_to_string(&schema_file)) {
        if written != tenant_reconcile::schema::tenant(&repo) {
            anstream::eprintln!(
                "Warning: {} is stale: the plans, flags or quotas changed since it was written, so editors check tenant files against old ones\n  hint: `tenant-reconcile schema tenant > {}`",
                tenant_reconcile::scaffold::SCHEMA_FILE,
                tenant_reconcile::scaffold::SCHEMA_FILE
            );
        }
    }
    let count = |n: usize, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    anstream::println!(
        "Success! {}, {}, {} and {} are valid.",
        count(repo.tenants.len(), "tenant"),
        count(repo.plans.len(), "plan"),
        count(
            repo.templates.files.len() + usize::from(repo.templates.has_seed),
            "template"
        ),
        count(repo.migrations.len(), "migration")
    );
    Ok(0)
}

/// The recorded state, read where the config says it is (the empty state before anything
/// was applied), for the checks that need what plan knows.
pub fn recorded_state(root: &Path) -> Result<State, String> {
    let backend = match Workspace::config_backend(root) {
        Ok(Some(backend)) => backend,
        Ok(None) => return Err("the config has problems".into()),
        Err(e) => return Err(tenant_reconcile::causes::chain(&e)),
    };
    let load = async { backend.load().await };
    // Called from the command's runtime, whose worker this thread is.
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(load))
        .map_err(|e| tenant_reconcile::causes::chain(&e))
}

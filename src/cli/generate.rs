//! What is generated from the tool's own definitions: JSON Schemas of the files (from the
//! loader's types), shell completions and the man page (from these clap definitions).

use std::path::Path;

use clap::{Args, CommandFactory, ValueEnum};
use clap_complete::Shell;

use super::{Cli, ExitCode};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SchemaOf {
    /// A tenant file, with this repo's plans, flags and quotas.
    Tenant,
    /// tenant-reconcile.hcl.
    Config,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Which file's schema.
    of: SchemaOf,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

pub fn schema(root: &Path, args: SchemaArgs) -> anyhow::Result<ExitCode> {
    let text = match args.of {
        SchemaOf::Tenant => {
            let repo = tenant_reconcile::repo::load(root)?;
            tenant_reconcile::schema::tenant(&repo)
        }
        SchemaOf::Config => tenant_reconcile::schema::config(),
    };
    print!("{text}");
    Ok(0)
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    const BIN: &str = "tenant-reconcile";
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, BIN, &mut script);
    let mut script = String::from_utf8(script)?;
    if matches!(args.shell, Shell::Bash) {
        // clap_complete's bash script names a subcommand's state after the binary with its
        // `-` as `__` where it walks the words (`tenant__reconcile__subcmd__plan`), but as
        // `__subcmd__` where it completes (`tenant__subcmd__reconcile__subcmd__plan`), so
        // no subcommand's flags complete (clap-rs/clap#6421). One spelling makes them meet.
        script = script.replace(&BIN.replace('-', "__subcmd__"), &BIN.replace('-', "__"));
    }
    print!("{script}");
    Ok(0)
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write the pages into this folder (made if missing), one for the tool and one for each
    /// subcommand, instead of printing the tool's page.
    #[arg(long = "dir", value_name = "DIR")]
    pages_dir: Option<std::path::PathBuf>,
}

pub fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    match args.pages_dir {
        None => clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?,
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("cannot make {}: {e}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .map_err(|e| anyhow::anyhow!("cannot write the pages to {}: {e}", dir.display()))?;
        }
    }
    Ok(0)
}

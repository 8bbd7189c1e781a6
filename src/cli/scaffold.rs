//! `init [DIR]` and `new-tenant SLUG …`: the files people start from.

use std::path::{Path, PathBuf};

use clap::Args;
use tenant_reconcile::scaffold::{self, NewTenant};

use super::ExitCode;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to make the repo (made if missing); the current folder by default.
    #[arg(value_name = "DIR")]
    path: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct NewTenantArgs {
    /// The tenant's slug: 3 to 40 of a-z, 0-9 and -, starting with a letter.
    slug: String,
    /// Its plan, one of plans/.
    #[arg(long)]
    plan: String,
    /// Its owner's email: the first user, bound to the tenant.
    #[arg(long)]
    owner: String,
    /// Where it lives (`eu-west-1`).
    #[arg(long)]
    region: String,
    /// The organisation's name; made from the slug if not given.
    #[arg(long)]
    name: Option<String>,
    /// The language of its seed data (`en`, `de`, `fr`).
    #[arg(long)]
    locale: Option<String>,
}

pub fn init(cwd: &Path, args: InitArgs) -> anyhow::Result<ExitCode> {
    let dir = args.path.map_or_else(|| cwd.to_path_buf(), |d| cwd.join(d));
    let written = scaffold::init(&dir)?;
    println!("Made a tenant repo in {}:", dir.display());
    for file in &written {
        println!("  {}", file.display());
    }
    let cd = if dir == cwd {
        String::new()
    } else {
        format!("cd {} && ", dir.display())
    };
    println!("\nNext: {cd}tenant-reconcile plan, then tenant-reconcile apply (the local target, no server needed).");
    println!(
        "Editors with yaml-language-server check tenant files against {}.",
        scaffold::SCHEMA_FILE
    );
    Ok(0)
}

pub fn new_tenant(root: &Path, args: NewTenantArgs) -> anyhow::Result<ExitCode> {
    // A slug a deprovisioned tenant had is never given again: refused before the file is
    // written, as plan would refuse it after.
    if let Ok(slug) = tenant_reconcile::slug::Slug::parse(&args.slug) {
        match super::validate::recorded_state(root) {
            Ok(state) => {
                if let Some(why) = tenant_reconcile::plan::tombstoned(&state, &slug) {
                    anyhow::bail!("{why}; nothing was written\n  hint: give the new tenant another slug; the old one stays in the registry as a tombstone");
                }
            }
            Err(why) => anstream::eprintln!(
                "Warning: the state could not be read, so the slug was not checked against deprovisioned tenants: {why}"
            ),
        }
    }
    // Started in a folder of tenants/ (`-C tenants/eu`): the file goes there.
    let cwd = std::env::current_dir()?;
    let folder = cwd
        .strip_prefix(root.join("tenants"))
        .ok()
        .filter(|rel| !rel.as_os_str().is_empty());
    let file = scaffold::new_tenant(
        root,
        &NewTenant {
            slug: &args.slug,
            name: args.name.as_deref(),
            plan: &args.plan,
            owner: &args.owner,
            region: &args.region,
            locale: args.locale.as_deref(),
            folder,
        },
    )?;
    println!(
        "Wrote {}; `tenant-reconcile plan` shows what it adds.",
        file.display()
    );
    Ok(0)
}

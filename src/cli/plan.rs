use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use tenant_reconcile::private_files::write_atomic;
use tenant_reconcile::render;
use tenant_reconcile::workspace::Workspace;

use super::{ExitCode, SelectArgs};

#[derive(Debug, Default, Args)]
pub struct PlanArgs {
    /// Exit 0 with no changes, 1 on error, 2 when there are changes.
    #[arg(long)]
    detailed_exitcode: bool,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Plan from the files as committed at this commit, branch or tag (read from git's
    /// objects, no checkout) instead of the working tree.
    #[arg(long, value_name = "REV")]
    rev: Option<String>,
    /// Plan only the tenants whose inputs changed since BASE (a branch, tag or commit;
    /// compared from its merge-base with the head, as a pull request is): a changed tenant
    /// file, or a plan file, template, migration or config that reaches them.
    #[arg(long, value_name = "BASE", conflicts_with = "tenants")]
    changed_since: Option<String>,
    /// Save the plan for `apply FILE`.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Report only what changed outside tenant-reconcile (live resources against the
    /// recorded state), proposing nothing. Exits 2 when there is drift, 0 when there is
    /// none; `--format json` is a drift report for schedulers and alerting.
    #[arg(long, conflicts_with_all = ["out", "no_refresh", "rotate_credentials", "allow_replace", "allow_missing_tenants", "changed_since"])]
    refresh_only: bool,
    #[command(flatten)]
    select: SelectArgs,
}

#[derive(Debug, Default, Clone, Copy, ValueEnum)]
enum Format {
    #[default]
    Text,
    Json,
    Markdown,
}

pub async fn run(root: &Path, args: PlanArgs) -> anyhow::Result<ExitCode> {
    if args.refresh_only {
        let ws = Workspace::open_at(root, args.rev.as_deref())?;
        let options = args.select.options()?;
        let report = tenant_reconcile::ops::drift(&ws, options.tenants.as_deref()).await?;
        match args.format {
            Format::Text => print!("{}", render::drift::text(&report)),
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("a drift report serializes")
            ),
            Format::Markdown => print!("{}", render::drift::markdown(&report)),
        }
        // A scheduled run alerts on this: 2 means something changed outside.
        return Ok(if report.has_drift() { 2 } else { 0 });
    }
    let mut options = args.select.options()?;
    let rev = args.rev.as_deref();
    // What changed is found before any tenant file is read: when only tenant files did, the
    // plan reads theirs and their records, and no other tenant's.
    let opening = Workspace::opening(root, rev)?;
    let changed = match &args.changed_since {
        Some(base) => Some(tenant_reconcile::changes::changed_files(
            root,
            base,
            rev,
            opening.config(),
            opening.files(),
        )?),
        None => None,
    };
    let scope = match &changed {
        // A new key re-keys every tenant: such a plan is the fleet's.
        _ if options.rotate_master_key => None,
        Some(c) => c.tenant_files_only(),
        None => options
            .tenants
            .as_ref()
            .map(|only| only.iter().map(ToString::to_string).collect()),
    };
    let (ws, state) = Workspace::open_from(opening, scope).await?;
    let changes = match (&args.changed_since, changed) {
        (Some(base), Some(c)) => {
            let c = c.reach(&ws.repo);
            options.tenants = Some(c.tenants());
            options.reach_of_changes = true;
            Some((base, c))
        }
        _ => None,
    };
    let plan = tenant_reconcile::ops::plan(&ws, state, &options).await?;
    let mut plan = match &changes {
        Some((base, c)) => plan.with_changes(base, c),
        None => plan,
    };
    // A saved plan may be applied later, elsewhere: it carries what git had not committed,
    // so that apply can warn or refuse as it would from this working tree. (Only when
    // saving: asking git for the status of every input costs time a plain plan need not.)
    if args.out.is_some() && args.rev.is_none() {
        plan.uncommitted = ws.uncommitted_inputs();
    }
    match args.format {
        Format::Text => super::print_lines::plan(&plan),
        Format::Json => println!("{}", render::json(&plan)),
        Format::Markdown => print!("{}", render::markdown::render(&plan)),
    }
    if let Some(out) = &args.out {
        write_atomic(out, plan.to_json().as_bytes())
            .map_err(|e| anyhow::anyhow!("cannot write the plan to {}: {e}", out.display()))?;
        if matches!(args.format, Format::Text) {
            anstream::println!("\nSaved the plan to {}. Apply exactly this plan with:\n    tenant-reconcile apply {}", out.display(), out.display());
        }
        if let Some(note) = super::uncommitted::saved_note(&plan.uncommitted, out) {
            anstream::eprintln!("{note}");
        }
    }
    Ok(if args.detailed_exitcode && plan.has_changes() {
        2
    } else {
        0
    })
}

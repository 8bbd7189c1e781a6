//! What apply and `plan --out` say about input files git has not committed: the state
//! records the commit a tenant was applied from, which should hold what was applied.

use std::path::Path;

use tenant_reconcile::workspace::Uncommitted;

/// Where a list of uncommitted files comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The working tree, asked now.
    WorkingTree,
    /// A saved plan, which recorded them when it was made.
    SavedPlan,
}

/// Warns about `dirty` files before an apply, or with `require_clean` refuses it.
/// `commit` is the one the state will record.
pub fn check(
    source: Source,
    dirty: &[Uncommitted],
    commit: Option<&str>,
    require_clean: bool,
) -> anyhow::Result<()> {
    if dirty.is_empty() {
        return Ok(());
    }
    let list = listed(dirty);
    let what = match source {
        Source::WorkingTree => counted(dirty.len(), "has", "have"),
        Source::SavedPlan => format!(
            "the plan was made while {}",
            counted(dirty.len(), "had", "had")
        ),
    };
    if require_clean {
        let fix = match source {
            Source::WorkingTree => "commit them",
            // The plan keeps its record: committing now would not change it.
            Source::SavedPlan => "commit them and make the plan again",
        };
        anyhow::bail!(
            "{what}; nothing was applied:{list}\n  hint: {fix}, or apply without --require-clean"
        );
    }
    let commit = commit.map_or("no commit".to_string(), |c| {
        format!("commit {}", &c[..c.len().min(12)])
    });
    let hint = match source {
        Source::WorkingTree => "commit first, or pass --require-clean to refuse in this case",
        Source::SavedPlan => {
            "make plans from committed files, or pass --require-clean to refuse such a plan"
        }
    };
    anstream::eprintln!(
        "warning: {what}; the state will record {commit}, which does not hold them:{list}\n  hint: {hint}"
    );
    Ok(())
}

/// What `plan --out` says when the plan it saved records uncommitted files.
pub fn saved_note(dirty: &[Uncommitted], out: &Path) -> Option<String> {
    (!dirty.is_empty()).then(|| {
        format!(
            "note: {}; the saved plan records them, and `apply --require-clean {}` will refuse it:{}",
            counted(dirty.len(), "has", "have"),
            out.display(),
            listed(dirty)
        )
    })
}

/// "1 input file has uncommitted changes", "2 input files have …".
fn counted(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 input file {one} uncommitted changes")
    } else {
        format!("{n} input files {many} uncommitted changes")
    }
}

/// Files listed one by one up to this many; more are counted by folder and status.
const LISTED: usize = 12;

/// The files, one per line with git's status letter; past a dozen, a line per folder and
/// status with how many (`80 new files in tenants/`), so 80 new tenants are not 80 lines.
fn listed(dirty: &[Uncommitted]) -> String {
    if dirty.len() <= LISTED {
        return dirty
            .iter()
            .map(|u| format!("\n  {} {}", u.status, u.path))
            .collect();
    }
    let mut groups: std::collections::BTreeMap<(String, char), usize> = Default::default();
    for u in dirty {
        let folder = match u.path.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/"),
            None => "the repo's top folder".to_string(),
        };
        *groups.entry((folder, u.status)).or_default() += 1;
    }
    groups
        .into_iter()
        .map(|((folder, status), n)| {
            let what = match status {
                'A' | '?' => "new",
                'D' => "deleted",
                'R' => "renamed",
                _ => "changed",
            };
            format!(
                "\n  {status} {n} {what} file{} in {folder}",
                if n == 1 { "" } else { "s" }
            )
        })
        .collect::<String>()
        + "\n  (`git status` lists them)"
}

//! `watch [--apply]`: validate and plan again on every save of a tenant, plan, template or
//! migration file (or the config), for the person editing them; with `--apply`, a local
//! reconcile loop that applies each change as well.
//!
//! Editors save in bursts (a temporary file, a rename, a backup), so changes are debounced:
//! a run starts once no file has changed for `--debounce`.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use clap::Args;
use notify::{RecursiveMode, Watcher};
use tenant_reconcile::repo;

use super::{parse_duration, ExitCode};

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Apply each change too (only when every target and the state are local).
    #[arg(long)]
    apply: bool,
    /// How long the files must be quiet before a run starts.
    #[arg(long, value_parser = parse_duration, default_value = "300ms", value_name = "DURATION")]
    debounce: Duration,
}

pub async fn run(root: &Path, args: WatchArgs) -> anyhow::Result<ExitCode> {
    let root = root.to_path_buf();
    if args.apply {
        refuse_remote(&root)?;
    }
    // Ctrl-C is caught once, for the whole session: pressed during a run it is not lost.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let filter_root = root.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            return;
        };
        // The watcher lost events (its queue overflowed): look at everything again.
        if event.need_rescan() {
            let _ = tx.send(filter_root.join(repo::config::CONFIG_FILE));
            return;
        }
        // Only writes count: every run reads the files, and reads must not start another.
        let write = matches!(
            event.kind,
            notify::EventKind::Create(_)
                | notify::EventKind::Modify(_)
                | notify::EventKind::Remove(_)
        ) && !matches!(
            event.kind,
            notify::EventKind::Modify(notify::event::ModifyKind::Metadata(_))
        );
        if write {
            for path in event.paths {
                // Only inputs reach the loop, so writes elsewhere never hold a run back.
                if input_path(&filter_root, &path).is_some() {
                    let _ = tx.send(path);
                }
            }
        }
    })?;
    // The input folders and the root itself (for the config file), not the whole tree:
    // `.git` or a build folder would use up the system's inotify watches.
    watcher.watch(&root, RecursiveMode::NonRecursive)?;
    for dir in ["tenants", "plans", "templates", "migrations"] {
        let dir = root.join(dir);
        if dir.is_dir() {
            watcher.watch(&dir, RecursiveMode::Recursive)?;
        }
    }
    tokio::select! {
        _ = cycle(&root, args.apply) => {}
        _ = interrupt.recv() => return Ok(0),
    }
    println!(
        "\nWatching {} for changes to tenants, plans, templates and migrations (Ctrl-C to stop).",
        root.display()
    );
    loop {
        let first = tokio::select! {
            path = rx.recv() => path,
            _ = interrupt.recv() => None,
        };
        let Some(first) = first else {
            return Ok(0);
        };
        let mut changed = BTreeSet::new();
        changed.extend(input_path(&root, &first));
        // Wait for the burst to end.
        while let Ok(Some(path)) = tokio::time::timeout(args.debounce, rx.recv()).await {
            changed.extend(input_path(&root, &path));
        }
        // An editor's or sed's temporary file, gone again by now, is not worth naming.
        changed.retain(|rel: &String| {
            root.join(rel).exists()
                || [".yaml", ".yml", ".hcl", ".tera", ".sql"]
                    .iter()
                    .any(|ext| rel.ends_with(ext))
        });
        if changed.is_empty() {
            continue;
        }
        let files: Vec<String> = changed.into_iter().collect();
        println!(
            "\n── {} changed at {} ──\n",
            files.join(", "),
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        );
        tokio::select! {
            _ = cycle(&root, args.apply) => {}
            _ = interrupt.recv() => return Ok(0),
        }
    }
}

/// One run: validate, then plan (and apply). Problems are printed, never fatal: the next
/// save may fix them.
async fn cycle(root: &Path, apply: bool) {
    if let Err(e) = super::validate::run(root, Default::default()) {
        super::report(&e);
        return;
    }
    let result = if apply {
        super::apply::run(root, super::apply::ApplyArgs::auto()).await
    } else {
        super::plan::run(root, super::plan::PlanArgs::default()).await
    };
    if let Err(e) = result {
        super::report(&e);
    }
}

/// The changed path relative to the repo, if it is an input: under tenants/, plans/,
/// templates/ or migrations/, or the config; never a hidden file (editors' swap files) or
/// anything under the local target's folder.
fn input_path(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    if rel.as_os_str().is_empty() || path.is_dir() {
        return None;
    }
    if rel
        .components()
        .any(|c| matches!(c, Component::Normal(n) if n.to_string_lossy().starts_with('.')))
    {
        return None;
    }
    let text = rel.to_string_lossy().replace('\\', "/");
    let first = text.split('/').next().unwrap_or("");
    let wanted = ["tenants", "plans", "templates", "migrations"].contains(&first)
        || text == repo::config::CONFIG_FILE;
    // Backup files some editors leave beside the one saved.
    (wanted && !text.ends_with('~')).then_some(text)
}

/// `watch --apply` reconciles whatever the files say the moment they are saved: fine for
/// the local target on a laptop, never for shared servers.
fn refuse_remote(root: &Path) -> anyhow::Result<()> {
    let repo = repo::load(root)?;
    let c = &repo.config;
    let remote: Vec<String> = [
        ("state.backend", &c.state.backend),
        ("targets.control_plane", &c.targets.control_plane),
        ("targets.data", &c.targets.data),
        ("targets.buckets", &c.targets.buckets),
    ]
    .iter()
    .filter(|(_, v)| v.as_str() != "local")
    .map(|(k, v)| format!("{k} = {v:?}"))
    .collect();
    if !remote.is_empty() {
        anyhow::bail!(
            "watch --apply only runs against the local target; this repo uses {}\n  hint: use `watch` to see each plan, and apply through review",
            remote.join(", ")
        );
    }
    Ok(())
}

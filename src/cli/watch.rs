//! `watch [--apply]`: validate and plan again on every save of a tenant, plan, template or
//! migration file (or the config), for the person editing them; with `--apply`, a local
//! reconcile loop that applies each change as well.
//!
//! Editors save in bursts (a temporary file, a rename, a backup), so changes are debounced:
//! a run starts once no file has changed for `--debounce`.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, RwLock};
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
    // Shared with the watcher's thread, which filters events by it; the migrations folder
    // is the config's, so a saved config can move it.
    let dirs = Arc::new(RwLock::new(input_dirs(&root)));
    let filter_root = root.clone();
    let filter_dirs = Arc::clone(&dirs);
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
            let dirs = filter_dirs
                .read()
                .expect("the folder list is never left half-written");
            for path in event.paths {
                // Only inputs reach the loop, so writes elsewhere never hold a run back.
                if input_path(&filter_root, &dirs, &path).is_some() {
                    let _ = tx.send(path);
                }
            }
        }
    })?;
    // The input folders and the root itself (for the config file), not the whole tree:
    // `.git` or a build folder would use up the system's inotify watches.
    watcher.watch(&root, RecursiveMode::NonRecursive)?;
    let initial = dirs.read().expect("not poisoned").clone();
    watch_dirs(&mut watcher, &root, &initial)?;
    tokio::select! {
        _ = cycle(&root, args.apply) => {}
        _ = interrupt.recv() => return Ok(0),
    }
    let names: Vec<String> = initial
        .iter()
        .map(|d| format!("{}/", slashed(d)))
        .chain([repo::config::CONFIG_FILE.to_string()])
        .collect();
    println!(
        "\nWatching {} for changes to {} (Ctrl-C to stop).",
        root.display(),
        names.join(", ")
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
        let current = dirs.read().expect("not poisoned").clone();
        changed.extend(input_path(&root, &current, &first));
        // Wait for the burst to end.
        while let Ok(Some(path)) = tokio::time::timeout(args.debounce, rx.recv()).await {
            changed.extend(input_path(&root, &current, &path));
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
        if changed.contains(repo::config::CONFIG_FILE) {
            let now = input_dirs(&root);
            let added: Vec<PathBuf> = now
                .iter()
                .filter(|d| !current.contains(d))
                .cloned()
                .collect();
            // Watching goes on without the new folder rather than stopping.
            if let Err(e) = watch_dirs(&mut watcher, &root, &added) {
                anstream::eprintln!("warning: cannot watch the new migrations folder: {e}");
            }
            *dirs.write().expect("not poisoned") = now;
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

/// The folders whose files are inputs, relative to the repo root: tenants/, plans/,
/// templates/ and the migrations folder the config names (`migrations_dir`). A config that
/// does not load leaves the default; the run that follows reports what is wrong with it.
fn input_dirs(root: &Path) -> Vec<PathBuf> {
    let configured = repo::load_config(root, &repo::files::Files::WorkingTree)
        .map(|loaded| loaded.config.migrations_dir)
        .unwrap_or_default();
    // `./db/migrations` is `db/migrations`; the config check refuses `..` and absolute paths.
    let migrations: PathBuf = Path::new(&configured)
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    let migrations = if migrations.as_os_str().is_empty() {
        PathBuf::from("migrations")
    } else {
        migrations
    };
    let mut dirs: Vec<PathBuf> = ["tenants", "plans", "templates"]
        .into_iter()
        .map(PathBuf::from)
        .collect();
    if !dirs.contains(&migrations) {
        dirs.push(migrations);
    }
    dirs
}

/// Watches each of `dirs` that exists, with everything under it.
fn watch_dirs(watcher: &mut impl Watcher, root: &Path, dirs: &[PathBuf]) -> notify::Result<()> {
    for dir in dirs {
        let dir = root.join(dir);
        if dir.is_dir() {
            watcher.watch(&dir, RecursiveMode::Recursive)?;
        }
    }
    Ok(())
}

fn slashed(path: &Path) -> String {
    path.to_string_lossy().replace('\\', "/")
}

/// The changed path relative to the repo, if it is an input: under one of `dirs`, or the
/// config; never a hidden file (editors' swap files) or anything under the local target's
/// folder.
fn input_path(root: &Path, dirs: &[PathBuf], path: &Path) -> Option<String> {
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
    let text = slashed(rel);
    let wanted = dirs.iter().any(|d| rel.starts_with(d)) || text == repo::config::CONFIG_FILE;
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

//! `watch [--apply]`: validate and plan again on every save of a tenant, plan, template or
//! migration file (or the config), for the person editing them; with `--apply`, a local
//! reconcile loop that applies each change as well.
//!
//! Editors save in bursts (a temporary file, a rename, a backup), so changes are debounced:
//! a run starts once no file has changed for `--debounce`.
//!
//! Ctrl-C (or SIGTERM) ends it: a plan under way is dropped, an apply under way stops as
//! `apply` does when interrupted, and watch then exits with 0.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use notify::{RecursiveMode, Watcher};
use tenant_reconcile::repo;
use tokio_util::sync::CancellationToken;

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
    // Caught once, for the whole session: pressed during a run it is not lost.
    let stop = super::interrupt::listen(if args.apply {
        super::interrupt::APPLY
    } else {
        "Stopping."
    })?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut folders = Folders::new(input_dirs(&root).unwrap_or_default());
    let filter_root = root.clone();
    let filter_wanted = Arc::clone(&folders.wanted);
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
            let wanted = filter_wanted
                .lock()
                .expect("never poisoned: no code panics holding it");
            for path in event.paths {
                // Only inputs reach the loop, so writes elsewhere never hold a run back;
                // and folders made at the top, which may be an input folder that was not
                // there yet.
                if input_path(&filter_root, &wanted, &path).is_some()
                    || (path.parent() == Some(filter_root.as_path()) && path.is_dir())
                {
                    let _ = tx.send(path);
                }
            }
        }
    })?;
    // The input folders and the root itself (for the config file and folders made later),
    // not the whole tree: `.git` or a build folder would use up the system's inotify watches.
    watcher.watch(&root, RecursiveMode::NonRecursive)?;
    folders.sync(&mut watcher, &root);
    cycle(&root, args.apply, &stop).await;
    if stop.is_cancelled() {
        return Ok(0);
    }
    println!(
        "\nWatching {} for changes to {} (Ctrl-C to stop).",
        root.display(),
        folders.describe(&root)
    );
    loop {
        let first = tokio::select! {
            path = rx.recv() => path,
            () = stop.cancelled() => None,
        };
        let Some(first) = first else {
            return Ok(0);
        };
        let mut paths = vec![first];
        // Wait for the burst to end.
        while let Ok(Some(path)) = tokio::time::timeout(args.debounce, rx.recv()).await {
            paths.push(path);
        }
        let wanted = folders.wanted();
        let mut changed: BTreeSet<String> = paths
            .iter()
            .filter_map(|p| input_path(&root, &wanted, p))
            .collect();
        // A saved config may name another migrations folder; one that does not load keeps
        // the folders as they were (the run below reports what is wrong with it).
        if changed.contains(repo::config::CONFIG_FILE) {
            if let Some(dirs) = input_dirs(&root) {
                folders.set_wanted(dirs);
            }
        }
        // A folder watched only now may hold files written before it was: they count.
        changed.extend(
            folders
                .sync(&mut watcher, &root)
                .iter()
                .map(|d| format!("{}/", slashed(d))),
        );
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
        if stop.is_cancelled() {
            return Ok(0);
        }
        cycle(&root, args.apply, &stop).await;
        if stop.is_cancelled() {
            return Ok(0);
        }
    }
}

/// The input folders: those the config names (shared with the watcher's thread, which
/// filters events by them) and those of them being watched. A folder that is not there
/// cannot be watched; it is tried again after every burst of events.
struct Folders {
    wanted: Arc<Mutex<Vec<PathBuf>>>,
    watched: BTreeSet<PathBuf>,
}

impl Folders {
    fn new(wanted: Vec<PathBuf>) -> Folders {
        Folders {
            wanted: Arc::new(Mutex::new(wanted)),
            watched: BTreeSet::new(),
        }
    }

    fn wanted(&self) -> Vec<PathBuf> {
        self.wanted.lock().expect("never poisoned").clone()
    }

    fn set_wanted(&mut self, dirs: Vec<PathBuf>) {
        *self.wanted.lock().expect("never poisoned") = dirs;
    }

    /// Stops watching folders no longer wanted and starts on wanted ones that are there now;
    /// returns those it started on. A folder that cannot be watched is reported, and
    /// watching goes on without it.
    fn sync(&mut self, watcher: &mut impl Watcher, root: &Path) -> Vec<PathBuf> {
        let wanted = self.wanted();
        self.watched.retain(|d| {
            let keep = wanted.contains(d);
            if !keep {
                // It may be gone already, which removed its watch with it.
                let _ = watcher.unwatch(&root.join(d));
            }
            keep
        });
        let mut started = Vec::new();
        for dir in wanted {
            if self.watched.contains(&dir) || !root.join(&dir).is_dir() {
                continue;
            }
            match watcher.watch(&root.join(&dir), RecursiveMode::Recursive) {
                Ok(()) => {
                    self.watched.insert(dir.clone());
                    started.push(dir);
                }
                Err(e) => {
                    anstream::eprintln!("warning: cannot watch {}/: {e}", slashed(&dir));
                }
            }
        }
        started
    }

    /// "tenants/, plans/, templates/, db/migrations/ (not there yet), tenant-reconcile.hcl"
    fn describe(&self, root: &Path) -> String {
        self.wanted()
            .iter()
            .map(|d| {
                let missing = if root.join(d).is_dir() {
                    ""
                } else {
                    " (not there yet)"
                };
                format!("{}/{missing}", slashed(d))
            })
            .chain([repo::config::CONFIG_FILE.to_string()])
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One run: validate, then plan (and apply). Problems are printed, never fatal: the next
/// save may fix them. Interrupted, a plan is dropped where it is (it writes nothing), and
/// an apply stops at its checkpoints.
async fn cycle(root: &Path, apply: bool, stop: &CancellationToken) {
    if let Err(e) = super::validate::run(root, Default::default()) {
        super::report(&e);
        return;
    }
    let result = if apply {
        super::apply::run(root, super::apply::ApplyArgs::auto(), stop.clone()).await
    } else {
        tokio::select! {
            result = super::plan::run(root, super::plan::PlanArgs::default()) => result,
            () = stop.cancelled() => return,
        }
    };
    if let Err(e) = result {
        super::report(&e);
    }
}

/// The input folders the config names, or `None` when it does not load.
fn input_dirs(root: &Path) -> Option<Vec<PathBuf>> {
    let loaded = repo::load_config(root, &repo::files::Files::WorkingTree).ok()?;
    (!loaded.has_problems()).then(|| loaded.config.input_dirs())
}

fn slashed(path: &Path) -> String {
    path.to_string_lossy().replace('\\', "/")
}

/// The changed path relative to the repo, if it is an input: under one of `dirs`, or the
/// config; never a hidden file (editors' swap files) or anything under the local target's
/// folder.
fn input_path(root: &Path, dirs: &[PathBuf], path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    if rel.as_os_str().is_empty() || path.is_dir() || !repo::config::is_input_of(dirs, rel) {
        return None;
    }
    let text = slashed(rel);
    // Backup files some editors leave beside the one saved.
    (!text.ends_with('~')).then_some(text)
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

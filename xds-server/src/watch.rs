//! Hot reload: watch the config, debounce, reload.
//!
//! Folders are watched, not files: editors save by writing a new file and renaming it over the
//! old one, which replaces the inode a file watch would follow (ENVOY-NOTES). Events for
//! files that are not part of the config (swap files, backups) are ignored. A burst of events
//! (an editor writes, renames, chmods) becomes one reload once the folder has been quiet for the
//! debounce interval.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::control::ControlPlane;

/// Long enough to fold an editor's write-rename-chmod burst, short enough to stay well inside
/// the one-second reload promise (ENVOY-NOTES: ~50 ms was enough).
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// Keeps the watch task alive; dropping it stops watching.
pub struct WatchHandle {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching the control plane's config path and the folders of every file it read.
/// Fails when the folders cannot be watched (the caller decides whether that is fatal).
pub fn spawn(cp: Arc<ControlPlane>, debounce: Duration) -> notify::Result<WatchHandle> {
    let (tx, rx) = mpsc::unbounded_channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(move |ev| {
        // The receiver only goes away at shutdown; nothing to do with an event then.
        let _ = tx.send(ev);
    })?;
    let mut watched = BTreeSet::new();
    refresh_watches(&mut watcher, &mut watched, &cp)?;
    let task = tokio::spawn(run(cp, watcher, watched, rx, debounce));
    Ok(WatchHandle { task })
}

/// The folders to watch: the config folder (or the config file's folder) and the folder of
/// every file the last good load read.
fn folders(cp: &ControlPlane) -> BTreeSet<PathBuf> {
    let root = absolute(cp.config_path());
    let mut out = BTreeSet::new();
    out.insert(if root.is_dir() {
        root.clone()
    } else {
        parent(&root)
    });
    for f in cp.files() {
        out.insert(parent(&absolute(&f)));
    }
    out
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn refresh_watches(
    watcher: &mut RecommendedWatcher,
    watched: &mut BTreeSet<PathBuf>,
    cp: &ControlPlane,
) -> notify::Result<()> {
    let want = folders(cp);
    for gone in watched.difference(&want) {
        if let Err(e) = watcher.unwatch(gone) {
            tracing::debug!(folder = %gone.display(), error = %e, "unwatch failed");
        }
    }
    for new in want.difference(watched) {
        watcher.watch(new, RecursiveMode::NonRecursive)?;
        tracing::debug!(folder = %new.display(), "watching");
    }
    *watched = want;
    Ok(())
}

/// What counts as a change to the config.
struct Interest {
    root: PathBuf,
    root_is_dir: bool,
    files: BTreeSet<PathBuf>,
}

impl Interest {
    fn of(cp: &ControlPlane) -> Self {
        let root = absolute(cp.config_path());
        Self {
            root_is_dir: root.is_dir(),
            files: cp.files().iter().map(|f| absolute(f)).collect(),
            root,
        }
    }

    /// A file the last load read, the config file itself, or (config folder) any YAML file
    /// in it: a new file joins the config.
    fn covers(&self, ev: &notify::Event) -> bool {
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return false;
        }
        ev.paths.iter().any(|p| {
            if self.files.contains(p) || *p == self.root {
                return true;
            }
            let yaml = matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
            self.root_is_dir && yaml && p.parent() == Some(self.root.as_path())
        })
    }
}

async fn run(
    cp: Arc<ControlPlane>,
    mut watcher: RecommendedWatcher,
    mut watched: BTreeSet<PathBuf>,
    mut rx: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    debounce: Duration,
) {
    let mut interest = Interest::of(&cp);
    while let Some(ev) = rx.recv().await {
        let relevant = match ev {
            Ok(ev) => interest.covers(&ev),
            Err(e) => {
                tracing::warn!(error = %e, "file watcher error; reloading to be safe");
                true
            }
        };
        if !relevant {
            continue;
        }
        // Debounce: wait until the folders have been quiet for `debounce`.
        loop {
            match tokio::time::timeout(debounce, rx.recv()).await {
                Ok(Some(_)) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let cp2 = cp.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || cp2.reload()).await {
            tracing::error!(error = %e, "config reload task failed");
        }
        interest = Interest::of(&cp);
        if let Err(e) = refresh_watches(&mut watcher, &mut watched, &cp) {
            tracing::error!(error = %e, "cannot watch a folder of the config; edits there are not seen until the next reload");
        }
    }
}

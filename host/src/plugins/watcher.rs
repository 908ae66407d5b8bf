//! Watches the plugins folder and reloads tenants whose files changed, and the models folder and
//! reloads models whose files changed.
//!
//! Only complete files trigger a reload: inotify's close-after-write, a rename into place, or a
//! removal — never "created" or "modified", which fire on empty and partial files. Events are
//! debounced per tenant ([`DEBOUNCE`]) and handled on one low-priority thread, so compiling a new
//! version never runs on, or competes much with, the threads that process windows.

use super::PluginHost;
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher as _};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{debug, error, warn};

/// Quiet time after the last event of a tenant before it is reloaded.
pub const DEBOUNCE: Duration = Duration::from_millis(50);
/// Nice value of the reload thread (Linux): compile in the background.
const RELOAD_NICENESS: i32 = 10;

enum Message {
    Fs(notify::Result<notify::Event>),
    Stop,
}

/// A running watcher; dropping it stops the watch and joins its thread.
pub struct Watcher {
    _watcher: notify::RecommendedWatcher,
    tx: mpsc::Sender<Message>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.tx.send(Message::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl PluginHost {
    /// Starts watching the plugins folder (and the models folder, when it exists).
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<Watcher> {
        let (tx, rx) = mpsc::channel();
        let events = tx.clone();
        let mut watcher = notify::recommended_watcher(move |e| {
            let _ = events.send(Message::Fs(e));
        })?;
        let plugins = self.options().plugins_dir.clone();
        watcher.watch(&plugins, RecursiveMode::Recursive)?;
        let models = self.options().models_dir.clone();
        let models = if models.is_dir() {
            watcher.watch(&models, RecursiveMode::Recursive)?;
            Some(models)
        } else {
            None
        };
        let host = self.clone();
        let thread = std::thread::Builder::new()
            .name("edgepm-plugin-reload".into())
            .spawn(move || run(host, plugins, models, rx))?;
        Ok(Watcher { _watcher: watcher, tx, thread: Some(thread) })
    }
}

/// What a changed path belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Tenant(String),
    Model(String),
}

fn roots(dir: &Path) -> [PathBuf; 2] {
    // Events may name paths through the folder as given or as resolved: accept both.
    [dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()), dir.to_path_buf()]
}

fn run(host: Arc<PluginHost>, plugins: PathBuf, models: Option<PathBuf>, rx: mpsc::Receiver<Message>) {
    lower_priority();
    let plugin_roots = roots(&plugins);
    let model_roots = models.as_deref().map(roots);
    let mut due: BTreeMap<Target, Instant> = BTreeMap::new();
    loop {
        let timeout = due
            .values()
            .min()
            .map_or(Duration::from_secs(3600), |t| t.saturating_duration_since(Instant::now()));
        match rx.recv_timeout(timeout) {
            Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(Message::Fs(Err(e))) => error!(error = %e, "Plugin folder watch failed"),
            Ok(Message::Fs(Ok(event))) => {
                if !is_complete(&event.kind) {
                    continue;
                }
                for path in &event.paths {
                    let target = plugin_roots
                        .iter()
                        .find_map(|r| tenant_of(r, path))
                        .map(Target::Tenant)
                        .or_else(|| {
                            model_roots.iter().flatten().find_map(|r| tenant_of(r, path)).map(Target::Model)
                        });
                    if let Some(target) = target {
                        debug!(?target, path = %path.display(), kind = ?event.kind, "Watched folder changed");
                        due.insert(target, Instant::now() + DEBOUNCE);
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        let ready: Vec<Target> = due.iter().filter(|(_, t)| **t <= now).map(|(n, _)| n.clone()).collect();
        for target in ready {
            due.remove(&target);
            match target {
                Target::Tenant(tenant) => host.reload_tenant(&tenant),
                Target::Model(model) => host.models().reload(&model),
            }
        }
    }
}

/// Events after which a file is whole (or gone).
fn is_complete(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Create(CreateKind::Folder)
            | EventKind::Remove(_)
    )
}

/// `<root>/<tenant>/...` → `tenant`.
fn tenant_of(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let first = rel.components().next()?;
    let name = first.as_os_str().to_str()?;
    (!name.starts_with('.')).then(|| name.to_string())
}

fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread; no memory is shared with the kernel.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, RELOAD_NICENESS)
        };
        if rc != 0 {
            warn!("Could not lower the priority of the plugin reload thread");
        }
    }
}

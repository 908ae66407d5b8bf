//! One file per subcommand of `edgepm` (the binary's own modules: the library does the work,
//! these parse arguments, call it and print).

pub mod dataset;
pub mod demo;
pub mod healthcheck;
pub mod model;
pub mod plugin;
pub mod process;
pub mod query;
pub mod replay;
pub mod report;
pub mod run;
pub mod simulate;
pub mod spectrum;
pub mod tenant;
pub mod validate;

use edgepm::metrics::Metrics;
use edgepm::plugins::{HostOptions, PluginHost};
use edgepm::store::MemoryHistory;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct FolderArgs {
    /// Tenant folders: <plugins-dir>/<tenant>/{tenant.toml,preprocess.wasm,score.wasm,policy.wasm}.
    #[arg(long, default_value = "plugins-deployed")]
    pub plugins_dir: PathBuf,
    /// Model folders: <models-dir>/<model>/{metadata.json,...}.
    #[arg(long, default_value = "models")]
    pub models_dir: PathBuf,
    /// Cache of compiled plugins (default: <plugins-dir>/.cache).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

impl FolderArgs {
    fn options(&self) -> HostOptions {
        let mut o = HostOptions::new(&self.plugins_dir, &self.models_dir);
        o.cache_dir = Some(self.cache_dir.clone().unwrap_or_else(|| self.plugins_dir.join(".cache")));
        o
    }

    /// A plugin host over these folders with an in-memory history (no store).
    pub fn open_host(&self) -> anyhow::Result<Arc<PluginHost>> {
        PluginHost::open(self.options(), Arc::new(MemoryHistory::default()), Arc::new(Metrics::new()))
    }
}

/// A watch flag set on Ctrl-C or SIGTERM, from a thread of its own.
pub fn stop_signal() -> anyhow::Result<tokio::sync::watch::Receiver<bool>> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("edgepm-signals".into()).spawn(move || {
        runtime.block_on(async {
            #[cfg(unix)]
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            #[cfg(unix)]
            let terminate = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let terminate = std::future::pending::<()>();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate => {}
            }
            tracing::info!("Stopping (signal received)");
            let _ = tx.send(true);
        });
    })?;
    Ok(rx)
}

/// A counter raised on every SIGHUP (`systemctl reload edgepm`), from a thread of its own; never
/// raised off Unix. Registering it also keeps SIGHUP from killing the process.
pub fn reload_signal() -> anyhow::Result<tokio::sync::watch::Receiver<u64>> {
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        // Registered here, before the host starts: a SIGHUP from then on is a reload, never a kill.
        let mut hup = runtime.block_on(async { signal(SignalKind::hangup()) })?;
        std::thread::Builder::new().name("edgepm-sighup".into()).spawn(move || {
            runtime.block_on(async {
                while hup.recv().await.is_some() {
                    tx.send_modify(|n| *n += 1);
                }
            });
        })?;
    }
    #[cfg(not(unix))]
    std::mem::forget(tx);
    Ok(rx)
}

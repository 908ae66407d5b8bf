//! `edgepm process`: windows (JSON lines on stdin) through the tenants' plugins, one outcome
//! per window on stdout.

use super::FolderArgs;
use anyhow::Context as _;
use edgepm::pipeline::process_window;
use edgepm::types::Window;
use std::io::{BufRead, Write};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ProcessArgs {
    #[command(flatten)]
    pub folders: FolderArgs,
    /// Do not watch the plugins folder for new versions.
    #[arg(long)]
    pub no_watch: bool,
    /// Serve /healthz, /readyz and /metrics on this address while processing (port 0: any free
    /// port, printed in the log). Off by default.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<std::net::SocketAddr>,
}

pub fn run(args: ProcessArgs) -> anyhow::Result<ExitCode> {
    let host = args.folders.open_host()?;
    let _watcher =
        if args.no_watch { None } else { Some(host.watch().context("watching the plugins folder")?) };
    // The endpoints on a runtime thread of their own, for as long as this runs.
    let _http = match args.http {
        Some(addr) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("edgepm-http")
                .enable_all()
                .build()?;
            let state = edgepm::api::ApiState {
                host: host.clone(),
                needs_mqtt: false,
                store: None,
                acks: None,
                events: None,
                access: edgepm::api::ApiAccess::Open,
            };
            edgepm::api::start(runtime.handle(), addr, state, std::future::pending())?;
            Some(runtime)
        }
        None => None,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut ok, mut failed) = (0u64, 0u64);
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let result = serde_json::from_str::<Window>(&line)
            .map_err(|e| format!("line {}: not a window: {e}", n + 1))
            .and_then(|w| process_window(&host, w).map_err(|e| format!("line {}: {e}", n + 1)));
        match result {
            Ok(outcome) => {
                ok += 1;
                serde_json::to_writer(&mut out, &outcome)?;
                out.write_all(b"\n")?;
                out.flush()?;
            }
            Err(e) => {
                failed += 1;
                tracing::warn!("{e}");
            }
        }
    }
    tracing::info!(windows = ok, failed, "Done");
    Ok(ExitCode::SUCCESS)
}

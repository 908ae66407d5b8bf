//! The host's worker threads (ingest, acknowledgements, sinks, checkpoints) are the host: one
//! that panics or ends before shutdown leaves a process that still answers `/healthz` but no
//! longer works. [`spawn`] makes such a thread stop the whole process with
//! [`WORKER_DIED_EXIT`], so that systemd or ECS restarts it; the broker then redelivers every
//! message that was not acknowledged.

use crate::shutdown::Shutdown;
use std::panic::AssertUnwindSafe;

/// Exit status of a process whose worker thread died (`EX_SOFTWARE`).
pub const WORKER_DIED_EXIT: i32 = 70;

/// Spawns the worker `name`. When `f` panics, or returns before `shutdown` has begun, the
/// process exits with [`WORKER_DIED_EXIT`].
pub fn spawn(
    name: impl Into<String>,
    shutdown: Shutdown,
    f: impl FnOnce() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let name = name.into();
    std::thread::Builder::new().name(name.clone()).spawn(move || {
        let result = std::panic::catch_unwind(AssertUnwindSafe(f));
        let why = match result {
            Ok(()) if shutdown.begun() => return,
            Ok(()) => "ended before shutdown",
            Err(_) => "panicked",
        };
        tracing::error!(
            thread = %name,
            exit = WORKER_DIED_EXIT,
            "A worker thread {why}: stopping the process so that its supervisor restarts it"
        );
        std::process::exit(WORKER_DIED_EXIT);
    })
}

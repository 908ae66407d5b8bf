//! `edgepm run`: the host against an MQTT broker, until Ctrl-C or SIGTERM. SIGHUP reloads the
//! configuration: a new one that loads replaces the running host (a clean stop and start in
//! the same process: nothing acknowledged is lost, the broker's persistent session keeps what
//! arrives in between); one that does not load is reported and the running host keeps serving.

use edgepm::service::{HostConfig, Service};
use std::path::Path;
use std::process::ExitCode;
use tracing::{info, warn};

pub fn run(path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let mut config = HostConfig::from_file_or_env(path)?;
    let mut stop = super::stop_signal()?;
    let mut reload = super::reload_signal()?;
    let waiter = tokio::runtime::Builder::new_current_thread().build()?;
    loop {
        let service = Service::start(config.clone())?;
        let next = waiter.block_on(async {
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return None,
                    Ok(()) = reload.changed() => match HostConfig::from_file_or_env(path) {
                        Ok(c) => return Some(c),
                        Err(e) => warn!(
                            error = format!("{e:#}"),
                            "SIGHUP: the configuration does not load; the host keeps serving the one it started with"
                        ),
                    },
                }
            }
        });
        let totals = service.totals();
        let counts = service.stop()?;
        info!(
            messages = totals.messages,
            readings = totals.batch.readings,
            rejected = totals.batch.rejected,
            predictions = totals.batch.predictions,
            alerts = totals.batch.alerts,
            outbox_left = counts.outbox,
            "Stopped"
        );
        match next {
            None => return Ok(ExitCode::SUCCESS),
            Some(c) => {
                info!("SIGHUP: starting again with the reloaded configuration");
                config = c;
            }
        }
    }
}

//! `edgepm run`: the host against an MQTT broker, until Ctrl-C or SIGTERM.

use std::process::ExitCode;

pub fn run(config: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let config = edgepm::service::HostConfig::from_file_or_env(config)?;
    let mut stop = super::stop_signal()?;
    let service = edgepm::service::Service::start(config)?;
    tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
        let _ = stop.wait_for(|s| *s).await;
    });
    let totals = service.totals();
    let counts = service.stop()?;
    tracing::info!(
        messages = totals.messages,
        readings = totals.batch.readings,
        rejected = totals.batch.rejected,
        predictions = totals.batch.predictions,
        alerts = totals.batch.alerts,
        outbox_left = counts.outbox,
        "Stopped"
    );
    Ok(ExitCode::SUCCESS)
}

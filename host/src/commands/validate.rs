//! `edgepm validate`: load every tenant of a plugins folder and report what would be rejected;
//! with `--config edgepm.toml`, also check the configuration and run each configured cloud
//! sink's health check (credentials resolve, the endpoint answers, the table, topic, identity,
//! database or bucket exists), saying which failed and why.

use super::FolderArgs;
use edgepm::service::HostConfig;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub folders: FolderArgs,
    /// A host configuration (or, without this flag, the TOML in $EDGEPM_CONFIG): its plugins
    /// and models folders are validated instead, and its cloud sinks checked against their
    /// servers.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// With a configuration: check it and the tenants only, not the cloud sinks' servers (e.g.
    /// while building an image, without the network).
    #[arg(long)]
    pub offline: bool,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let mut folders = args.folders;
    let from_env = std::env::var_os(edgepm::service::CONFIG_ENV).is_some_and(|v| !v.is_empty());
    let config = if args.config.is_some() || from_env {
        let c = HostConfig::from_file_or_env(args.config.as_deref())?;
        folders.plugins_dir = c.plugins_dir();
        folders.models_dir = c.models_dir();
        match &args.config {
            Some(path) => println!("{}: valid", path.display()),
            None => println!("${}: valid", edgepm::service::CONFIG_ENV),
        }
        Some(c)
    } else {
        anyhow::ensure!(!args.offline, "--offline checks a configuration: give --config or $EDGEPM_CONFIG");
        None
    };
    let host = folders.open_host()?;
    for name in host.tenant_names() {
        if let Some(p) = host.tenant(&name) {
            let [pre, score, policy] = p.versions();
            println!("{name}: preprocess {pre}, score {score}, policy {policy}, window {}", p.window_size);
        }
    }
    let rejected = host.rejected_versions();
    if rejected > 0 {
        eprintln!("{rejected} plugin version(s) rejected; see the log above");
    }
    let sinks_ok = match &config {
        Some(_) if args.offline => {
            println!("cloud sinks not checked (--offline)");
            true
        }
        Some(c) => check_sinks(c)?,
        None => true,
    };
    Ok(if rejected == 0 && sinks_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Runs the health check of every configured cloud sink; whether all passed.
fn check_sinks(config: &HostConfig) -> anyhow::Result<bool> {
    use edgepm::sinks::{influxdb, ses, sns, timestream};
    let metrics = edgepm::metrics::Metrics::new().telemetry.clone();
    let s = &config.sinks;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let results: Vec<(&str, Result<String, String>)> = runtime.block_on(async {
        let mut out = Vec::new();
        if let Some(c) = &s.timestream {
            out.push((
                "timestream",
                timestream::TimestreamSink::new(c.clone(), metrics.clone()).check().await,
            ));
        }
        if let Some(c) = &s.influxdb {
            let r = match influxdb::InfluxSink::new(c.clone()) {
                Ok(sink) => sink.check().await,
                Err(e) => Err(format!("{e:#}")),
            };
            out.push(("influxdb", r));
        }
        if let Some(c) = &s.sns {
            out.push(("sns", sns::SnsSink::new(c.clone(), metrics.clone()).check().await));
        }
        if let Some(c) = &s.ses {
            out.push(("ses", ses::SesSink::new(c.clone(), metrics.clone()).check().await));
        }
        out
    });
    if results.is_empty() {
        println!("no cloud sink configured ([sinks.*])");
    }
    let mut ok = true;
    for (sink, r) in results {
        match r {
            Ok(text) => println!("ok    {sink}: {text}"),
            Err(why) => {
                ok = false;
                println!("FAIL  {sink}: {why}");
            }
        }
    }
    Ok(ok)
}

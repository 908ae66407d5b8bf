//! `edgepm demo`: the whole telemetry path on one machine with embedded defaults — an MQTT
//! broker (rumqttd) on a free loopback port, tenant `default` on the frequency-aware bearing
//! pipeline (`bearing-spectrum` → `bearing-spectrum-xgb`, built into the binary → the reference
//! alert policy), the host, and simulated motors with accelerometers of which some wear out.

use crate::plugins::builtin;
use crate::service::{HostConfig, Service};
use crate::store::Counts;
use crate::types::Stage;
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::info;

/// Tenant the demo deploys.
pub const TENANT: &str = "default";

/// The model the demo's tenant scores with: the XGBoost model fitted on the FEMTO/PRONOSTIA
/// bearings' `bearing-spectrum` features (`models/femto.sh`). Its files are built into the binary
/// so the demo needs neither a training step nor files next to it.
pub const MODEL: &str = crate::tenants::BEARING_SPECTRUM_XGB.name;

/// The demo tenant's `tenant.toml`: the shipped tenant `vibration`'s pipeline with a commissioning
/// period fit for a demo of a minute (the simulated motors are healthy for its first fifth).
const TENANT_TOML: &str = r#"# Written by `edgepm demo`. See docs/plugins.md for every key.
threshold = 0.8
model = "bearing-spectrum-xgb"
# A window every reading; its features are medians over its 4 bursts, relative to the motor's
# healthy baseline: the median of its first 3 seconds of windows (a real machine: a day, 1440).
hop = 1
baseline_minutes = 0.05

[alerts]
email = ["manutencao@example.com"]

[limits]
deadline_ms = 250

[settings]
window_size = 4
language = "pt"
cooldown_minutes = 60
# The alert's history line: since when the RMS has stood above 1.5 × the motor's baseline.
vibration_feature = "vib_rms_rel"
vibration_alarm = 1.5
"#;

/// An MQTT broker inside this process, listening on `127.0.0.1:<port>`.
pub struct EmbeddedBroker {
    pub port: u16,
}

impl EmbeddedBroker {
    /// Starts rumqttd on a free loopback port and waits until it accepts connections.
    pub fn start() -> anyhow::Result<EmbeddedBroker> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = format!(
            r#"
id = 0
[router]
id = 0
max_connections = 10010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 1048576
max_inflight_count = 500
dynamic_filters = true
"#
        );
        let config: rumqttd::Config = toml::from_str(&config).context("embedded broker configuration")?;
        let mut broker = rumqttd::Broker::new(config);
        std::thread::Builder::new().name("edgepm-broker".into()).spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "Embedded MQTT broker stopped");
            }
        })?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers_mqtt(port) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the embedded MQTT broker did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(EmbeddedBroker { port })
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

/// Whether an MQTT broker on `127.0.0.1:port` accepts a session: connects, waits for the
/// CONNACK and disconnects cleanly. (A bare TCP probe would make rumqttd log an error for a
/// connection that never sent CONNECT.)
fn answers_mqtt(port: u16) -> bool {
    let mut options = rumqttc::MqttOptions::new("edgepm-demo-probe", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = rumqttc::Client::new(options, 4);
    for event in connection.iter() {
        match event {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                let _ = client.disconnect();
            }
            Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Deploys tenant [`TENANT`]: `bearing-spectrum`, the reference scorer and policy (alert e-mails
/// to a placeholder address, Portuguese wording), scoring with [`MODEL`]; plus the hand-weighted
/// baseline as model `default` (which data folders of earlier versions name). Keeps whatever is
/// already there — a folder of an earlier demo keeps its velocity pipeline, which cannot read the
/// motors' accelerometer bursts: the demo says so.
pub fn prepare(data_dir: &Path) -> anyhow::Result<()> {
    let tenant = data_dir.join("plugins").join(TENANT);
    std::fs::create_dir_all(&tenant).with_context(|| format!("creating {}", tenant.display()))?;
    for stage in Stage::ALL {
        let path = tenant.join(stage.file_name());
        if !path.exists() {
            let bytes =
                if stage == Stage::Preprocess { builtin::SPECTRUM_PREPROCESS } else { builtin::bytes(stage) };
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    let toml = tenant.join("tenant.toml");
    if !toml.exists() {
        std::fs::write(&toml, TENANT_TOML)?;
    } else if !std::fs::read_to_string(&toml).unwrap_or_default().contains(MODEL) {
        tracing::warn!(
            tenant = %tenant.display(),
            "This demo folder's tenant was written by an earlier edgepm on the velocity pipeline \
             (bearing-features); the demo's motors now publish accelerometer bursts it cannot score. \
             Remove the folder (or use another --data-dir) for the current demo."
        );
    }
    let models = data_dir.join("models");
    if !models.join(crate::config::DEFAULT_MODEL).join("metadata.json").exists() {
        crate::model::baseline::write(&models, crate::config::DEFAULT_MODEL)?;
    }
    crate::tenants::write_model_if_missing(&crate::tenants::BEARING_SPECTRUM_XGB, &models)
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub data_dir: PathBuf,
    /// `None`: until Ctrl-C.
    pub duration: Option<Duration>,
    pub motors: usize,
    pub failing: usize,
    /// Readings per second per motor.
    pub rate: f64,
    /// Where the dashboard, the API and the probes listen.
    pub http: std::net::SocketAddr,
}

/// What the demo did.
#[derive(Debug, Clone)]
pub struct DemoSummary {
    pub seconds: f64,
    pub published: u64,
    pub counts: Counts,
    pub dead_letters: u64,
    /// Highest probability per device, sorted by device.
    pub peak_probability: Vec<(String, f64)>,
    pub email_files: usize,
    pub mqtt_log_lines: usize,
    pub data_dir: PathBuf,
    pub http: Option<std::net::SocketAddr>,
    /// The weekly report written at the end (`<data-dir>/reports/<week>.pdf`).
    pub report: Option<PathBuf>,
}

/// Runs the demo until the duration is over or `stop` is set (Ctrl-C).
pub fn run(options: &DemoOptions, stop: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<DemoSummary> {
    prepare(&options.data_dir)?;
    let broker = EmbeddedBroker::start()?;
    info!(url = %broker.url(), "Embedded MQTT broker listening");
    let mut config = HostConfig::new(&options.data_dir, &broker.url());
    config.mqtt.client_id = "edgepm-demo".into();
    config.http.listen = Some(options.http);
    let service = Service::start(config)?;
    anyhow::ensure!(
        service.wait_subscribed(Duration::from_secs(30)),
        "the host did not subscribe to the embedded broker within 30 s"
    );
    let http = service.http_addr();
    if let Some(addr) = http {
        info!("Dashboard: http://{addr}/ (open it while the demo runs)");
    }

    // Failing motors wear out over the run: the defect starts at 20 % and fails at 70 % of it
    // (Ctrl-C only runs: over 5 minutes). Every motor carries an accelerometer.
    let span = options.duration.map_or(300.0, |d| d.as_secs_f64());
    let mut motors = crate::sim::fleet(TENANT, options.motors, options.failing, 0.2 * span, 0.7 * span, 42);
    for m in &mut motors {
        m.spec.sensor = crate::sim::Sensor::ACCELEROMETER;
    }
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut publish = crate::sim::PublishOptions::new(options.rate);
    publish.duration = options.duration;
    publish.samples = crate::sim::Sensor::ACCELEROMETER.default_samples();
    let published = runtime
        .block_on(crate::sim::publish(&broker.url(), "edgepm-demo-sim", &mut motors, &publish, stop))?
        .acked;

    // Let the host drain what was published and deliver its outbox.
    let drain_deadline = Instant::now() + Duration::from_secs(15);
    let reader = service.reader()?;
    while Instant::now() < drain_deadline {
        let t = service.totals();
        let stored = t.batch.readings + t.batch.duplicates + t.batch.rejected;
        let outbox = reader.outbox_depth().unwrap_or(0);
        if stored >= published && outbox == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let totals = service.totals();
    let store = service.store().clone();
    let counts = service.stop()?;
    let mut peak: Vec<(String, f64)> = Vec::new();
    for p in store.predictions(TENANT, None)? {
        match peak.iter_mut().find(|(d, _)| *d == p.device) {
            Some((_, best)) => *best = best.max(p.probability),
            None => peak.push((p.device.clone(), p.probability)),
        }
    }
    peak.sort_by(|a, b| a.0.cmp(&b.0));
    // The weekly report of the week the demo ran in (as far as it went).
    let report = match store.prediction_span() {
        Ok(Some((_, newest))) => {
            let week = crate::report::IsoWeek::containing(newest);
            let path = options.data_dir.join("reports").join(format!("{week}.pdf"));
            match crate::report::write(&store, week, &path) {
                Ok(_) => Some(path),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "The weekly report could not be written");
                    None
                }
            }
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "The weekly report could not be written");
            None
        }
    };
    let config = HostConfig::new(&options.data_dir, &broker.url());
    let email_files = std::fs::read_dir(config.email_dir())
        .map(|d| {
            d.filter_map(Result::ok).filter(|e| e.path().extension().is_some_and(|x| x == "eml")).count()
        })
        .unwrap_or(0);
    let mqtt_log_lines = std::fs::read_to_string(config.mqtt_log()).map(|s| s.lines().count()).unwrap_or(0);
    Ok(DemoSummary {
        seconds: started.elapsed().as_secs_f64(),
        published,
        counts,
        dead_letters: totals.batch.rejected,
        peak_probability: peak,
        email_files,
        mqtt_log_lines,
        data_dir: options.data_dir.clone(),
        http,
        report,
    })
}

impl std::fmt::Display for DemoSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.counts;
        let config = HostConfig::new(&self.data_dir, "mqtt://unused");
        writeln!(f, "edgepm demo: {:.0} s", self.seconds)?;
        writeln!(f, "  readings published   {}", self.published)?;
        writeln!(f, "  readings stored      {}", c.readings)?;
        writeln!(f, "  windows              {}", c.windows)?;
        writeln!(f, "  predictions          {}", c.predictions)?;
        writeln!(f, "  alerts               {}", c.alerts)?;
        writeln!(f, "  dead letters         {}", self.dead_letters)?;
        writeln!(f, "  outbox left          {}", c.outbox)?;
        writeln!(f, "  peak failure probability per motor:")?;
        for (device, p) in &self.peak_probability {
            writeln!(f, "    {device:<10} {:>5.1} %", p * 100.0)?;
        }
        writeln!(f, "  files:")?;
        writeln!(f, "    store              {}", config.store_path().display())?;
        writeln!(f, "    alert e-mails      {} ({} files)", config.email_dir().display(), self.email_files)?;
        writeln!(
            f,
            "    MQTT message log   {} ({} messages)",
            config.mqtt_log().display(),
            self.mqtt_log_lines
        )?;
        if let Some(report) = &self.report {
            writeln!(f, "    weekly report      {}", report.display())?;
        }
        write!(f, "    plugins            {}", config.plugins_dir().join(TENANT).display())
    }
}

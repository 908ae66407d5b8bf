//! The running host: MQTT sessions, the ingest loop, the outbox dispatcher, the plugins folder
//! watcher and the HTTP endpoints, wired together from one [`HostConfig`].
//!
//! The wiring only: a small tokio runtime drives the two MQTT connections and HTTP; the ingest
//! loop and the acknowledger (`ingest::run`) and each sink's driver (`crate::sinks`) run on
//! threads of their own; one staged signal (`crate::shutdown`) stops them in order.

use crate::ingest::Ingestor;
use crate::ingest::mqtt::{self, Connection, Delivery, ingest_session};
use crate::ingest::run::{Acker, Acknowledger, IngestLoop, pause_before_ack};
use crate::metrics::Metrics;
use crate::plugins::{HostOptions, PluginHost};
use crate::shutdown::{Shutdown, Stage};
use crate::sinks::{DeadLetters, DriverContext, Drivers, Settled};
use crate::store::{Counts, SqliteStore};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

pub use crate::ingest::run::{PAUSE_BEFORE_ACK_ENV, Totals};

mod config;
pub use config::{CONFIG_ENV, HostConfig, HttpConfig, LimitsConfig, LogsConfig, StoreConfig, WindowsConfig};

/// A running host. [`Service::stop`] shuts it down cleanly; dropping it stops it too.
pub struct Service {
    config: HostConfig,
    host: Arc<PluginHost>,
    store: Arc<SqliteStore>,
    runtime: Option<tokio::runtime::Runtime>,
    /// The one shutdown signal, in stages (see [`crate::shutdown`]).
    shutdown: Shutdown,
    ingest_thread: Option<std::thread::JoinHandle<()>>,
    drivers: Drivers,
    /// WAL checkpoints; stops with the sinks.
    checkpoint_thread: Option<std::thread::JoinHandle<()>>,
    totals: Arc<std::sync::Mutex<Totals>>,
    http_addr: Option<SocketAddr>,
    /// The ingest session (current connection, subscriptions acknowledged).
    connection: Connection,
    _watcher: Option<crate::plugins::Watcher>,
}

impl Service {
    /// Opens the store and the plugin host, connects to the broker and starts serving.
    pub fn start(config: HostConfig) -> anyhow::Result<Service> {
        let store = Arc::new(SqliteStore::open(&config.store_path(), config.store.durability)?);
        let metrics = Arc::new(Metrics::new());
        let mut options = HostOptions::new(config.plugins_dir(), config.models_dir());
        options.cache_dir = Some(config.data_dir.join("cache"));
        options.refused_file = Some(config.data_dir.join("refused-plugins.json"));
        let host = PluginHost::open(options, store.clone(), metrics.clone())?;
        if host.tenant_names().is_empty() {
            warn!(plugins_dir = %config.plugins_dir().display(), "No tenant folder: every reading will be dead-lettered until one is added");
        }
        let watcher = if config.watch_plugins {
            Some(host.watch().context("watching the plugins folder")?)
        } else {
            None
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("edgepm-io")
            .enable_all()
            .build()?;
        let shutdown = Shutdown::new();
        let telemetry = metrics.telemetry.clone();

        // The sinks: the publishing session and one driver per sink.
        let (out_client, out_loop) = mqtt::client(
            config.mqtt.options(&format!("{}-out", config.mqtt.client_id), true)?,
            crate::sinks::mqtt::CLIENT_CAPACITY,
        );
        let (publish_tx, publish_rx) = tokio::sync::mpsc::channel(8192);
        let (connected_tx, connected_rx) = tokio::sync::watch::channel(false);
        runtime.spawn(crate::sinks::mqtt::publish_session(
            out_loop,
            out_client,
            publish_rx,
            connected_tx,
            shutdown.clone(),
        ));
        let (settled_tx, settled_rx) = std::sync::mpsc::channel::<Settled>();
        let (acks_tx, acks_rx) = std::sync::mpsc::channel::<crate::store::AckRequest>();
        let stored_cursors = store.sink_cursors()?;
        let dead_letters = DeadLetters { path: config.data_dir.join("logs").join("undeliverable.jsonl") };
        if let Some(dir) = dead_letters.path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let context = |name: &str| -> anyhow::Result<DriverContext> {
            Ok(DriverContext {
                store: SqliteStore::open_reader(&config.store_path())?,
                metrics: telemetry.clone(),
                dead_letters: dead_letters.clone(),
                settled: settled_tx.clone(),
                shutdown: shutdown.clone(),
                start_after: stored_cursors.get(name).copied().unwrap_or(0),
            })
        };
        let mut drivers = Drivers::new();
        let mqtt_sink =
            crate::sinks::mqtt::MqttSink::new(publish_tx, connected_rx, config.mqtt.max_publish_bytes);
        drivers.spawn(mqtt_sink, context("mqtt")?)?;
        let email_files = crate::sinks::email_files::EmailFiles::new(config.email_dir())?;
        drivers.spawn(email_files, context("email_files")?)?;
        let cloud = &config.sinks;
        if let Some(c) = &cloud.timestream {
            drivers.spawn(
                crate::sinks::timestream::TimestreamSink::new(c.clone(), telemetry.clone()),
                context("timestream")?,
            )?;
        }
        if let Some(c) = &cloud.influxdb {
            drivers.spawn(crate::sinks::influxdb::InfluxSink::new(c.clone())?, context("influxdb")?)?;
        }
        if let Some(c) = &cloud.sns {
            drivers.spawn(crate::sinks::sns::SnsSink::new(c.clone(), telemetry.clone()), context("sns")?)?;
        }
        if let Some(c) = &cloud.ses {
            drivers.spawn(crate::sinks::ses::SesSink::new(c.clone(), telemetry.clone()), context("ses")?)?;
        }
        if config.logs.mqtt_log {
            let log = crate::sinks::message_log::MessageLog::new(
                config.mqtt_log(),
                config.logs.mqtt_log_max_mib.max(1) << 20,
            )?;
            drivers.spawn(log, context("message_log")?)?;
        }
        drop(settled_tx);
        let waker = drivers.waker.clone();
        let cursors: Vec<(&'static str, i64)> = drivers
            .names
            .iter()
            .map(|&name| (name, stored_cursors.get(name).copied().unwrap_or(0)))
            .collect();
        let checkpoint_thread = store.spawn_checkpointer(shutdown.clone())?;

        // Ingest session and loop.
        // Persistent session, and acknowledgements sent after each commit (by the acknowledging
        // thread, see below) — never by the client on receipt.
        let mut in_options = config.mqtt.options(&config.mqtt.client_id, false)?;
        in_options.set_manual_acks(true);
        let (in_client, in_loop) = mqtt::client(in_options, 65_536);
        let subscriptions =
            mqtt::Subscriptions::new(&config.mqtt, Some(config.data_dir.join("mqtt-subscriptions.json")))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Delivery>(4 * config.store.batch_max);
        let connection = Connection::default();
        runtime.spawn(ingest_session(
            in_loop,
            in_client.clone(),
            subscriptions,
            tx,
            telemetry.clone(),
            connection.clone(),
            shutdown.clone(),
        ));
        let totals = Arc::new(std::sync::Mutex::new(Totals::default()));
        let ingestor = Ingestor::new(
            host.clone(),
            store.clone(),
            crate::outbox::Router::new(host.clone(), config.sinks.wanted()),
            config.limits.limits(),
            config.windows.hop,
        )
        .with_budget(config.windows.budget());
        let acker = Acker {
            connection: connection.clone(),
            client: in_client,
            runtime: runtime.handle().clone(),
            metrics: telemetry.clone(),
        };
        // A thread of its own acknowledges the committed batches — with `durability = "full"`
        // after syncing them to disk — while the ingest loop goes on with the next batch.
        let sync = store.defer_sync()?;
        let acknowledger = Acknowledger::spawn(sync, acker, shutdown.clone())?;
        let ingest = IngestLoop {
            ingestor,
            rx,
            settled: settled_rx,
            acks: acks_rx,
            cursors,
            cursors_changed: false,
            shutdown: shutdown.clone(),
            acknowledger: Some(acknowledger),
            metrics: telemetry,
            runtime: runtime.handle().clone(),
            waker,
            batch_max: config.store.batch_max,
            totals: totals.clone(),
            store: store.clone(),
            retention_days: config.store.retention_days,
            outbox_max_rows: config.store.outbox_max_rows,
            outbox_max_age_days: config.store.outbox_max_age_days,
            pause_before_ack: pause_before_ack()?,
        };
        let ingest_thread = ingest.spawn()?;

        let http_addr = match config.http.listen {
            Some(addr) => {
                let store = Arc::new(SqliteStore::open_reader(&config.store_path())?);
                let access = config.http.api_access()?;
                let state = crate::api::ApiState {
                    host: host.clone(),
                    needs_mqtt: true,
                    store: Some(store),
                    acks: Some(acks_tx),
                    events: None,
                    access,
                };
                let stop = shutdown.wait(Stage::Output);
                Some(crate::api::start(runtime.handle(), addr, state, stop).context("[http] listen")?)
            }
            None => None,
        };
        info!(broker = %config.mqtt.url, data_dir = %config.data_dir.display(), tenants = ?host.tenant_names(), "edgepm host running");
        Ok(Service {
            config,
            host,
            store,
            runtime: Some(runtime),
            shutdown,
            ingest_thread: Some(ingest_thread),
            drivers,
            checkpoint_thread: Some(checkpoint_thread),
            totals,
            http_addr,
            connection,
            _watcher: watcher,
        })
    }

    pub fn host(&self) -> &Arc<PluginHost> {
        &self.host
    }
    /// The store's writer connection (shared with the ingest loop: for queries, prefer
    /// [`Service::reader`]).
    pub fn store(&self) -> &Arc<SqliteStore> {
        &self.store
    }
    /// A read-only connection of its own to the store: its queries never wait for the writer.
    pub fn reader(&self) -> anyhow::Result<SqliteStore> {
        SqliteStore::open_reader(&self.config.store_path())
    }
    pub fn config(&self) -> &HostConfig {
        &self.config
    }
    /// Where the HTTP endpoints listen, when enabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }
    /// Waits until the broker acknowledged the ingest subscriptions (readings published before
    /// that reach no one unless the session already existed). `false` on timeout.
    pub fn wait_subscribed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.connection.subscribed() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    pub fn totals(&self) -> Totals {
        *self.totals.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops taking messages, finishes the batch in progress, delivers what the outbox can and
    /// disconnects. Returns the store's row counts.
    pub fn stop(mut self) -> anyhow::Result<Counts> {
        self.shutdown();
        Ok(self.store.counts()?)
    }

    fn shutdown(&mut self) {
        // The ingest loop stores what it received, then moves on to the sinks' last pass.
        self.shutdown.advance(Stage::Ingest);
        if let Some(t) = self.ingest_thread.take() {
            let _ = t.join();
        }
        self.shutdown.advance(Stage::Sinks); // in case the ingest loop died
        self.drivers.join();
        if let Some(t) = self.checkpoint_thread.take() {
            let _ = t.join();
        }
        self.shutdown.advance(Stage::Output);
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shutdown();
    }
}

//! The MQTT side: connection options (plain TCP, TLS, mutual TLS for AWS IoT Core) and the
//! ingest session (persistent, QoS 1, manual acknowledgements). The publishing session is the
//! MQTT sink's (`sinks::mqtt`).
//!
//! Two connections per host: `<client_id>` subscribes with a persistent session (the broker keeps
//! queuing QoS 1 readings while the host is down) and `<client_id>-out` publishes predictions,
//! alerts and dead letters. Both reconnect by themselves with exponential back-off (0.5 s → 30 s).

use super::batch::Message;
use crate::metrics::TelemetryMetrics;
use crate::shutdown::{Shutdown, Stage};
use anyhow::Context as _;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS, TlsConfiguration, Transport,
};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Largest MQTT packet read. A larger one cannot be read at all, so it cannot be dead-lettered:
/// cap payloads at the broker (mosquitto `message_size_limit`, IoT Core's 128 KB) below this.
pub const DEFAULT_MAX_PACKET_BYTES: usize = 16 << 20;

/// `[mqtt]` of the host configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:1883` or `mqtts://host:8883` (TLS; `[mqtt.tls]` gives the CA and client
    /// certificate).
    pub url: String,
    /// Client id of the ingest session; the publishing session uses `<client_id>-out`. Must be
    /// stable across restarts: it names the persistent session.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Subscribe to the telemetry and asset topics of these tenants only (default: every
    /// tenant). This is how a fleet is partitioned between hosts: each host takes whole
    /// tenants, so every reading of a device reaches the same host.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Join the MQTT shared subscription `$share/<group>/<telemetry filter>`. The broker then
    /// hands each *message* to one member of the group — not each device: hosts in a group each
    /// see part of every device's readings. See docs/operations.md before using it.
    #[serde(default)]
    pub shared_group: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    /// Largest packet read or written (default 16 MiB).
    #[serde(default = "default_max_packet")]
    pub max_packet_bytes: usize,
    /// Largest message the host publishes (topic and payload), default 128 KiB — AWS IoT Core's
    /// limit. A larger one could never be delivered (the broker drops the connection, taking
    /// every publication in flight with it): it is dead-lettered instead of retried.
    #[serde(default = "default_max_publish")]
    pub max_publish_bytes: usize,
    #[serde(default)]
    pub tls: Option<TlsFiles>,
}

fn default_max_publish() -> usize {
    128 * 1024
}

/// `[mqtt.tls]`: PEM files. With `cert_file` and `key_file` the host authenticates with its
/// certificate (mutual TLS, as AWS IoT Core requires).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// CA certificate(s) the broker's certificate must chain to (e.g. `AmazonRootCA1.pem`).
    pub ca_file: PathBuf,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Instead of `cert_file`: the name of an environment variable holding the PEM certificate
    /// (ECS injects a Secrets Manager secret so; the key never touches a disk).
    #[serde(default)]
    pub cert_env: Option<String>,
    /// Instead of `key_file`: the name of an environment variable holding the PEM private key.
    #[serde(default)]
    pub key_env: Option<String>,
    /// ALPN protocols, e.g. `["x-amzn-mqtt-ca"]` for IoT Core on port 443.
    #[serde(default)]
    pub alpn: Vec<String>,
}

fn default_client_id() -> String {
    "edgepm".to_string()
}
fn default_keep_alive() -> u64 {
    30
}
fn default_max_packet() -> usize {
    DEFAULT_MAX_PACKET_BYTES
}

impl MqttConfig {
    /// A configuration for `url` with every default.
    pub fn new(url: impl Into<String>) -> MqttConfig {
        MqttConfig {
            url: url.into(),
            client_id: default_client_id(),
            tenants: Vec::new(),
            shared_group: None,
            username: None,
            password: None,
            keep_alive_secs: default_keep_alive(),
            max_packet_bytes: DEFAULT_MAX_PACKET_BYTES,
            max_publish_bytes: default_max_publish(),
            tls: None,
        }
    }

    /// Resolves relative TLS file names against `dir` (the configuration file's folder).
    pub fn resolve_paths(&mut self, dir: &Path) {
        if let Some(tls) = &mut self.tls {
            for p in
                [Some(&mut tls.ca_file), tls.cert_file.as_mut(), tls.key_file.as_mut()].into_iter().flatten()
            {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            }
        }
    }

    /// The telemetry subscriptions (one per tenant of `tenants`, or every tenant's), shared or
    /// not.
    pub fn telemetry_filters(&self) -> Vec<String> {
        self.filters(crate::topics::TELEMETRY)
            .into_iter()
            .map(|f| match &self.shared_group {
                Some(group) => format!("$share/{group}/{f}"),
                None => f,
            })
            .collect()
    }

    /// The asset subscriptions (retained messages: never shared).
    pub fn asset_filters(&self) -> Vec<String> {
        self.filters(crate::topics::ASSET)
    }

    fn filters(&self, leaf: &str) -> Vec<String> {
        if self.tenants.is_empty() {
            vec![crate::topics::tenant_filter("+", leaf)]
        } else {
            self.tenants.iter().map(|t| crate::topics::tenant_filter(t, leaf)).collect()
        }
    }

    /// Checks what a configuration file can get wrong before anything connects: the url, the
    /// tenant names, the shared group name.
    pub fn check(&self) -> anyhow::Result<()> {
        parse_url(&self.url)?;
        for t in &self.tenants {
            anyhow::ensure!(
                crate::topics::is_name(t),
                "[mqtt] tenants: {t:?} is not a tenant name (1-64 letters, digits, '-', '_', '.')"
            );
        }
        if let Some(g) = &self.shared_group {
            anyhow::ensure!(
                !g.is_empty() && !g.contains(['/', '+', '#']),
                "[mqtt] shared_group {g:?} must be a non-empty name without '/', '+' or '#'"
            );
        }
        if let Some(tls) = &self.tls {
            for (file, env, what) in
                [(&tls.cert_file, &tls.cert_env, "certificate"), (&tls.key_file, &tls.key_env, "key")]
            {
                anyhow::ensure!(
                    !(file.is_some() && env.is_some()),
                    "[mqtt.tls] gives the client {what} twice (a file and an environment variable): keep one"
                );
            }
        }
        Ok(())
    }

    /// Connection options for the session `client_id`.
    pub fn options(&self, client_id: &str, clean_session: bool) -> anyhow::Result<MqttOptions> {
        let BrokerUrl { tls, host, port, credentials } = parse_url(&self.url)?;
        let mut o = MqttOptions::new(client_id, host, port);
        o.set_keep_alive(Duration::from_secs(self.keep_alive_secs.max(5)))
            .set_clean_session(clean_session)
            .set_max_packet_size(self.max_packet_bytes, self.max_packet_bytes)
            .set_request_channel_capacity(65_536)
            .set_inflight(1000);
        match (&self.username, credentials) {
            (Some(_), Some(_)) => {
                anyhow::bail!("the MQTT url and [mqtt] username both name a user: keep one")
            }
            (Some(user), None) => {
                o.set_credentials(user, self.password.clone().unwrap_or_default());
            }
            (None, Some((user, password))) => {
                o.set_credentials(user, password);
            }
            (None, None) => {}
        }
        match (tls, &self.tls) {
            (false, None) => {}
            (false, Some(_)) => anyhow::bail!("[mqtt.tls] is set but the url {:?} is not mqtts://", self.url),
            (true, files) => {
                let config = client_tls(files.as_ref())?;
                o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(config))));
            }
        }
        Ok(o)
    }
}

/// A client and its event loop with `TCP_NODELAY` on: MQTT packets are small and each one is
/// waited for (acknowledgements, predictions), and with Nagle's algorithm a small packet sent
/// while an earlier one is unacknowledged waits for the peer's delayed ACK — up to 40 ms on
/// Linux. Measured through mosquitto at 1,000 readings/s: publish → prediction p50 27 ms with
/// Nagle on the broker's side, 3 ms without (docs/benchmarks.md). `cap` bounds the request queue.
pub fn client(options: MqttOptions, cap: usize) -> (AsyncClient, EventLoop) {
    let (client, mut eventloop) = AsyncClient::new(options, cap);
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    (client, eventloop)
}

/// A broker address: `mqtt://[user[:password]@]host[:port]` or `mqtts://...` (also `tcp://`,
/// `ssl://`, `tls://`); the host may be a name, an IPv4 address or a bracketed IPv6 address.
/// Parsed by the `url` crate (percent-decoding included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// From the URL's user information, if any.
    pub credentials: Option<(String, String)>,
}

pub fn parse_url(text: &str) -> anyhow::Result<BrokerUrl> {
    anyhow::ensure!(text.contains("://"), "MQTT url {text:?} needs a scheme (mqtt:// or mqtts://)");
    let url = url::Url::parse(text).with_context(|| format!("MQTT url {text:?}"))?;
    let tls = match url.scheme() {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" | "tls" => true,
        other => anyhow::bail!("MQTT url {text:?}: unknown scheme {other:?} (mqtt or mqtts)"),
    };
    anyhow::ensure!(
        matches!(url.path(), "" | "/") && url.query().is_none() && url.fragment().is_none(),
        "MQTT url {text:?}: a broker address has no path, query or fragment"
    );
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => anyhow::bail!("MQTT url {text:?} has no host"),
    };
    anyhow::ensure!(!host.is_empty(), "MQTT url {text:?} has no host");
    let decode = |s: &str| -> anyhow::Result<String> {
        Ok(percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .with_context(|| format!("MQTT url {text:?}: user information is not UTF-8"))?
            .into_owned())
    };
    let credentials = if url.username().is_empty() && url.password().is_none() {
        None
    } else {
        Some((decode(url.username())?, decode(url.password().unwrap_or_default())?))
    };
    Ok(BrokerUrl { tls, host, port: url.port().unwrap_or(if tls { 8883 } else { 1883 }), credentials })
}

/// A rustls client configuration (ring provider) trusting `files.ca_file` (or, without files,
/// nothing: TLS needs a CA file) and presenting the client certificate when given.
fn client_tls(files: Option<&TlsFiles>) -> anyhow::Result<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let files =
        files.context("mqtts:// needs [mqtt.tls] ca_file (the CA that signed the broker's certificate)")?;
    let mut roots = rustls::RootCertStore::empty();
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.ca_file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .with_context(|| format!("reading CA certificates from {}", files.ca_file.display()))?;
    anyhow::ensure!(!cas.is_empty(), "{} holds no PEM certificate", files.ca_file.display());
    // A system bundle (/etc/ssl/certs/ca-certificates.crt) may hold a certificate webpki cannot
    // parse; the others still serve, as in every TLS client that reads such a bundle.
    let (added, ignored) = roots.add_parsable_certificates(cas);
    anyhow::ensure!(added > 0, "{}: none of its CA certificates could be used", files.ca_file.display());
    if ignored > 0 {
        warn!(ca_file = %files.ca_file.display(), ignored, "CA certificates that could not be parsed were skipped");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let cert = pem_source(&files.cert_file, &files.cert_env, "certificate")?;
    let key = pem_source(&files.key_file, &files.key_env, "key")?;
    let mut config = match (cert, key) {
        (Some((cert, cert_from)), Some((key, key_from))) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<_, _>>()
                .with_context(|| format!("reading the client certificate from {cert_from}"))?;
            anyhow::ensure!(!chain.is_empty(), "{cert_from} holds no PEM certificate");
            let key = PrivateKeyDer::from_pem_slice(&key)
                .with_context(|| format!("reading the client key from {key_from}"))?;
            builder.with_client_auth_cert(chain, key).context("client certificate and key do not match")?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => anyhow::bail!(
            "[mqtt.tls] needs both a client certificate and a key for mutual TLS (cert_file or cert_env, key_file or key_env)"
        ),
    };
    config.alpn_protocols = files.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(config)
}

/// The PEM bytes of a client certificate or key and where they came from (a file or an
/// environment variable), `None` when neither is configured.
fn pem_source(
    file: &Option<PathBuf>,
    env: &Option<String>,
    what: &str,
) -> anyhow::Result<Option<(Vec<u8>, String)>> {
    match (file, env) {
        (Some(_), Some(_)) => anyhow::bail!(
            "[mqtt.tls] gives the client {what} as a file and an environment variable: keep one"
        ),
        (Some(path), None) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading the client {what} {}", path.display()))?;
            Ok(Some((bytes, path.display().to_string())))
        }
        (None, Some(name)) => {
            let text = std::env::var(name)
                .with_context(|| format!("[mqtt.tls] {what}: the environment variable {name} is not set"))?;
            Ok(Some((text.into_bytes(), format!("the environment variable {name}"))))
        }
        (None, None) => Ok(None),
    }
}

/// What the ingest session subscribes to — and unsubscribes from. MQTT keeps a persistent
/// session's subscriptions at the broker across reconnects and restarts, so a host whose
/// `tenants` shrank would go on receiving the tenants it gave up. The filters of the last run
/// (same broker, same client id) are kept in a small record file; those no longer wanted are
/// unsubscribed at every connect, and the record is rewritten once the broker acknowledged both.
pub struct Subscriptions {
    pub filters: Vec<(String, QoS)>,
    /// Filters an earlier run subscribed to that this one does not want.
    pub stale: Vec<String>,
    record: Option<(PathBuf, SubscriptionRecord)>,
}

#[derive(serde::Serialize, Deserialize, PartialEq, Debug)]
struct SubscriptionRecord {
    /// `host:port` (never the url: it may hold a password).
    broker: String,
    client_id: String,
    filters: Vec<String>,
}

impl Subscriptions {
    /// The subscriptions of `config`; with `record`, the stale ones of the last run and the file
    /// to remember this run's in.
    pub fn new(config: &MqttConfig, record: Option<PathBuf>) -> anyhow::Result<Subscriptions> {
        let wanted: Vec<String> =
            config.telemetry_filters().into_iter().chain(config.asset_filters()).collect();
        let url = parse_url(&config.url)?;
        let now = SubscriptionRecord {
            broker: format!("{}:{}", url.host, url.port),
            client_id: config.client_id.clone(),
            filters: wanted.clone(),
        };
        let earlier = record
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str::<SubscriptionRecord>(&t).ok());
        let stale = match earlier {
            Some(e) if e.broker == now.broker && e.client_id == now.client_id => {
                e.filters.into_iter().filter(|f| !wanted.contains(f)).collect()
            }
            _ => Vec::new(),
        };
        Ok(Subscriptions {
            filters: wanted.into_iter().map(|f| (f, QoS::AtLeastOnce)).collect(),
            stale,
            record: record.map(|p| (p, now)),
        })
    }

    /// Once the broker acknowledged every subscription and unsubscription (`acked`,
    /// `unsubscribed` of this connection), writes the record; whether it did.
    fn remember_once_settled(&self, acked: usize, unsubscribed: usize) -> bool {
        let settled = acked >= self.filters.len() && unsubscribed >= self.stale.len();
        if settled {
            self.remember();
        }
        settled
    }

    /// Writes the record (atomically); a failure is logged: the next start only unsubscribes less.
    fn remember(&self) {
        let Some((path, record)) = &self.record else { return };
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec_pretty(record)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            warn!(file = %path.display(), error = %e, "Could not record the MQTT subscriptions");
        }
    }
}

/// A received message and the packet its acknowledgement needs.
pub struct Delivery {
    pub message: Message,
    pub publish: Publish,
    /// The connection it arrived on (see [`Connection`]): an acknowledgement only makes sense
    /// on that connection — after a reconnect the broker sends unacknowledged messages again,
    /// with packet ids that may collide with the old ones.
    pub connection: u64,
}

/// The ingest session's state shared with the host: which connection is current (read by the
/// acknowledging side) and whether its subscriptions are acknowledged.
#[derive(Clone, Default)]
pub struct Connection {
    count: Arc<std::sync::atomic::AtomicU64>,
    subscribed: Arc<AtomicBool>,
}

impl Connection {
    pub fn current(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }
    fn next(&self) -> u64 {
        self.count.fetch_add(1, Ordering::AcqRel) + 1
    }
    /// True while the broker has acknowledged every subscription of the current connection.
    pub fn subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
    }
}

/// A random duration between half of `d` and `d`: a fleet of gateways that lost the broker at
/// the same moment must not come back in lockstep.
pub fn jitter(d: Duration) -> Duration {
    use rand::{Rng as _, SeedableRng as _};
    // Seeded from the clock and the process: differs between gateways and between calls.
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let seed = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
    d.mul_f64(rand::rngs::SmallRng::seed_from_u64(seed).random_range(0.5..=1.0))
}

/// Deliveries (and their payload bytes) the ingest session holds while the ingest loop's channel
/// is full, at most; past either it stops reading until the loop catches up. The broker's
/// in-flight window (unacknowledged QoS 1 messages) bounds them first; this guards against a
/// broker configured without one.
const HELD_MAX: usize = 65_536;
const HELD_MAX_BYTES: usize = 64 << 20;

/// Back-off between reconnection attempts: 0.5 s doubling to 30 s, with jitter.
pub(crate) struct Backoff(Duration);

impl Backoff {
    const MIN: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(30);
    pub(crate) fn new() -> Backoff {
        Backoff(Self::MIN)
    }
    pub(crate) fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        jitter(d)
    }
    pub(crate) fn reset(&mut self) {
        self.0 = Self::MIN;
    }
}

/// Drives the ingest session until the shutdown's [`Stage::Ingest`]: (re)subscribes on every
/// connection, forwards each publication to the ingest loop, and reconnects with back-off (with
/// jitter) after errors. While
/// the loop is busy the session holds what arrives and goes on polling, so keep-alives never wait
/// for processing; back-pressure reaches the broker through its in-flight window, which the
/// unacknowledged messages fill.
pub async fn ingest_session(
    mut eventloop: EventLoop,
    client: AsyncClient,
    subscriptions: Subscriptions,
    tx: tokio::sync::mpsc::Sender<Delivery>,
    metrics: TelemetryMetrics,
    connection: Connection,
    shutdown: Shutdown,
) {
    let stop = shutdown.wait(Stage::Ingest);
    tokio::pin!(stop);
    let mut backoff = Backoff::new();
    let filters = &subscriptions.filters;
    let mut acked = 0usize;
    let mut unsubscribed = 0usize;
    let mut remembered = false;
    let mut current = connection.current();
    // Publications received while the ingest loop is busy: the session keeps polling (and so
    // answering keep-alives) however long the loop takes, and hands them over in order.
    let mut held: std::collections::VecDeque<Delivery> = std::collections::VecDeque::new();
    let mut held_bytes = 0usize;
    loop {
        let event = tokio::select! {
            biased;
            _ = &mut stop => break,
            permit = tx.reserve(), if !held.is_empty() => {
                match (permit, held.pop_front()) {
                    (Ok(permit), Some(d)) => {
                        held_bytes -= d.message.payload.len();
                        permit.send(d)
                    }
                    (Err(_), _) => break,
                    (Ok(_), None) => {}
                }
                continue;
            }
            e = eventloop.poll(), if held.len() < HELD_MAX && held_bytes < HELD_MAX_BYTES => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                metrics.mqtt_connected.set(1);
                info!(session_present = ack.session_present, "MQTT ingest session connected");
                current = connection.next();
                acked = 0;
                unsubscribed = 0;
                for (filter, qos) in filters {
                    if let Err(e) = client.try_subscribe(filter.clone(), *qos) {
                        warn!(%filter, error = %e, "Subscribing failed");
                    }
                }
                for filter in &subscriptions.stale {
                    info!(%filter, "Unsubscribing from a filter of an earlier configuration");
                    if let Err(e) = client.try_unsubscribe(filter.clone()) {
                        warn!(%filter, error = %e, "Unsubscribing failed");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let message = Message {
                    topic: publish.topic.clone(),
                    payload: publish.payload.clone(),
                    received: Instant::now(),
                };
                let delivery = Delivery { message, publish, connection: current };
                if !held.is_empty() {
                    held_bytes += delivery.message.payload.len();
                    held.push_back(delivery);
                    continue;
                }
                match tx.try_send(delivery) {
                    Ok(()) => {}
                    Err(tokio::sync::mpsc::error::TrySendError::Full(d)) => {
                        held_bytes += d.message.payload.len();
                        held.push_back(d)
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                    warn!(?ack, "The broker refused a subscription");
                } else {
                    info!(pkid = ack.pkid, "Subscribed");
                    acked += 1;
                    if acked >= filters.len() {
                        connection.subscribed.store(true, Ordering::Relaxed);
                    }
                }
                remembered = remembered || subscriptions.remember_once_settled(acked, unsubscribed);
            }
            Ok(Event::Incoming(Packet::UnsubAck(_))) => {
                unsubscribed += 1;
                remembered = remembered || subscriptions.remember_once_settled(acked, unsubscribed);
            }
            Ok(_) => {}
            Err(e) => {
                metrics.mqtt_connected.set(0);
                metrics.mqtt_disconnects.inc();
                connection.subscribed.store(false, Ordering::Relaxed);
                let wait = backoff.next();
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "MQTT ingest session lost");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = &mut stop => break,
                }
            }
        }
    }
    metrics.mqtt_connected.set(0);
    let _ = tokio::time::timeout(Duration::from_millis(500), client.disconnect()).await;
    // Let the DISCONNECT (and queued acknowledgements) go out.
    let _ =
        tokio::time::timeout(Duration::from_millis(500), async { while eventloop.poll().await.is_ok() {} })
            .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let hp = |u: &str| parse_url(u).map(|b| (b.tls, b.host, b.port)).unwrap();
        assert_eq!(hp("mqtt://127.0.0.1:1884"), (false, "127.0.0.1".into(), 1884));
        assert_eq!(hp("mqtts://abc-ats.iot.eu-west-1.amazonaws.com").2, 8883);
        assert_eq!(hp("mqtt://[::1]:1883"), (false, "::1".into(), 1883));
        assert_eq!(hp("mqtt://[::1]"), (false, "::1".into(), 1883), "IPv6 without a port");
        assert_eq!(hp("mqtts://[fe80::1]/"), (true, "fe80::1".into(), 8883));
        let b = parse_url("mqtt://edge%40plant:p%3Ass@broker.local").unwrap();
        assert_eq!(b.credentials, Some(("edge@plant".into(), "p:ss".into())));
        assert_eq!(parse_url("mqtt://u@h").unwrap().credentials, Some(("u".into(), String::new())));
        assert_eq!(parse_url("mqtt://h").unwrap().credentials, None);
        assert!(parse_url("mqtt://h/topic").is_err());
        assert!(parse_url("mqtt://:1883").is_err());
        assert!(parse_url("127.0.0.1:1883").is_err());
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("mqtt://x:port").is_err());
    }

    #[test]
    fn shared_subscription_filter() {
        let mut c = MqttConfig::new("mqtt://localhost");
        assert_eq!(c.telemetry_filters(), ["edgepm/+/+/telemetry"]);
        c.shared_group = Some("plant-a".into());
        assert_eq!(c.telemetry_filters(), ["$share/plant-a/edgepm/+/+/telemetry"]);
    }

    #[test]
    fn filters_of_an_earlier_run_of_the_same_session_are_stale() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("mqtt-subscriptions.json");
        let mut c = MqttConfig::new("mqtt://user:secret@broker.local:1884");
        let first = Subscriptions::new(&c, Some(record.clone())).unwrap();
        assert!(first.stale.is_empty(), "no record yet");
        first.remember();
        let text = std::fs::read_to_string(&record).unwrap();
        assert!(text.contains("broker.local:1884") && !text.contains("secret"), "{text}");
        c.tenants = vec!["acme".into()];
        let second = Subscriptions::new(&c, Some(record.clone())).unwrap();
        assert_eq!(second.stale, ["edgepm/+/+/telemetry", "edgepm/+/+/asset"]);
        assert_eq!(second.filters.len(), 2);
        // Another client id (or broker) is another session: nothing of it is ours to drop.
        c.client_id = "other".into();
        assert!(Subscriptions::new(&c, Some(record.clone())).unwrap().stale.is_empty());
        assert!(Subscriptions::new(&c, None).unwrap().stale.is_empty());
    }

    #[test]
    fn a_host_of_some_tenants_subscribes_to_theirs_only() {
        let mut c = MqttConfig::new("mqtt://localhost");
        assert_eq!(c.asset_filters(), ["edgepm/+/+/asset"]);
        c.tenants = vec!["acme".into(), "ai4i".into()];
        assert_eq!(c.telemetry_filters(), ["edgepm/acme/+/telemetry", "edgepm/ai4i/+/telemetry"]);
        assert_eq!(c.asset_filters(), ["edgepm/acme/+/asset", "edgepm/ai4i/+/asset"]);
        c.shared_group = Some("g".into());
        assert_eq!(c.telemetry_filters()[1], "$share/g/edgepm/ai4i/+/telemetry");
        assert_eq!(c.asset_filters()[0], "edgepm/acme/+/asset");
        assert!(c.check().is_ok());
        c.tenants.push("a/b".into());
        assert!(format!("{:#}", c.check().unwrap_err()).contains("not a tenant name"));
        c.tenants.pop();
        c.shared_group = Some("a/b".into());
        assert!(c.check().is_err());
    }

    #[test]
    fn tls_without_files_is_a_clear_error() {
        let e = MqttConfig::new("mqtts://localhost").options("x", false).unwrap_err();
        assert!(format!("{e:#}").contains("ca_file"), "{e:#}");
    }
}

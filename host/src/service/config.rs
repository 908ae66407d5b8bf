//! `edgepm.toml`: the host configuration, every key with its default (documented for users in
//! `docs/operations.md`, "Configuration"). Each part's own settings live with the part
//! ([`MqttConfig`] with the MQTT sessions); this file assembles them.

use crate::ingest::mqtt::MqttConfig;
use crate::ingest::{Limits, WindowBudget};
use crate::store::Durability;
use anyhow::Context as _;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment variable that may hold the whole configuration (TOML) instead of a file.
pub const CONFIG_ENV: &str = "EDGEPM_CONFIG";

/// The host configuration (`edgepm run --config edgepm.toml`, or the TOML in `EDGEPM_CONFIG`).
/// Relative paths are relative to the file's folder. See `docs/operations.md` for every key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Store, logs and (by default) plugins, models and the compile cache live here.
    pub data_dir: PathBuf,
    /// Default `<data_dir>/plugins`.
    #[serde(default)]
    pub plugins_dir: Option<PathBuf>,
    /// Default `<data_dir>/models`.
    #[serde(default)]
    pub models_dir: Option<PathBuf>,
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub windows: WindowsConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub logs: LogsConfig,
    /// The cloud sinks (Timestream, InfluxDB, SNS, SES), each off unless configured.
    #[serde(default)]
    pub sinks: crate::sinks::SinksConfig,
    /// Watch the plugins folder and swap new versions in (default true).
    #[serde(default = "yes")]
    pub watch_plugins: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowsConfig {
    /// Readings between two windows of a device (a tenant may override it), default 8.
    #[serde(default = "default_hop")]
    pub hop: u32,
    /// Plugin time each tenant gets per batch, ms (default 50; 0: no budget). A tenant's windows
    /// past it wait for the next batch, so a slow tenant holds up the others' windows by this
    /// much plus one window's calls at most.
    #[serde(default = "default_tenant_budget_ms")]
    pub tenant_budget_ms: u64,
    /// Windows of one tenant that may wait for its budget (default 10,000); past it the oldest
    /// are shed, unscored (logged, `edgepm_windows_shed_total`).
    #[serde(default = "default_max_deferred")]
    pub max_deferred: usize,
}

impl Default for WindowsConfig {
    fn default() -> Self {
        WindowsConfig {
            hop: default_hop(),
            tenant_budget_ms: default_tenant_budget_ms(),
            max_deferred: default_max_deferred(),
        }
    }
}

impl WindowsConfig {
    pub fn budget(&self) -> WindowBudget {
        WindowBudget {
            per_batch: (self.tenant_budget_ms > 0).then(|| Duration::from_millis(self.tenant_budget_ms)),
            max_deferred: self.max_deferred.max(1),
        }
    }
}

fn default_tenant_budget_ms() -> u64 {
    50
}
fn default_max_deferred() -> usize {
    10_000
}

fn default_hop() -> u32 {
    crate::windows::DEFAULT_HOP
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `full` (default): a commit — and so an acknowledgement — survives a power cut;
    /// `normal`: survives a killed process only.
    #[serde(default)]
    pub durability: Durability,
    /// Readings, features, predictions and alerts older than this are deleted (default 30;
    /// 0 keeps everything).
    #[serde(default = "default_retention")]
    pub retention_days: u32,
    /// Most messages per transaction (default 2048).
    #[serde(default = "default_batch")]
    pub batch_max: usize,
    /// Most messages waiting in the outbox (default 1,000,000); past it the oldest are dropped,
    /// logged and counted (`edgepm_outbox_dropped_total{reason="rows"}`).
    #[serde(default = "default_outbox_rows")]
    pub outbox_max_rows: u64,
    /// Messages older than this are dropped from the outbox, logged and counted (default 7;
    /// 0 keeps them until delivered).
    #[serde(default = "default_outbox_age")]
    pub outbox_max_age_days: u32,
}

fn default_outbox_rows() -> u64 {
    1_000_000
}
fn default_outbox_age() -> u32 {
    7
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            durability: Durability::Full,
            retention_days: default_retention(),
            batch_max: default_batch(),
            outbox_max_rows: default_outbox_rows(),
            outbox_max_age_days: default_outbox_age(),
        }
    }
}

fn default_retention() -> u32 {
    30
}
fn default_batch() -> usize {
    2048
}

/// `[limits]`: what one telemetry message may hold (see [`Limits`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default = "d_payload")]
    pub max_payload_bytes: usize,
    #[serde(default = "d_channels")]
    pub max_channels: usize,
    #[serde(default = "d_samples")]
    pub max_samples: usize,
    #[serde(default = "d_future")]
    pub max_future_secs: i64,
    #[serde(default = "d_age")]
    pub max_age_secs: i64,
}

fn d_payload() -> usize {
    Limits::default().max_payload_bytes
}
fn d_channels() -> usize {
    Limits::default().max_channels
}
fn d_samples() -> usize {
    Limits::default().max_samples
}
fn d_future() -> i64 {
    Limits::default().max_future_ms / 1000
}
fn d_age() -> i64 {
    Limits::default().max_age_ms / 1000
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_payload_bytes: d_payload(),
            max_channels: d_channels(),
            max_samples: d_samples(),
            max_future_secs: d_future(),
            max_age_secs: d_age(),
        }
    }
}

impl LimitsConfig {
    pub fn limits(&self) -> Limits {
        Limits {
            max_payload_bytes: self.max_payload_bytes,
            max_channels: self.max_channels,
            max_samples: self.max_samples,
            max_future_ms: self.max_future_secs.saturating_mul(1000),
            max_age_ms: self.max_age_secs.saturating_mul(1000),
        }
    }
}

/// `[logs]`: the message log of everything the host published.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsConfig {
    /// Write `<data_dir>/logs/mqtt_messages.jsonl` (default true).
    #[serde(default = "yes")]
    pub mqtt_log: bool,
    /// Size at which the message log is rotated to `mqtt_messages.jsonl.1` (one old file is
    /// kept), MiB (default 64).
    #[serde(default = "default_mqtt_log_max_mib")]
    pub mqtt_log_max_mib: u64,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig { mqtt_log: true, mqtt_log_max_mib: default_mqtt_log_max_mib() }
    }
}

fn default_mqtt_log_max_mib() -> u64 {
    64
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `/healthz`, `/readyz`, `/metrics`, `/api/v1` (default `127.0.0.1:9464`; port 0 picks a
    /// free one).
    #[serde(default = "default_listen")]
    pub listen: Option<SocketAddr>,
    /// The bearer token `/api/v1` requires (`Authorization: Bearer <token>`).
    #[serde(default)]
    pub token: Option<String>,
    /// Instead of `token`: the environment variable holding it.
    #[serde(default)]
    pub token_env: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: default_listen(), token: None, token_env: None }
    }
}

impl HttpConfig {
    /// Who may read `/api/v1`: anyone on loopback without a token; with a token, whoever
    /// presents it; bound elsewhere without one, nobody (the probes stay open).
    pub fn api_access(&self) -> anyhow::Result<crate::api::ApiAccess> {
        use crate::api::ApiAccess;
        let token = match (&self.token, &self.token_env) {
            (Some(_), Some(_)) => anyhow::bail!("[http] gives token and token_env: keep one"),
            (Some(t), None) => Some(t.clone()),
            (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
                anyhow::anyhow!("[http] token_env: the environment variable {var} is not set")
            })?),
            (None, None) => None,
        };
        Ok(match token {
            Some(t) if t.trim().is_empty() => anyhow::bail!("[http] the API token is empty"),
            Some(t) => ApiAccess::Token(t),
            None if self.listen.is_none_or(|a| a.ip().is_loopback()) => ApiAccess::Open,
            None => ApiAccess::Refused,
        })
    }
}

fn default_listen() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 9464)))
}

impl HostConfig {
    /// A configuration with every default, for `data_dir` and the broker at `url`.
    pub fn new(data_dir: impl Into<PathBuf>, url: &str) -> HostConfig {
        HostConfig {
            data_dir: data_dir.into(),
            plugins_dir: None,
            models_dir: None,
            mqtt: MqttConfig::new(url),
            windows: WindowsConfig::default(),
            store: StoreConfig::default(),
            limits: LimitsConfig::default(),
            http: HttpConfig::default(),
            logs: LogsConfig::default(),
            sinks: Default::default(),
            watch_plugins: true,
        }
    }

    /// Reads `path`; relative paths in it are resolved against its folder.
    pub fn load(path: &Path) -> anyhow::Result<HostConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        HostConfig::parse(&text, path.parent().unwrap_or(Path::new(".")), &path.display().to_string())
    }

    /// The configuration of the `EDGEPM_CONFIG` environment variable (the TOML text itself, as a
    /// container's task definition gives it), relative paths against the working folder.
    pub fn from_env() -> anyhow::Result<Option<HostConfig>> {
        match std::env::var(CONFIG_ENV) {
            Ok(text) if !text.trim().is_empty() => {
                HostConfig::parse(&text, Path::new("."), &format!("${CONFIG_ENV}")).map(Some)
            }
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
            Err(e) => anyhow::bail!("${CONFIG_ENV}: {e}"),
        }
    }

    /// `--config <file>` or, without it, `EDGEPM_CONFIG`; never both (which one would win is a
    /// surprise either way).
    pub fn from_file_or_env(path: Option<&Path>) -> anyhow::Result<HostConfig> {
        match (path, HostConfig::from_env()?) {
            (Some(path), None) => HostConfig::load(path),
            (None, Some(c)) => Ok(c),
            (Some(path), Some(_)) => anyhow::bail!(
                "both --config {} and ${CONFIG_ENV} are set: give the configuration one way",
                path.display()
            ),
            (None, None) => anyhow::bail!(
                "no configuration: pass --config <edgepm.toml> or put the TOML in ${CONFIG_ENV}"
            ),
        }
    }

    /// Parses and checks the TOML `text`; relative paths resolve against `dir`; errors name
    /// `origin`.
    pub fn parse(text: &str, dir: &Path, origin: &str) -> anyhow::Result<HostConfig> {
        let mut c: HostConfig = toml::from_str(text).with_context(|| origin.to_string())?;
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        resolve(&mut c.data_dir);
        c.plugins_dir.as_mut().map(resolve);
        c.models_dir.as_mut().map(resolve);
        c.mqtt.resolve_paths(dir);
        // A broker address that cannot work is a configuration error now, not at the first connect.
        c.mqtt.check().with_context(|| origin.to_string())?;
        anyhow::ensure!(
            c.http.token.is_none() || c.http.token_env.is_none(),
            "{origin}: [http] gives token and token_env: keep one"
        );
        anyhow::ensure!(c.windows.hop >= 1, "{origin}: windows.hop must be at least 1");
        anyhow::ensure!(c.store.batch_max >= 1, "{origin}: store.batch_max must be at least 1");
        if let Err(problems) = c.sinks.validate() {
            anyhow::bail!("{origin}: {}", problems.join("; "));
        }
        Ok(c)
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.plugins_dir.clone().unwrap_or_else(|| self.data_dir.join("plugins"))
    }
    pub fn models_dir(&self) -> PathBuf {
        self.models_dir.clone().unwrap_or_else(|| self.data_dir.join("models"))
    }
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("edgepm.db")
    }
    /// Alert e-mail files.
    pub fn email_dir(&self) -> PathBuf {
        self.data_dir.join("logs").join("alert_emails")
    }
    /// Log of every MQTT message the host published.
    pub fn mqtt_log(&self) -> PathBuf {
        self.data_dir.join("logs").join("mqtt_messages.jsonl")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiAccess;

    #[test]
    fn the_api_is_open_on_loopback_needs_a_token_elsewhere() {
        let mut http = HttpConfig::default();
        assert_eq!(http.api_access().unwrap(), ApiAccess::Open);
        http.listen = Some("[::1]:9464".parse().unwrap());
        assert_eq!(http.api_access().unwrap(), ApiAccess::Open);
        http.listen = Some("0.0.0.0:9464".parse().unwrap());
        assert_eq!(http.api_access().unwrap(), ApiAccess::Refused);
        http.token = Some("s3cret".into());
        assert_eq!(http.api_access().unwrap(), ApiAccess::Token("s3cret".into()));
        http.token_env = Some("EDGEPM_TEST_NO_SUCH_VARIABLE".into());
        assert!(http.api_access().is_err(), "both");
        http.token = None;
        let e = http.api_access().unwrap_err().to_string();
        assert!(e.contains("EDGEPM_TEST_NO_SUCH_VARIABLE is not set"), "{e}");
        http.token_env = None;
        http.token = Some("  ".into());
        assert!(http.api_access().is_err(), "an empty token");
    }
}

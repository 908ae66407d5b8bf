//! Tenant configuration: `<plugins_dir>/<tenant>/tenant.toml`.
//!
//! ```toml
//! threshold = 0.8                  # alert when the failure probability is above this
//! model = "bearing"                # the tenant's default model (a folder of the models dir)
//! models = ["bearing", "bearing-mlp"]  # models the tenant may use; default: [model]
//! hop = 8                          # readings between two windows; default: the host's [windows] hop
//! baseline_minutes = 1440          # each device's commissioning period: its healthy baseline
//!
//! [limits]
//! deadline_ms = 50                 # per plugin call
//! memory_mib = 32                  # per plugin instance
//! tenant_memory_mib = 128          # all of the tenant's instances together
//! max_window = 10000               # most readings a preprocessor's window-size may ask for
//! max_features = 1024              # most features (and contributions) a plugin may return
//!
//! [alerts]
//! email = ["maintenance@plant.example"]
//! sms = ["+5511999990000"]
//!
//! [settings]                       # free-form, read by plugins through `host.config`
//! language = "pt"
//! cooldown_minutes = 60
//! ```
//!
//! Unknown keys are errors (a typo must not silently fall back to a default); validation reports
//! every problem at once.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Alert threshold when `tenant.toml` sets none: 80 %.
pub const DEFAULT_THRESHOLD: f64 = 0.8;
/// Deadline of one plugin call when `[limits]` sets none.
pub const DEFAULT_DEADLINE_MS: u64 = 50;
/// Memory cap of one plugin instance when `[limits]` sets none.
pub const DEFAULT_MEMORY_MIB: u64 = 32;
/// Model name when `tenant.toml` sets none.
pub const DEFAULT_MODEL: &str = "default";
/// Memory of all of a tenant's plugin instances together when `[limits]` sets none.
pub const DEFAULT_TENANT_MEMORY_MIB: u64 = 128;
/// Most readings per window when `[limits]` sets none.
pub const DEFAULT_MAX_WINDOW: u32 = edgepm_core::validate::DEFAULT_MAX_WINDOW;
/// Most features a plugin may return when `[limits]` sets none.
pub const DEFAULT_MAX_FEATURES: usize = edgepm_core::validate::DEFAULT_MAX_FEATURES;
/// Upper bounds that catch unit mistakes (a deadline in microseconds, a cap in bytes).
const MAX_DEADLINE_MS: u64 = 10_000;
const MAX_MEMORY_MIB: u64 = 4_096;
const MAX_HOP: u32 = 100_000;
const MAX_MAX_WINDOW: u32 = 1_000_000;
const MAX_MAX_FEATURES: usize = 65_536;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    #[serde(default = "default_model")]
    pub model: String,
    /// Models the tenant may use; empty means `[model]`.
    #[serde(default)]
    pub models: Vec<String>,
    /// Readings between two windows of a device; `None`: the host's default.
    #[serde(default)]
    pub hop: Option<u32>,
    /// How long each device's commissioning period is, minutes: its healthy baseline (the
    /// `history.baseline` import) is the median of its windows over that time.
    #[serde(default = "default_baseline_minutes")]
    pub baseline_minutes: f64,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub alerts: AlertTargets,
    /// Free-form settings for the plugins. Any TOML scalar; plugins read it as text.
    #[serde(default)]
    pub settings: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Memory of all the tenant's instances together (every stage, warm and new), MiB.
    #[serde(default = "default_tenant_memory_mib")]
    pub tenant_memory_mib: u64,
    /// Largest `window-size` a preprocessor may return (readings the host keeps per device).
    #[serde(default = "default_max_window")]
    pub max_window: u32,
    /// Most features a preprocessor may return, and contributions a scorer.
    #[serde(default = "default_max_features")]
    pub max_features: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertTargets {
    #[serde(default)]
    pub email: Vec<String>,
    #[serde(default)]
    pub sms: Vec<String>,
}

/// A day of normal running: long enough for the daily cycle of load and temperature.
pub const DEFAULT_BASELINE_MINUTES: f64 = 1440.0;

fn default_baseline_minutes() -> f64 {
    DEFAULT_BASELINE_MINUTES
}
fn default_threshold() -> f64 {
    DEFAULT_THRESHOLD
}
fn default_model() -> String {
    DEFAULT_MODEL.to_string()
}
fn default_deadline_ms() -> u64 {
    DEFAULT_DEADLINE_MS
}
fn default_memory_mib() -> u64 {
    DEFAULT_MEMORY_MIB
}
fn default_tenant_memory_mib() -> u64 {
    DEFAULT_TENANT_MEMORY_MIB
}
fn default_max_window() -> u32 {
    DEFAULT_MAX_WINDOW
}
fn default_max_features() -> usize {
    DEFAULT_MAX_FEATURES
}

impl Limits {
    /// The bounds plugin outputs are checked against ([`edgepm_core::validate`]).
    pub fn output(&self) -> edgepm_core::validate::Limits {
        edgepm_core::validate::Limits { max_window: self.max_window, max_features: self.max_features }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline_ms: DEFAULT_DEADLINE_MS,
            memory_mib: DEFAULT_MEMORY_MIB,
            tenant_memory_mib: DEFAULT_TENANT_MEMORY_MIB,
            max_window: DEFAULT_MAX_WINDOW,
            max_features: DEFAULT_MAX_FEATURES,
        }
    }
}

impl Default for TenantConfig {
    fn default() -> Self {
        TenantConfig {
            threshold: DEFAULT_THRESHOLD,
            model: default_model(),
            models: Vec::new(),
            hop: None,
            baseline_minutes: DEFAULT_BASELINE_MINUTES,
            limits: Limits::default(),
            alerts: AlertTargets::default(),
            settings: BTreeMap::new(),
        }
    }
}

impl Limits {
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
    pub fn memory_bytes(&self) -> usize {
        (self.memory_mib as usize) << 20
    }
    pub fn tenant_memory_bytes(&self) -> usize {
        (self.tenant_memory_mib as usize) << 20
    }
}

/// `+` and 8 to 15 digits, the first not 0: the form SNS sends SMS to.
fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|d| {
        (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

impl TenantConfig {
    /// Reads and validates `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<TenantConfig, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TenantConfig::default()),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        let config: TenantConfig = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        config.validate().map_err(|problems| format!("{}: {}", path.display(), problems.join("; ")))?;
        Ok(config)
    }

    /// Every problem of the configuration, or `Ok`.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            problems.push(format!("threshold must be within (0, 1), got {}", self.threshold));
        }
        if !(1..=MAX_DEADLINE_MS).contains(&self.limits.deadline_ms) {
            problems.push(format!(
                "limits.deadline_ms must be within 1..={MAX_DEADLINE_MS}, got {}",
                self.limits.deadline_ms
            ));
        }
        if !(1..=MAX_MEMORY_MIB).contains(&self.limits.memory_mib) {
            problems.push(format!(
                "limits.memory_mib must be within 1..={MAX_MEMORY_MIB}, got {}",
                self.limits.memory_mib
            ));
        }
        // Against memory_mib only when that is valid itself: one mistake, one problem.
        let floor =
            if (1..=MAX_MEMORY_MIB).contains(&self.limits.memory_mib) { self.limits.memory_mib } else { 1 };
        if !(floor..=16 * MAX_MEMORY_MIB).contains(&self.limits.tenant_memory_mib) {
            problems.push(format!(
                "limits.tenant_memory_mib must be within memory_mib..={}, got {}",
                16 * MAX_MEMORY_MIB,
                self.limits.tenant_memory_mib
            ));
        }
        if !(1..=MAX_MAX_WINDOW).contains(&self.limits.max_window) {
            problems.push(format!(
                "limits.max_window must be within 1..={MAX_MAX_WINDOW}, got {}",
                self.limits.max_window
            ));
        }
        if !(1..=MAX_MAX_FEATURES).contains(&self.limits.max_features) {
            problems.push(format!(
                "limits.max_features must be within 1..={MAX_MAX_FEATURES}, got {}",
                self.limits.max_features
            ));
        }
        if !(self.baseline_minutes > 0.0 && self.baseline_minutes <= 525_600.0) {
            problems.push(format!(
                "baseline_minutes must be within (0, 525600] (a year), got {}",
                self.baseline_minutes
            ));
        }
        if self.hop.is_some_and(|h| !(1..=MAX_HOP).contains(&h)) {
            problems.push(format!("hop must be within 1..={MAX_HOP}, got {}", self.hop.unwrap_or(0)));
        }
        for name in std::iter::once(&self.model).chain(&self.models) {
            if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                problems.push(format!("model name {name:?} must be a plain folder name"));
            }
        }
        for address in &self.alerts.email {
            if address.parse::<lettre::message::Mailbox>().is_err() {
                problems.push(format!("alerts.email {address:?} is not an e-mail address"));
            }
        }
        for number in &self.alerts.sms {
            if !is_e164(number) {
                problems.push(format!(
                    "alerts.sms {number:?} is not a phone number in E.164 form (+5511999990000)"
                ));
            }
        }
        for (key, value) in &self.settings {
            if matches!(value, toml::Value::Array(_) | toml::Value::Table(_)) {
                problems.push(format!("settings.{key} must be a string, number or boolean"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    /// Whether the tenant may use model `name`.
    pub fn allows_model(&self, name: &str) -> bool {
        name == self.model || self.models.iter().any(|m| m == name)
    }

    /// What a plugin sees through `host.config(key)`: `threshold`, `model`, then `[settings]`.
    pub fn lookup(&self, key: &str) -> Option<String> {
        match key {
            "threshold" => Some(self.threshold.to_string()),
            "model" => Some(self.model.clone()),
            _ => self.settings.get(key).map(|v| match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_problem_at_once() {
        let c: TenantConfig = toml::from_str(
            "threshold = 1.5\nmodel = \"../x\"\n[limits]\ndeadline_ms = 0\nmemory_mib = 99999\n[settings]\nlist = [1]",
        )
        .unwrap();
        let problems = c.validate().unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:?}");
    }

    #[test]
    fn alert_recipients_are_checked_when_the_tenant_loads() {
        let c: TenantConfig = toml::from_str(
            "[alerts]\nemail = [\"maint@plant.example\", \"Ops <ops@plant.example>\", \"maint\"]\n\
             sms = [\"+5511999990000\", \"011 9999\", \"+0123456789\"]",
        )
        .unwrap();
        let problems = c.validate().unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("\"maint\" is not an e-mail address"), "{problems:?}");
        assert!(problems[1].contains("\"011 9999\""), "{problems:?}");
        for bad in ["", "maint@", "a@b@c", "maint@plant.example\r\nBcc: x@y.z"] {
            let c = TenantConfig {
                alerts: AlertTargets { email: vec![bad.into()], sms: vec![] },
                ..TenantConfig::default()
            };
            assert!(c.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<TenantConfig>("treshold = 0.5").is_err());
    }

    #[test]
    fn lookup_renders_scalars_as_text() {
        let c: TenantConfig = toml::from_str("[settings]\nlanguage = \"en\"\ncooldown_minutes = 5").unwrap();
        assert_eq!(c.lookup("language").as_deref(), Some("en"));
        assert_eq!(c.lookup("cooldown_minutes").as_deref(), Some("5"));
        assert_eq!(c.lookup("threshold").as_deref(), Some("0.8"));
        assert_eq!(c.lookup("nope"), None);
    }
}

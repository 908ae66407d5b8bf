//! The host's own domain types. Generated binding types stay inside the host's `plugins/`;
//! everything else speaks these.

use serde::{Deserialize, Serialize};

/// The samples of one channel in one reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Samples {
    Scalar(f32),
    Burst(Vec<f32>),
}

/// One decoded reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub tenant: String,
    pub device: String,
    /// Milliseconds since the Unix epoch, UTC.
    pub ts_ms: i64,
    pub seq: Option<i64>,
    /// Channels, sorted by name.
    pub channels: Vec<(String, Samples)>,
    /// What the reading said about its channels besides their samples (the object form
    /// `{"fs_hz": ..., "unit": ..., "samples": ...}`), sorted by channel; usually empty.
    pub described: Vec<Described>,
}

/// A channel's sample rate and unit as a reading stated them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Described {
    pub channel: String,
    pub fs_hz: Option<f64>,
    pub unit: Option<String>,
}

/// One named signal of a window. See `wit/plugin.wit` (`channel`) for the layout of `samples`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    pub name: String,
    pub samples: Vec<f32>,
    pub samples_per_reading: u32,
    /// Samples per second within a reading's burst, when known.
    #[serde(default)]
    pub sample_rate_hz: Option<f64>,
    /// What the samples measure (`g`, `m/s2`, `mm/s`, ...), when known.
    #[serde(default)]
    pub unit: Option<String>,
}

impl Channel {
    /// A channel whose sample rate and unit are not known.
    pub fn new(name: impl Into<String>, samples: Vec<f32>, samples_per_reading: u32) -> Channel {
        Channel { name: name.into(), samples, samples_per_reading, sample_rate_hz: None, unit: None }
    }
}

/// A window of consecutive readings of one device, assembled by the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub tenant: String,
    pub device: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub timestamps_ms: Vec<i64>,
    pub channels: Vec<Channel>,
    /// Asset registry metadata (model, site, install date, ...).
    #[serde(default)]
    pub asset: Vec<(String, String)>,
}

impl Window {
    /// The asset attribute called `key`.
    pub fn asset(&self, key: &str) -> Option<&str> {
        self.asset.iter().find(|(k, _)| k == key).map(|(_, v)| v.trim())
    }

    /// Fills what the readings did not say about each channel from the asset record: the sample
    /// rate from `<channel>_fs_hz`, the unit from `<channel>_unit`, and for channels whose
    /// readings carry bursts (more than one sample each) from `fs_hz` and `unit` as well. A value
    /// that is not a positive number is ignored.
    pub fn describe_channels_from_asset(&mut self) {
        if self.asset.is_empty() {
            return;
        }
        let mut described = Vec::with_capacity(self.channels.len());
        for c in &self.channels {
            let burst = c.samples_per_reading != 1;
            let own = |what: &str| self.asset(&format!("{}_{what}", c.name));
            let fs = c.sample_rate_hz.or_else(|| {
                own("fs_hz")
                    .or_else(|| if burst { self.asset("fs_hz") } else { None })
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|v| v.is_finite() && *v > 0.0)
            });
            let unit = c.unit.clone().or_else(|| {
                own("unit").or_else(|| if burst { self.asset("unit") } else { None }).map(str::to_string)
            });
            described.push((fs, unit.filter(|u| !u.is_empty())));
        }
        for (c, (fs, unit)) in self.channels.iter_mut().zip(described) {
            c.sample_rate_hz = fs;
            c.unit = unit;
        }
    }

    /// The asset record's `baseline_since` (epoch milliseconds or RFC 3339): the device's healthy
    /// baseline is learned from windows after it (a replaced bearing starts a new one).
    pub fn baseline_since(&self) -> Option<i64> {
        let v = self.asset("baseline_since")?;
        v.parse::<i64>().ok().or_else(|| crate::clock::parse_rfc3339(v).ok())
    }
}

/// Named feature values; `names[i]` names `values[i]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Features {
    pub names: Vec<String>,
    pub values: Vec<f32>,
}

impl Features {
    /// The value of the feature called `name`.
    pub fn get(&self, name: &str) -> Option<f32> {
        self.names.iter().position(|n| n == name).and_then(|i| self.values.get(i).copied())
    }
}

/// A SHAP value (or other attribution) of one feature.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contribution {
    pub feature: String,
    pub value: f32,
}

/// A model's output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    pub probability: f32,
    pub model: String,
    pub contributions: Vec<Contribution>,
}

impl Score {
    /// Puts the contributions in the contract's order, largest magnitude first (a model explains
    /// in feature order; a scorer plugin may return any order).
    pub fn order_contributions(&mut self) {
        self.contributions.sort_by(|a, b| b.value.abs().total_cmp(&a.value.abs()));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub severity: Severity,
    pub subject: String,
    pub body: String,
}

/// What a tenant's policy decided for one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub is_failure: bool,
    pub alerts: Vec<Alert>,
}

/// A pipeline stage, i.e. a plugin world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    Preprocess,
    Score,
    Policy,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Preprocess, Stage::Score, Stage::Policy];

    /// File name of the stage's component in a tenant folder.
    pub fn file_name(self) -> &'static str {
        match self {
            Stage::Preprocess => "preprocess.wasm",
            Stage::Score => "score.wasm",
            Stage::Policy => "policy.wasm",
        }
    }

    /// Name of the WIT world the stage's component implements.
    pub fn world(self) -> &'static str {
        match self {
            Stage::Preprocess => "preprocessor",
            Stage::Score => "scorer",
            Stage::Policy => "policy",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Preprocess => "preprocess",
            Stage::Score => "score",
            Stage::Policy => "policy",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(feature = "prometheus")]
impl prometheus_client::encoding::EncodeLabelValue for Stage {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

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
}

/// One named signal of a window. See `wit/plugin.wit` (`channel`) for the layout of `samples`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    pub name: String,
    pub samples: Vec<f32>,
    pub samples_per_reading: u32,
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

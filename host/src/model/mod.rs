//! Models the tenants' scorers reach through the `predict` import.
//!
//! A model is a folder `<models_dir>/<name>/` with `metadata.json` (feature names in input order,
//! version, engine, file) and the model file. One interface ([`Model`]), one engine per kind of
//! graph: [`trees`] evaluates XGBoost tree ensembles natively with TreeSHAP, [`OnnxModel`] runs
//! other ONNX graphs on tract. Models are loaded once, on first
//! use, and shared read-only by every plugin call.
//!
//! ```json
//! { "name": "bearing-logistic", "version": "1", "engine": "onnx", "file": "model.onnx",
//!   "features": ["vibration_rms", "vibration_kurtosis"], "output": 0, "threshold": 0.8 }
//! ```

pub mod baseline;
mod onnx;
pub mod trees;

pub use onnx::OnnxModel;
pub use trees::{TreeEnsemble, TreeModel};

use crate::types::{Features, Score};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Why a model could not score.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model {0:?} is not allowed for this tenant")]
    NotAllowed(String),
    #[error("loading model {name:?}: {reason}")]
    Load { name: String, reason: String },
    #[error("feature {0:?} is required by the model but missing")]
    MissingFeature(String),
    #[error("model {model:?} cannot score missing values (NaN): {features}")]
    Incomplete { model: String, features: String },
    #[error("inference failed: {0}")]
    Inference(String),
}

/// `metadata.json` of a model folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    pub version: String,
    pub engine: Engine,
    /// Model file, relative to the folder.
    pub file: PathBuf,
    /// Input features, in the order the model expects them.
    pub features: Vec<String>,
    /// Index of the output holding the probability (default: the last output). A two-column
    /// output is read as [P(healthy), P(failure)].
    #[serde(default)]
    pub output: Option<usize>,
    /// Threshold the model was tuned for (informative; the tenant's threshold rules).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Free text for people.
    #[serde(default)]
    pub description: Option<String>,
    /// SHA-256 of the training data, for provenance.
    #[serde(default)]
    pub training_data_sha256: Option<String>,
    /// Evaluation metrics recorded by the training pipeline (free form).
    #[serde(default)]
    pub metrics: Option<serde_json::Value>,
    /// The same model exported as ONNX, for other runtimes (the host reads `file`).
    #[serde(default)]
    pub onnx: Option<PathBuf>,
    /// Model family, e.g. "xgboost", "random-forest", "mlp".
    #[serde(default)]
    pub family: Option<String>,
    /// When the model was trained (RFC 3339).
    #[serde(default)]
    pub created: Option<String>,
}

impl Metadata {
    /// Reads `<folder>/metadata.json`; a model needs at least one feature.
    pub fn read(folder: &Path) -> Result<Metadata, String> {
        let path = folder.join("metadata.json");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let meta: Metadata = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.features.is_empty() {
            return Err(format!("{}: no features", path.display()));
        }
        Ok(meta)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Any ONNX graph tract runs (MLP, CNN, logistic regression, ...).
    Onnx,
    /// A tree ensemble in XGBoost's JSON format, evaluated natively, with TreeSHAP.
    Xgboost,
}

/// A loaded model.
pub trait Model: Send + Sync {
    /// `name@version`.
    fn id(&self) -> &str;
    /// Input feature names, in order.
    fn feature_names(&self) -> &[String];
    /// Scores one row, already in [`Model::feature_names`] order.
    fn predict_row(&self, row: &[f32], explain: bool) -> Result<Score, ModelError>;

    /// Probabilities of many rows at once (`rows` row-major, one row per
    /// [`Model::feature_names`] width), for windows that are ready together. Engines that gain
    /// from batching override it; the result equals [`Model::predict_row`] row by row.
    fn predict_rows(&self, rows: &[f32]) -> Result<Vec<f32>, ModelError> {
        let n = self.feature_names().len().max(1);
        rows.chunks_exact(n).map(|row| self.predict_row(row, false).map(|s| s.probability)).collect()
    }
}

/// A probability computed ahead, in a batch, for the row a scorer is expected to ask for. The
/// `predict` import answers from it only when the scorer asks that very model for that very row
/// without an explanation; anything else is computed as usual.
#[derive(Debug, Clone)]
pub struct Prefetched {
    /// [`Model::id`] of the model that computed it.
    pub model: String,
    pub row: Vec<f32>,
    pub probability: f32,
}

impl Prefetched {
    /// Whether this answers `model` on `row` (bit for bit: a NaN matches a NaN).
    pub fn answers(&self, model: &str, row: &[f32]) -> bool {
        self.model == model
            && self.row.len() == row.len()
            && self.row.iter().zip(row).all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

/// Orders `features` as `model` expects them.
pub fn arrange(model: &dyn Model, features: &Features) -> Result<Vec<f32>, ModelError> {
    model
        .feature_names()
        .iter()
        .map(|name| features.get(name).ok_or_else(|| ModelError::MissingFeature(name.clone())))
        .collect()
}

/// Loads models from a folder on first use and keeps them.
pub struct ModelRegistry {
    dir: PathBuf,
    loaded: RwLock<HashMap<String, Arc<dyn Model>>>,
    /// Changed models refused by [`ModelRegistry::reload`] since start.
    rejected: std::sync::atomic::AtomicU64,
}

impl ModelRegistry {
    pub fn new(dir: impl Into<PathBuf>) -> ModelRegistry {
        ModelRegistry { dir: dir.into(), loaded: RwLock::new(HashMap::new()), rejected: Default::default() }
    }

    /// Changed models refused since start (the loaded version kept serving).
    pub fn rejected_reloads(&self) -> u64 {
        self.rejected.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The model called `name`, loading it if needed.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Model>, ModelError> {
        if let Some(m) = self.loaded.read().unwrap_or_else(|e| e.into_inner()).get(name) {
            return Ok(m.clone());
        }
        let model = self.load(name)?;
        let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
        Ok(loaded.entry(name.to_string()).or_insert(model).clone())
    }

    /// Swaps in a changed model: when `name` is loaded, its folder is loaded again and checked
    /// (it must load and score a row of zeros to a probability) before it replaces the old one
    /// for the next call; a model that fails keeps the old one serving. A model not loaded yet
    /// is picked up by its first use. Runs on the watcher's thread, never on the hot path.
    pub fn reload(&self, name: &str) {
        if !self.loaded.read().unwrap_or_else(|e| e.into_inner()).contains_key(name) {
            return;
        }
        let checked = self.load(name).and_then(|m| {
            let zeros = vec![0.0; m.feature_names().len()];
            let s = m.predict_row(&zeros, false)?;
            if (0.0..=1.0).contains(&s.probability) {
                Ok(m)
            } else {
                Err(ModelError::Inference(format!("smoke row scored {} (not a probability)", s.probability)))
            }
        });
        match checked {
            Ok(m) => {
                tracing::info!(model = %m.id(), "Model reloaded");
                self.loaded.write().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), m);
            }
            Err(e) => {
                self.rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(model = name, error = %e, "Changed model rejected; the loaded version keeps serving")
            }
        }
    }

    fn load(&self, name: &str) -> Result<Arc<dyn Model>, ModelError> {
        let err = |reason: String| ModelError::Load { name: name.to_string(), reason };
        let folder = self.dir.join(name);
        let meta = Metadata::read(&folder).map_err(err)?;
        let model: Arc<dyn Model> = match meta.engine {
            Engine::Onnx => Arc::new(OnnxModel::load(&folder.join(&meta.file), &meta).map_err(err)?),
            Engine::Xgboost => Arc::new(TreeModel::load(&folder.join(&meta.file), &meta).map_err(err)?),
        };
        tracing::info!(model = %model.id(), path = %folder.display(), "Model loaded");
        Ok(model)
    }
}

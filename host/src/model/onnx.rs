//! The tract-onnx engine: any ONNX graph with one `[1, n_features]` f32 input.
//!
//! Tree ensembles are better served by the native tree engine (tract's TreeEnsembleClassifier is
//! orders of magnitude slower than onnxruntime as published); this engine is for MLPs, CNNs,
//! logistic regressions and other dense graphs. tract's `label` output of classifiers is not
//! trusted: the probability output is read and thresholds are applied by the policy.

use super::{Metadata, Model, ModelError};
use crate::types::Score;
use std::path::Path;
use std::sync::Arc;
use tract_onnx::prelude::*;

pub struct OnnxModel {
    id: String,
    features: Vec<String>,
    output: Option<usize>,
    plan: Arc<TypedRunnableModel>,
}

impl OnnxModel {
    pub fn load(path: &Path, meta: &Metadata) -> Result<OnnxModel, String> {
        let n = meta.features.len();
        let plan = tract_onnx::onnx()
            .model_for_path(path)
            .and_then(|m| m.with_input_fact(0, f32::fact([1, n]).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| format!("{}: {e:#}", path.display()))?;
        let outputs = plan.model().outputs.len();
        if let Some(i) = meta.output
            && i >= outputs
        {
            return Err(format!("{}: output {i} requested, the graph has {outputs}", path.display()));
        }
        Ok(OnnxModel {
            id: format!("{}@{}", meta.name, meta.version),
            features: meta.features.clone(),
            output: meta.output,
            plan,
        })
    }
}

impl Model for OnnxModel {
    fn id(&self) -> &str {
        &self.id
    }

    fn feature_names(&self) -> &[String] {
        &self.features
    }

    fn predict_row(&self, row: &[f32], _explain: bool) -> Result<Score, ModelError> {
        let fail = |e: TractError| ModelError::Inference(format!("{e:#}"));
        let input = Tensor::from_shape(&[1, row.len()], row).map_err(fail)?;
        let outputs = self.plan.run(tvec!(input.into_tvalue())).map_err(fail)?;
        let index = self.output.unwrap_or(outputs.len().saturating_sub(1));
        let out = outputs.get(index).ok_or_else(|| ModelError::Inference("graph has no output".into()))?;
        let values = out.to_plain_array_view::<f32>().map_err(fail)?;
        // [p] or [P(class 0), P(class 1)]: the failure probability is the last value of the row.
        let probability =
            *values.iter().last().ok_or_else(|| ModelError::Inference("empty output".into()))?;
        if !probability.is_finite() {
            return Err(ModelError::Inference(format!("probability is not finite: {probability}")));
        }
        Ok(Score {
            probability: probability.clamp(0.0, 1.0),
            model: self.id.clone(),
            contributions: Vec::new(),
        })
    }
}

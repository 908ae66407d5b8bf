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
    /// The same graph optimised for `[N, n_features]`, for batches; `None` when the graph does not
    /// take a symbolic batch (then batches run row by row).
    batched: Option<Arc<TypedRunnableModel>>,
}

impl OnnxModel {
    pub fn load(path: &Path, meta: &Metadata) -> Result<OnnxModel, String> {
        let n = meta.features.len();
        let plan = tract_onnx::onnx()
            .model_for_path(path)
            .and_then(|m| m.with_input_fact(0, f32::fact([1, n]).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| format!("{}: {e:#}", path.display()));
        clear_upper_vector_state();
        let plan = plan?;
        let outputs = plan.model().outputs.len();
        if let Some(i) = meta.output
            && i >= outputs
        {
            return Err(format!("{}: output {i} requested, the graph has {outputs}", path.display()));
        }
        let batched = tract_onnx::onnx()
            .model_for_path(path)
            .and_then(|m| {
                let batch = m.symbols.sym("N");
                m.with_input_fact(0, f32::fact(&[batch.to_dim(), n.to_dim()]).into())
            })
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable());
        clear_upper_vector_state();
        let batched = batched
            .inspect_err(|e| tracing::debug!(path = %path.display(), error = %format!("{e:#}"), "No batched plan; batches run row by row"))
            .ok();
        Ok(OnnxModel {
            id: format!("{}@{}", meta.name, meta.version),
            features: meta.features.clone(),
            output: meta.output,
            plan,
            batched,
        })
    }

    /// A graph computes on whatever it is given, and a missing value (NaN) may come out as a
    /// confident answer — the sequence CNN's `Max(x, ε)` turns it into ε and a healthy 0 — so a
    /// row with one is refused, naming the missing features (the trees, by contrast, route a
    /// missing value down the branch their training chose).
    fn complete(&self, rows: &[f32]) -> Result<(), ModelError> {
        if !rows.iter().any(|v| v.is_nan()) {
            return Ok(());
        }
        let n = self.features.len().max(1);
        let mut missing: Vec<&str> = rows
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_nan())
            .map(|(i, _)| self.features.get(i % n).map_or("?", String::as_str))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        Err(ModelError::Incomplete { model: self.id.clone(), features: missing.join(", ") })
    }

    /// The failure probability of each row of an output: the last column.
    fn probabilities(&self, outputs: TVec<TValue>, rows: usize) -> Result<Vec<f32>, ModelError> {
        let fail = |e: TractError| ModelError::Inference(format!("{e:#}"));
        let index = self.output.unwrap_or(outputs.len().saturating_sub(1));
        let out = outputs.get(index).ok_or_else(|| ModelError::Inference("graph has no output".into()))?;
        let values = out.to_plain_array_view::<f32>().map_err(fail)?;
        if rows == 0 || values.len() % rows != 0 || values.is_empty() {
            return Err(ModelError::Inference(format!("{} output values for {rows} rows", values.len())));
        }
        // [p] or [P(class 0), P(class 1)] per row: the failure probability is the row's last value.
        let width = values.len() / rows;
        values
            .iter()
            .skip(width - 1)
            .step_by(width)
            .map(|&p| {
                if p.is_finite() {
                    Ok(p.clamp(0.0, 1.0))
                } else {
                    Err(ModelError::Inference(format!("probability is not finite: {p}")))
                }
            })
            .collect()
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
        self.complete(row)?;
        let fail = |e: TractError| ModelError::Inference(format!("{e:#}"));
        let input = Tensor::from_shape(&[1, row.len()], row).map_err(fail)?;
        let outputs = self.plan.run(tvec!(input.into_tvalue()));
        clear_upper_vector_state();
        let probability = self.probabilities(outputs.map_err(fail)?, 1)?[0];
        Ok(Score { probability, model: self.id.clone(), contributions: Vec::new() })
    }

    fn predict_rows(&self, rows: &[f32]) -> Result<Vec<f32>, ModelError> {
        let n = self.features.len();
        let count = rows.len() / n;
        let Some(batched) = self.batched.as_ref().filter(|_| count > 1 && rows.len() == count * n) else {
            return rows.chunks_exact(n).map(|r| self.predict_row(r, false).map(|s| s.probability)).collect();
        };
        self.complete(rows)?;
        let fail = |e: TractError| ModelError::Inference(format!("{e:#}"));
        let input = Tensor::from_shape(&[count, n], rows).map_err(fail)?;
        let outputs = batched.run(tvec!(input.into_tvalue()));
        clear_upper_vector_state();
        self.probabilities(outputs.map_err(fail)?, count)
    }
}

/// tract's hand-written x86-64 kernels (AVX-512 sigmoid, matrix products) return without
/// `vzeroupper`, leaving the upper halves of the vector registers dirty. Legacy-SSE code that runs
/// next on the same thread — which includes cranelift's code for the plugins — then pays a
/// penalty on every vector instruction: measured here, the preprocess plugin ran 100× slower after
/// one tract prediction (docs/benchmarks.md). Clearing the state after every tract call costs a
/// few cycles.
fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked just above), which is all `zero_upper` requires.
        unsafe { zero_upper() }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn zero_upper() {
    std::arch::x86_64::_mm256_zeroupper();
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use std::arch::x86_64::{__cpuid_count, _xgetbv};

    /// XINUSE (XGETBV with ECX = 1): which register state components are not in their initial
    /// state. Bit 2: upper halves of YMM registers; bit 6: upper halves of ZMM0–15.
    fn upper_vector_state_in_use() -> Option<bool> {
        // CPUID.(EAX=0DH, ECX=1):EAX bit 2 says XGETBV with ECX = 1 is supported.
        let supported = std::arch::is_x86_feature_detected!("xsave")
            && std::arch::is_x86_feature_detected!("avx")
            && (__cpuid_count(0xD, 1).eax & 0b100) != 0;
        // SAFETY: XSAVE support and XGETBV(1) support were both checked just above.
        supported.then(|| unsafe { xinuse() } & 0b100_0100 != 0)
    }

    #[target_feature(enable = "xsave")]
    fn xinuse() -> u64 {
        // SAFETY: callers check that XGETBV with ECX = 1 is supported.
        unsafe { _xgetbv(1) }
    }

    #[test]
    fn a_prediction_leaves_the_upper_vector_state_clean() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = super::super::baseline::write(dir.path(), "m").expect("model");
        let meta = Metadata::read(&folder).expect("metadata");
        let model = OnnxModel::load(&folder.join("model.onnx"), &meta).expect("loads");
        let p = model.predict_row(&[3.0, 3.5, 70.0, 12.0], false).expect("predicts").probability;
        let in_use = upper_vector_state_in_use();
        assert!((p - 1.0 / (1.0 + 1f32.exp())).abs() < 1e-6, "p = {p}");
        if let Some(in_use) = in_use {
            assert!(!in_use, "upper vector state left dirty after a tract prediction");
        }
    }
}

//! The reference plugins, compiled from `plugins/` by `host/build.rs` and embedded in the binary.
//! They serve every stage a tenant folder does not override, and `edgepm plugin export` writes
//! them out as a starting point.

use crate::types::Stage;

/// `bearing-features`: the default preprocessor.
pub const PREPROCESS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bearing_features.wasm"));
/// `model-score`: the default scorer.
pub const SCORE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/model_score.wasm"));
/// `threshold-policy`: the default policy.
pub const POLICY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/threshold_policy.wasm"));

/// `ai4i-features`: the preprocessor of AI4I 2020-style machining telemetry (tenant `ai4i`);
/// not a default, exported with `edgepm plugin export --preprocess ai4i-features`.
pub const AI4I_PREPROCESS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ai4i_features.wasm"));

/// `bearing-spectrum`: the preprocessor of accelerometer bursts (tenant `vibration`); not a
/// default, exported with `edgepm plugin export --preprocess bearing-spectrum`.
pub const SPECTRUM_PREPROCESS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bearing_spectrum.wasm"));

/// The reference preprocessors by name.
pub fn preprocessor(name: &str) -> Option<&'static [u8]> {
    match name {
        "bearing-features" => Some(PREPROCESS),
        "bearing-spectrum" => Some(SPECTRUM_PREPROCESS),
        "ai4i-features" => Some(AI4I_PREPROCESS),
        _ => None,
    }
}

/// The built-in component of `stage`.
pub fn bytes(stage: Stage) -> &'static [u8] {
    match stage {
        Stage::Preprocess => PREPROCESS,
        Stage::Score => SCORE,
        Stage::Policy => POLICY,
    }
}

/// Where the built-in component of `stage` came from, as shown in logs.
pub fn source(stage: Stage) -> &'static str {
    match stage {
        Stage::Preprocess => "builtin:bearing-features",
        Stage::Score => "builtin:model-score",
        Stage::Policy => "builtin:threshold-policy",
    }
}

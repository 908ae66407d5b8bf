//! Model score: the reference score plugin of edgepm.
//!
//! Scores a window's features with the tenant's model through the host's `predict` import. The
//! model runs in the host (native tree ensembles with TreeSHAP, or tract for other ONNX graphs),
//! where it is loaded once and shared; the plugin chooses which model and when to explain.
//!
//! Settings (`tenant.toml`): `model` (default: the tenant's default model), `explain`
//! (`above-threshold`, the default: explain only scores above `threshold`; `always`; `never`),
//! `threshold` (default 0.8).

#[cfg(target_arch = "wasm32")]
mod component;

/// When to ask the host for per-feature contributions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Explain {
    Always,
    AboveThreshold,
    Never,
}

impl Explain {
    /// Parses the `explain` setting; unknown values fall back to the default.
    pub fn parse(value: Option<&str>) -> Explain {
        match value.map(str::trim) {
            Some("always") => Explain::Always,
            Some("never") => Explain::Never,
            _ => Explain::AboveThreshold,
        }
    }

    /// Whether a first, unexplained score of `probability` must be redone with an explanation.
    pub fn wants_rerun(self, probability: f32, threshold: f32) -> bool {
        self == Explain::AboveThreshold && probability > threshold
    }
}

/// Alert threshold when the tenant sets none.
pub const DEFAULT_THRESHOLD: f32 = 0.8;

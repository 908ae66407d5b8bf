//! Test side of the baseline model: writing it into a deployment, and its probability computed
//! by hand from its weights (independently of tract).

pub use edgepm::model::baseline::{BEARING_BIAS, BEARING_LOGISTIC};

/// The probability the model must give, computed without tract.
pub fn expected_probability(features: &[(&str, f32)]) -> f32 {
    let mut z = BEARING_BIAS as f64;
    for (name, w, c) in BEARING_LOGISTIC {
        let x = features.iter().find(|(n, _)| n == name).map(|(_, v)| *v).expect("feature present");
        z += *w as f64 * (x as f64 - *c as f64);
    }
    (1.0 / (1.0 + (-z).exp())) as f32
}

/// Writes the baseline as model `name` of `models_dir`.
pub fn write_bearing_model(models_dir: &std::path::Path, name: &str) {
    edgepm::model::baseline::write(models_dir, name).expect("model written");
}

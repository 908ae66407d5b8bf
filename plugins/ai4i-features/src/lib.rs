//! AI4I features: the preprocess plugin of tenant `ai4i` (machining process telemetry in the
//! format of the AI4I 2020 predictive-maintenance dataset).
//!
//! A reading carries the channels `air_temperature` [K], `process_temperature` [K],
//! `rotational_speed` [rpm], `torque` [Nm] and `tool_wear` [min]; the product quality variant
//! (`L`, `M`, `H`) is an asset attribute `Type`. From the newest reading of the window it computes
//! [`FEATURE_NAMES`]: the quality as 0/1/2, the five sensor values, and the physics the failure
//! modes depend on — temperature difference (heat dissipation), mechanical power
//! `torque × 2π × rpm / 60` in W (power failure), strain `tool wear × torque` (overstrain) and
//! strain over the variant's overstrain limit (11,000 min·Nm for L, 12,000 for M, 13,000 for H,
//! as the dataset's documentation states), which puts the three limits at one value, 1.
//! `models/train.py` computes the same features for training; keep the two in step.
//! A missing channel gives NaN (tree models route missing values).

#[cfg(target_arch = "wasm32")]
mod component;

/// Readings per window when the tenant does not set `window_size`: each reading is scored.
pub const DEFAULT_WINDOW_SIZE: u32 = 1;

pub const FEATURE_NAMES: [&str; 10] = [
    "type_quality",
    "air_temperature",
    "process_temperature",
    "rotational_speed",
    "torque",
    "tool_wear",
    "temperature_difference",
    "power",
    "strain",
    "overstrain_ratio",
];

/// The sensor channels, in [`FEATURE_NAMES`] order after `type_quality`.
pub const CHANNELS: [&str; 5] =
    ["air_temperature", "process_temperature", "rotational_speed", "torque", "tool_wear"];

/// The quality variant as a number: L 0, M 1, H 2; anything else is missing.
pub fn quality(t: Option<&str>) -> f32 {
    match t.map(str::trim) {
        Some("L") => 0.0,
        Some("M") => 1.0,
        Some("H") => 2.0,
        _ => f32::NAN,
    }
}

/// Strain at which a variant fails by overstrain, min·Nm (NaN for an unknown variant).
pub fn overstrain_limit(quality_variant: f32) -> f64 {
    match quality_variant {
        0.0 => 11_000.0,
        1.0 => 12_000.0,
        2.0 => 13_000.0,
        _ => f64::NAN,
    }
}

/// Features from the quality variant and the newest value of each of [`CHANNELS`] (NaN when a
/// channel is missing).
pub fn compute(quality_variant: f32, values: [f32; 5]) -> [f32; 10] {
    let [air, process, speed, torque, wear] = values;
    // f64 inside, like the training pipeline's pandas arithmetic, then rounded to f32 once.
    let (air64, process64, speed64, torque64, wear64) =
        (air as f64, process as f64, speed as f64, torque as f64, wear as f64);
    [
        quality_variant,
        air,
        process,
        speed,
        torque,
        wear,
        (process64 - air64) as f32,
        (torque64 * speed64 * (2.0 * std::f64::consts::PI / 60.0)) as f32,
        (wear64 * torque64) as f32,
        (wear64 * torque64 / overstrain_limit(quality_variant)) as f32,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_features() {
        let f = compute(quality(Some("M")), [298.1, 308.6, 1551.0, 42.8, 10.0]);
        assert_eq!(f[0], 1.0);
        assert!((f[6] - 10.5).abs() < 1e-3);
        assert!((f[7] - 6951.6).abs() < 1.0, "{}", f[7]);
        assert!((f[8] - 428.0).abs() < 1e-3);
        assert!((f[9] - 428.0 / 12_000.0).abs() < 1e-7);
        assert!(compute(quality(Some("?")), [298.1, 308.6, 1551.0, 42.8, 10.0])[9].is_nan());
        assert!(quality(Some("X")).is_nan());
        assert!(compute(0.0, [f32::NAN, 1.0, 1.0, 1.0, 1.0])[6].is_nan());
    }
}

//! Bearing spectrum: the reference preprocessor for accelerometers (contract 0.2.0).
//!
//! Each reading carries one burst per vibration axis — the channel `vibration` and any
//! `vibration_<axis>` — of at least 512 samples, with its sample rate and unit (from the reading
//! or the asset record: `fs_hz`, `unit`). Every burst is analysed on its own
//! ([`bearing_dsp::spectrum::analyse`]: moments, band energies in Hz, ISO 10816 velocity RMS, the
//! envelope spectrum at the bearing's defect frequencies); a window's value of each quantity is
//! its median over the window's bursts, and the axes are combined (levels as the RMS over axes,
//! shapes and envelope lines as the largest axis), so the features have the same names whatever
//! the sensor's axes. [`FEATURE_NAMES`], in order:
//!
//! - **levels** (`vib_rms_g`, `vib_peak_g`, `vib_velocity_mm_s`, six band energies in g²,
//!   the envelope amplitudes at BPFO, BPFI, BSF and FTF in g): what the sensor measured;
//! - **shapes** (`vib_crest`, `vib_kurtosis`, `vib_resonance_sk`, the four lines' prominences):
//!   dimensionless already;
//! - **relative levels** (`*_rel`): each level over the device's healthy baseline of it (the
//!   `history.baseline` import: the median over its commissioning period), as an amplitude ratio
//!   (band energies: the square root of their ratio). Healthy levels differ between machines and
//!   mountings; these ratios are what a model trained on other machines can compare. A device's
//!   first window, before anything was recorded, is its own baseline (ratio 1);
//! - `temperature_*`, `current_*`: mean and slope per hour when the readings carry them, else NaN.
//!
//! The defect lines need the bearing's geometry and shaft speed from the asset record (`balls`,
//! `ball_diameter_mm`, `pitch_diameter_mm`, `contact_angle_deg`, `rpm`) or an `rpm` channel;
//! without them those features are NaN (the trees route missing values). A vibration channel
//! without a sample rate or unit is an error that says what to publish.

#[cfg(target_arch = "wasm32")]
mod component;

use bearing_dsp::spectrum::{self, BurstSpectrum, DefectFrequencies, HZ_BANDS, Unit};

/// Readings per window when the tenant does not set `window_size`.
pub const DEFAULT_WINDOW_SIZE: u32 = 4;

/// Levels: divided by their baseline in the `*_rel` features (the first 13 features).
const LEVELS: &[&str] = FEATURE_NAMES.split_at(13).0;
/// Which [`LEVELS`] are energies (their ratio's square root is the amplitude ratio).
const IS_ENERGY: [bool; LEVELS.len()] =
    [false, false, false, true, true, true, true, true, true, false, false, false, false];

/// Names of the features, in the order [`compute`] writes them.
pub const FEATURE_NAMES: [&str; 37] = [
    // levels
    "vib_rms_g",
    "vib_peak_g",
    "vib_velocity_mm_s",
    "vib_band_10_500hz",
    "vib_band_500_1000hz",
    "vib_band_1000_2000hz",
    "vib_band_2000_4000hz",
    "vib_band_4000_8000hz",
    "vib_band_8000_12800hz",
    "vib_bpfo_g",
    "vib_bpfi_g",
    "vib_bsf_g",
    "vib_ftf_g",
    // shapes
    "vib_crest",
    "vib_kurtosis",
    "vib_resonance_sk",
    "vib_bpfo_prominence",
    "vib_bpfi_prominence",
    "vib_bsf_prominence",
    "vib_ftf_prominence",
    // levels over the device's baseline
    "vib_rms_rel",
    "vib_peak_rel",
    "vib_velocity_rel",
    "vib_band_10_500hz_rel",
    "vib_band_500_1000hz_rel",
    "vib_band_1000_2000hz_rel",
    "vib_band_2000_4000hz_rel",
    "vib_band_4000_8000hz_rel",
    "vib_band_8000_12800hz_rel",
    "vib_bpfo_rel",
    "vib_bpfi_rel",
    "vib_bsf_rel",
    "vib_ftf_rel",
    // other channels
    "temperature_mean",
    "temperature_slope",
    "current_mean",
    "current_slope",
];
const SHAPES: usize = 7;

/// One channel of a window, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Channel<'a> {
    pub name: &'a str,
    pub samples: &'a [f32],
    pub samples_per_reading: u32,
    pub sample_rate_hz: Option<f64>,
    pub unit: Option<&'a str>,
}

/// A window of readings, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Window<'a> {
    pub timestamps_ms: &'a [i64],
    pub channels: &'a [Channel<'a>],
    pub asset: &'a [(String, String)],
}

/// Defect frequencies used only to place the resonance search when the bearing is unknown (the
/// envelope lines are then NaN): a mid-size deep-groove bearing at 1,500 rpm.
const NOMINAL: DefectFrequencies = DefectFrequencies { bpfo: 100.0, bpfi: 150.0, bsf: 60.0, ftf: 10.0 };

/// Computes [`FEATURE_NAMES`] for `window`; `baseline(name)` answers the device's baseline of a
/// level (the `history.baseline` import).
pub fn compute(window: &Window<'_>, baseline: impl Fn(&str) -> Option<f64>) -> Result<Vec<f32>, String> {
    let axes: Vec<&Channel<'_>> = window
        .channels
        .iter()
        .filter(|c| (c.name == "vibration" || c.name.starts_with("vibration_")) && !c.samples.is_empty())
        .collect();
    if axes.is_empty() {
        return Err("window has no samples of channel 'vibration'".into());
    }
    let defects = defect_frequencies(window)?;
    // Per axis, the median over the window's bursts of each quantity.
    let mut per_axis: Vec<[f64; LEVELS.len() + SHAPES]> = Vec::with_capacity(axes.len());
    for c in &axes {
        let fs = c.sample_rate_hz.ok_or_else(|| {
            format!(
                "channel '{}' has no sample rate: publish it with the burst ({{\"fs_hz\": 25600, \"samples\": [...]}}) or set the device's asset attribute fs_hz",
                c.name
            )
        })?;
        let unit = c.unit.ok_or_else(|| {
            format!("channel '{}' has no unit: publish it with the burst (\"unit\": \"g\") or set the device's asset attribute unit", c.name)
        })?;
        let unit = Unit::parse(unit).ok_or_else(|| {
            format!("channel '{}' is in {unit:?}; this plugin reads g, m/s2 or mm/s", c.name)
        })?;
        let per = c.samples_per_reading as usize;
        if per < spectrum::MIN_SAMPLES {
            return Err(format!(
                "channel '{}' needs bursts of at least {} samples per reading, got {}",
                c.name,
                spectrum::MIN_SAMPLES,
                if per == 0 { "bursts of different lengths".to_string() } else { per.to_string() }
            ));
        }
        let bursts: Vec<BurstSpectrum> = c
            .samples
            .chunks_exact(per)
            .map(|b| spectrum::analyse(b, fs, unit, &defects.unwrap_or(NOMINAL)))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("channel '{}': {e}", c.name))?;
        let quantity = |f: &dyn Fn(&BurstSpectrum) -> f64| median(bursts.iter().map(f).collect());
        let mut q = [f64::NAN; LEVELS.len() + SHAPES];
        q[0] = quantity(&|b| b.moments.rms);
        q[1] = quantity(&|b| b.moments.peak);
        q[2] = quantity(&|b| b.velocity_rms_mm_s);
        for band in 0..HZ_BANDS {
            q[3 + band] = quantity(&|b| b.band_energy[band]);
        }
        if defects.is_some() {
            q[9] = quantity(&|b| b.bpfo.amplitude);
            q[10] = quantity(&|b| b.bpfi.amplitude);
            q[11] = quantity(&|b| b.bsf.amplitude);
            q[12] = quantity(&|b| b.ftf.amplitude);
            q[16] = quantity(&|b| b.bpfo.prominence);
            q[17] = quantity(&|b| b.bpfi.prominence);
            q[18] = quantity(&|b| b.bsf.prominence);
            q[19] = quantity(&|b| b.ftf.prominence);
        }
        q[13] = quantity(&|b| b.moments.crest);
        q[14] = quantity(&|b| b.moments.kurtosis);
        q[15] = quantity(&|b| b.resonance_kurtosis);
        per_axis.push(q);
    }
    let mut out = Vec::with_capacity(FEATURE_NAMES.len());
    // Levels: RMS over axes (energies: mean) — the peak and the envelope lines: the largest axis.
    let n = per_axis.len() as f64;
    let mut levels = [f64::NAN; LEVELS.len()];
    for (i, level) in levels.iter_mut().enumerate() {
        let values = per_axis.iter().map(|q| q[i]);
        *level = match i {
            1 | 9..=12 => values.fold(f64::NAN, f64::max),
            _ if IS_ENERGY[i] => values.sum::<f64>() / n,
            _ => (values.map(|v| v * v).sum::<f64>() / n).sqrt(),
        };
    }
    out.extend(levels.iter().map(|&v| v as f32));
    for i in LEVELS.len()..LEVELS.len() + SHAPES {
        out.push(per_axis.iter().map(|q| q[i]).fold(f64::NAN, f64::max) as f32);
    }
    for (i, name) in LEVELS.iter().enumerate() {
        let ratio = match baseline(name) {
            // The device's first window: nothing recorded yet, it is its own baseline.
            None => 1.0,
            Some(b) if b > 0.0 && b.is_finite() => levels[i] / b,
            Some(_) => f64::NAN,
        };
        let ratio = if levels[i].is_nan() { f64::NAN } else { ratio };
        out.push(if IS_ENERGY[i] { ratio.sqrt() } else { ratio } as f32);
    }
    for name in ["temperature", "current"] {
        let (mean, slope) = match window.channels.iter().find(|c| c.name == name && !c.samples.is_empty()) {
            Some(c) => bearing_dsp::trend(c.samples, window.timestamps_ms),
            None => (f64::NAN, f64::NAN),
        };
        out.push(mean as f32);
        out.push(slope as f32);
    }
    Ok(out)
}

/// The bearing's defect frequencies from the asset record, the shaft speed from an `rpm` channel
/// (its mean over the window) when the readings carry one; `None` without a geometry (a shaft
/// speed alone is not one); an error naming what is missing from a partial one.
fn defect_frequencies(window: &Window<'_>) -> Result<Option<DefectFrequencies>, String> {
    let rpm = window
        .channels
        .iter()
        .find(|c| c.name == "rpm" && !c.samples.is_empty())
        .map(|c| c.samples.iter().map(|&v| v as f64).sum::<f64>() / c.samples.len() as f64);
    let mut asset = window.asset.to_vec();
    if let Some(rpm) = rpm {
        asset.retain(|(k, _)| k != "rpm");
        asset.push(("rpm".into(), rpm.to_string()));
    }
    match spectrum::from_asset(&asset) {
        None => Ok(None),
        Some(Ok((geometry, shaft_hz))) => geometry.frequencies(shaft_hz).map(Some),
        Some(Err(e)) => Err(e),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FS: f64 = 25_600.0;

    fn femto_asset() -> Vec<(String, String)> {
        [("balls", "13"), ("ball_diameter_mm", "3.5"), ("pitch_diameter_mm", "25.6"), ("rpm", "1800")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Four bursts of noise of `rms` g (a deterministic generator).
    fn bursts(rms: f32, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..4 * 2560)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                // Sum of uniforms: close enough to Gaussian, variance 1.
                let u: f32 = (0..4).map(|k| ((state >> (16 * k)) & 0xffff) as f32 / 65535.0 - 0.5).sum();
                u * rms * 3f32.sqrt()
            })
            .collect()
    }

    /// A channel of 2,560-sample bursts at 25.6 kHz in g.
    fn channel<'a>(name: &'a str, samples: &'a [f32]) -> Channel<'a> {
        Channel { name, samples, samples_per_reading: 2560, sample_rate_hz: Some(FS), unit: Some("g") }
    }

    fn window<'a>(channels: &'a [Channel<'a>], asset: &'a [(String, String)]) -> Window<'a> {
        Window { timestamps_ms: &[0, 10_000, 20_000, 30_000], channels, asset }
    }

    fn feature(values: &[f32], name: &str) -> f32 {
        values[FEATURE_NAMES.iter().position(|n| *n == name).expect("a feature name")]
    }

    #[test]
    fn levels_are_relative_to_the_baseline_and_unknown_geometry_is_nan() {
        let x = bursts(0.4, 1);
        let c = [channel("vibration", &x)];
        let asset = femto_asset();
        let v = compute(&window(&c, &asset), |f| (f == "vib_rms_g").then_some(0.2)).unwrap();
        assert_eq!(v.len(), FEATURE_NAMES.len());
        assert!((feature(&v, "vib_rms_g") - 0.4).abs() < 0.02, "{}", feature(&v, "vib_rms_g"));
        assert!((feature(&v, "vib_rms_rel") - 2.0).abs() < 0.1, "{}", feature(&v, "vib_rms_rel"));
        // No baseline recorded yet: the window is its own.
        assert_eq!(feature(&v, "vib_peak_rel"), 1.0);
        assert!((2.5..3.5).contains(&feature(&v, "vib_kurtosis")), "{}", feature(&v, "vib_kurtosis"));
        assert!(feature(&v, "vib_bpfo_prominence").is_finite());
        assert!(feature(&v, "temperature_mean").is_nan());

        let rpm_only = [("rpm".to_string(), "1800".to_string())];
        let none = compute(&window(&c, &rpm_only), |_| None).unwrap();
        assert!(feature(&none, "vib_bpfo_g").is_nan() && feature(&none, "vib_bpfo_rel").is_nan());
        assert!((feature(&none, "vib_rms_g") - 0.4).abs() < 0.02);
    }

    #[test]
    fn axes_combine_into_one_set_of_names() {
        let (h, v) = (bursts(0.3, 2), bursts(0.4, 3));
        let c = [channel("vibration", &h), channel("vibration_vert", &v)];
        let out = compute(&window(&c, &[]), |_| None).unwrap();
        // RMS over axes: sqrt((0.09 + 0.16) / 2).
        assert!((feature(&out, "vib_rms_g") - 0.3536).abs() < 0.02, "{}", feature(&out, "vib_rms_g"));
    }

    #[test]
    fn what_is_missing_is_named() {
        let x = bursts(0.4, 4);
        let no_rate = [Channel { sample_rate_hz: None, ..channel("vibration", &x) }];
        let e = compute(&window(&no_rate, &[]), |_| None).unwrap_err();
        assert!(e.contains("no sample rate") && e.contains("fs_hz"), "{e}");
        let no_unit = [Channel { unit: None, ..channel("vibration", &x) }];
        assert!(compute(&window(&no_unit, &[]), |_| None).unwrap_err().contains("no unit"));
        let short = [Channel { samples_per_reading: 64, ..channel("vibration", &x) }];
        assert!(compute(&window(&short, &[]), |_| None).unwrap_err().contains("at least 512"));
        let mut bad = femto_asset();
        bad.retain(|(k, _)| k != "balls");
        let c = [channel("vibration", &x)];
        assert!(compute(&window(&c, &bad), |_| None).unwrap_err().contains("balls"));
        assert!(compute(&window(&[], &[]), |_| None).unwrap_err().contains("'vibration'"));
    }
}

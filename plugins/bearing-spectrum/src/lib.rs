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
//! - `temperature_*`, `current_*`: mean and slope per hour when the readings carry them, else NaN;
//! - **the sequence** (`seq_<quantity>_<k>`, after those, [`feature_names`]): the window's readings
//!   one by one — for each of [`SEQUENCE`], its value in reading `k` (0 = the oldest), combined
//!   over the axes like the medians, levels over the same baselines — the input of a sequence
//!   model (a 1-D CNN over the readings, `models/README.md`), which the medians would hide.
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

/// Names of the window's summary features, the first ones [`compute`] writes.
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

/// The quantities given per reading (`seq_<quantity>_<k>`): levels over their baselines (named
/// by their `*_rel` feature without `vib_`) and shapes — every one defined for any accelerometer
/// at 25.6 kHz, so a sequence model gets complete rows.
pub const SEQUENCE: [&str; 8] = [
    "rms_rel",
    "velocity_rel",
    "band_1000_2000hz_rel",
    "band_2000_4000hz_rel",
    "band_4000_8000hz_rel",
    "band_8000_12800hz_rel",
    "kurtosis",
    "crest",
];

/// Every feature name of a window of `readings` readings, in the order [`compute`] writes them:
/// [`FEATURE_NAMES`], then [`SEQUENCE`] quantity by quantity, reading by reading.
pub fn feature_names(readings: usize) -> Vec<String> {
    let mut names: Vec<String> = FEATURE_NAMES.iter().map(|n| n.to_string()).collect();
    for q in SEQUENCE {
        names.extend((0..readings).map(|k| format!("seq_{q}_{k}")));
    }
    names
}

/// Index into a burst's quantities (`LEVELS` then the shapes) of a [`SEQUENCE`] entry.
fn sequence_index(q: &str) -> usize {
    let name = format!("vib_{q}");
    let i = FEATURE_NAMES.iter().position(|n| *n == name).expect("a sequence quantity is a feature");
    // A `*_rel` feature stands for the level it divides (the levels' order).
    if i >= LEVELS.len() + SHAPES { i - LEVELS.len() - SHAPES } else { i }
}

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

/// Computes [`feature_names`]`(readings)` for `window`; `baseline(name)` answers the device's
/// baseline of a level (the `history.baseline` import).
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
    // Per axis, the median over the window's bursts of each quantity, and each burst's.
    let mut per_axis: Vec<[f64; LEVELS.len() + SHAPES]> = Vec::with_capacity(axes.len());
    let mut per_burst: Vec<Vec<[f64; LEVELS.len() + SHAPES]>> = Vec::with_capacity(axes.len());
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
        let quantities = |b: &BurstSpectrum| {
            let mut q = [f64::NAN; LEVELS.len() + SHAPES];
            q[0] = b.moments.rms;
            q[1] = b.moments.peak;
            q[2] = b.velocity_rms_mm_s;
            q[3..3 + HZ_BANDS].copy_from_slice(&b.band_energy);
            if defects.is_some() {
                q[9] = b.bpfo.amplitude;
                q[10] = b.bpfi.amplitude;
                q[11] = b.bsf.amplitude;
                q[12] = b.ftf.amplitude;
                q[16] = b.bpfo.prominence;
                q[17] = b.bpfi.prominence;
                q[18] = b.bsf.prominence;
                q[19] = b.ftf.prominence;
            }
            q[13] = b.moments.crest;
            q[14] = b.moments.kurtosis;
            q[15] = b.resonance_kurtosis;
            q
        };
        let each: Vec<[f64; LEVELS.len() + SHAPES]> = bursts.iter().map(quantities).collect();
        per_axis.push(std::array::from_fn(|i| median(each.iter().map(|q| q[i]).collect())));
        per_burst.push(each);
    }
    let readings = per_burst.iter().map(Vec::len).min().unwrap_or(0);
    let mut out = Vec::with_capacity(FEATURE_NAMES.len() + SEQUENCE.len() * readings);
    let summary = combine(&per_axis);
    let levels = &summary[..LEVELS.len()];
    out.extend(summary.iter().map(|&v| v as f32));
    // The baselines of the levels: `None` on the device's first window (nothing recorded yet:
    // it is its own baseline).
    let baselines: Vec<Option<f64>> = LEVELS
        .iter()
        .enumerate()
        .map(|(i, name)| match baseline(name) {
            None => Some(levels[i]),
            Some(b) if b > 0.0 && b.is_finite() => Some(b),
            Some(_) => None,
        })
        .collect();
    let ratio = |i: usize, level: f64| match baselines[i] {
        Some(b) if !level.is_nan() && b > 0.0 => {
            if IS_ENERGY[i] {
                (level / b).sqrt()
            } else {
                level / b
            }
        }
        // The first window of a device whose level is 0 or NaN: 1 as before, NaN for NaN.
        Some(_) if !level.is_nan() => 1.0,
        _ => f64::NAN,
    };
    for (i, &level) in levels.iter().enumerate() {
        out.push(ratio(i, level) as f32);
    }
    for name in ["temperature", "current"] {
        let (mean, slope) = match window.channels.iter().find(|c| c.name == name && !c.samples.is_empty()) {
            Some(c) => bearing_dsp::trend(c.samples, window.timestamps_ms),
            None => (f64::NAN, f64::NAN),
        };
        out.push(mean as f32);
        out.push(slope as f32);
    }
    // The sequence: each reading's quantities, combined over the axes like the medians.
    let by_reading: Vec<[f64; LEVELS.len() + SHAPES]> =
        (0..readings).map(|k| combine(&per_burst.iter().map(|axis| axis[k]).collect::<Vec<_>>())).collect();
    for q in SEQUENCE {
        let i = sequence_index(q);
        for r in &by_reading {
            out.push(if i < LEVELS.len() { ratio(i, r[i]) } else { r[i] } as f32);
        }
    }
    Ok(out)
}

/// One value per quantity from the axes' values: the peak (`vib_peak_g`), the envelope lines
/// (`vib_bpfo_g` … `vib_ftf_g`) and the shapes as the largest axis; the other levels as the RMS
/// over axes (energies: their mean).
fn combine(per_axis: &[[f64; LEVELS.len() + SHAPES]]) -> [f64; LEVELS.len() + SHAPES] {
    let n = per_axis.len() as f64;
    std::array::from_fn(|i| {
        let values = per_axis.iter().map(|q| q[i]);
        match i {
            _ if i == 1 || (9..=12).contains(&i) || i >= LEVELS.len() => values.fold(f64::NAN, f64::max),
            _ if IS_ENERGY[i] => values.sum::<f64>() / n,
            _ => (values.map(|v| v * v).sum::<f64>() / n).sqrt(),
        }
    })
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
        assert_eq!(v.len(), feature_names(4).len());
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
    fn the_sequence_gives_each_reading_against_the_same_baselines() {
        // Four bursts: the last two twice as strong.
        let mut x = bursts(0.2, 5);
        x[2 * 2560..].iter_mut().for_each(|v| *v *= 2.0);
        let c = [channel("vibration", &x)];
        let names = feature_names(4);
        assert_eq!(names.len(), 37 + 8 * 4);
        assert_eq!(names[37..41], ["seq_rms_rel_0", "seq_rms_rel_1", "seq_rms_rel_2", "seq_rms_rel_3"]);
        assert_eq!(names.last().map(String::as_str), Some("seq_crest_3"));
        let at = |v: &[f32], name: &str| v[names.iter().position(|n| n == name).expect(name)];
        let v = compute(&window(&c, &[]), |f| (f == "vib_rms_g").then_some(0.2)).unwrap();
        assert_eq!(v.len(), names.len());
        let rms: Vec<f32> = (0..4).map(|k| at(&v, &format!("seq_rms_rel_{k}"))).collect();
        assert!((0.9..1.1).contains(&rms[0]) && (0.9..1.1).contains(&rms[1]), "{rms:?}");
        assert!((1.8..2.2).contains(&rms[2]) && (1.8..2.2).contains(&rms[3]), "{rms:?}");
        // A band's energy ratio is an amplitude ratio, as in the summary features.
        let band = at(&v, "seq_band_4000_8000hz_rel_3") / at(&v, "seq_band_4000_8000hz_rel_0");
        assert!((1.7..2.3).contains(&band), "{band}");
        assert!((2.5..3.5).contains(&at(&v, "seq_kurtosis_0")));
        assert!(v[37..].iter().all(|x| x.is_finite()), "complete rows for a sequence model");
        // The device's first window (no baseline yet): the readings against the window's median.
        let first = compute(&window(&c, &[]), |_| None).unwrap();
        assert_eq!(at(&first, "vib_rms_rel"), 1.0);
        let s: Vec<f32> = (0..4).map(|k| at(&first, &format!("seq_rms_rel_{k}"))).collect();
        assert!(s[0] < 1.0 && s[3] > 1.0, "{s:?}");
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

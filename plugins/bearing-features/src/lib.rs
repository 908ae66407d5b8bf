//! Bearing features: the reference preprocess plugin of edgepm.
//!
//! From a window of readings it computes, in this order ([`FEATURE_NAMES`]):
//! - vibration: RMS, peak (max |x|), crest factor (peak / RMS), kurtosis (Pearson, 3 for Gaussian
//!   noise), skewness, and the energy of four equal-width frequency bands;
//! - temperature and current: mean, and least-squares slope per hour against the reading times.
//!
//! The feature code is plain Rust, compiled natively too: the host's benchmark and the training
//! data generator call [`compute`] directly, so training and serving features cannot drift.
//! The WebAssembly glue lives in `component.rs` and is compiled for `wasm32` only.
//!
//! Band energies: the vibration samples are cut into segments (one per reading when a reading
//! carries a burst of ≥ 8 samples, else the whole window), each segment's mean is removed, its
//! one-sided power spectrum is computed with a real FFT and normalised so that the four bands of a
//! segment add up to its variance; bands split bins `1..=L/2` into four contiguous equal ranges.
//! The reported band energy is the mean over segments.
//!
//! These are the features of the first contract (`edgepm:plugin@0.1.0`), which carries no sample
//! rate or unit: they take the simulator's bursts as they come. `bearing-spectrum` is their
//! successor for real accelerometers (bands in Hz, the envelope spectrum at the bearing's defect
//! frequencies, levels relative to each machine's baseline), on [`spectrum`] (`bearing-dsp`).
//!
//! A window without vibration samples is an error; missing temperature or current give NaN
//! features (tree models route missing values; others should reject them).

#[cfg(target_arch = "wasm32")]
mod component;
pub use bearing_dsp::{Moments, spectrum, trend};

use realfft::RealFftPlanner;
use realfft::num_complex::Complex;
use std::cell::RefCell;

/// Readings per window when the tenant does not set `window_size`.
pub const DEFAULT_WINDOW_SIZE: u32 = 32;

/// Number of frequency bands of the vibration spectrum.
pub const BANDS: usize = 4;

/// Names of the features, in the order [`compute`] writes them.
pub const FEATURE_NAMES: [&str; 13] = [
    "vibration_rms",
    "vibration_peak",
    "vibration_crest",
    "vibration_kurtosis",
    "vibration_skewness",
    "vibration_band_1",
    "vibration_band_2",
    "vibration_band_3",
    "vibration_band_4",
    "temperature_mean",
    "temperature_slope",
    "current_mean",
    "current_slope",
];

/// One channel of a window, borrowed from whatever representation the caller has.
#[derive(Debug, Clone, Copy)]
pub struct Channel<'a> {
    pub name: &'a str,
    pub samples: &'a [f32],
    pub samples_per_reading: u32,
}

/// A window of readings, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Window<'a> {
    pub timestamps_ms: &'a [i64],
    pub channels: &'a [Channel<'a>],
}

impl<'a> Window<'a> {
    fn channel(&self, name: &str) -> Option<&Channel<'a>> {
        self.channels.iter().find(|c| c.name == name && !c.samples.is_empty())
    }
}

/// Computes [`FEATURE_NAMES`] for `window` into `out` (cleared first).
pub fn compute(window: &Window<'_>, out: &mut Vec<f32>) -> Result<(), String> {
    out.clear();
    let vib = window
        .channel("vibration")
        .ok_or_else(|| "window has no samples of channel 'vibration'".to_string())?;
    if let Some(bad) = vib.samples.iter().find(|x| !x.is_finite()) {
        return Err(format!("channel 'vibration' holds a non-finite sample ({bad})"));
    }
    let m = Moments::of(vib.samples);
    out.extend_from_slice(&[m.rms, m.peak, m.crest, m.kurtosis, m.skewness].map(|v| v as f32));
    let segment = match vib.samples_per_reading as usize {
        l if l >= 8 => l,
        _ => vib.samples.len(),
    };
    out.extend_from_slice(&band_energies(vib.samples, segment).map(|v| v as f32));
    for name in ["temperature", "current"] {
        let (mean, slope) = match window.channel(name) {
            Some(c) => trend(c.samples, window.timestamps_ms),
            None => (f64::NAN, f64::NAN),
        };
        out.push(mean as f32);
        out.push(slope as f32);
    }
    Ok(())
}

thread_local! {
    static PLANNER: RefCell<RealFftPlanner<f64>> = RefCell::new(RealFftPlanner::new());
}

/// Mean one-sided band energies of `x` cut into segments of `segment` samples.
pub fn band_energies(x: &[f32], segment: usize) -> [f64; BANDS] {
    let mut bands = [0.0; BANDS];
    let l = segment.min(x.len());
    if l < 2 * BANDS {
        return bands;
    }
    let fft = PLANNER.with(|p| p.borrow_mut().plan_fft_forward(l));
    let mut input = fft.make_input_vec();
    let mut spectrum: Vec<Complex<f64>> = fft.make_output_vec();
    let mut scratch = fft.make_scratch_vec();
    let nbins = l / 2;
    let mut segments = 0usize;
    for seg in x.chunks_exact(l) {
        let mean = seg.iter().map(|&v| v as f64).sum::<f64>() / l as f64;
        for (dst, &v) in input.iter_mut().zip(seg) {
            *dst = v as f64 - mean;
        }
        if fft.process_with_scratch(&mut input, &mut spectrum, &mut scratch).is_err() {
            continue;
        }
        for (b, band) in bands.iter_mut().enumerate() {
            let (lo, hi) = (1 + b * nbins / BANDS, 1 + (b + 1) * nbins / BANDS);
            for (k, c) in spectrum.iter().enumerate().take(hi).skip(lo) {
                let one_sided = if l.is_multiple_of(2) && k == nbins { 1.0 } else { 2.0 };
                *band += one_sided * c.norm_sqr() / (l * l) as f64;
            }
        }
        segments += 1;
    }
    if segments > 0 {
        bands.iter_mut().for_each(|b| *b /= segments as f64);
    }
    bands
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pure_tone_lands_in_its_band() {
        // 64-sample burst, tone at bin 20 of 32 → third band (bins 17..=24).
        let x: Vec<f32> =
            (0..64).map(|i| (2.0 * std::f64::consts::PI * 20.0 * i as f64 / 64.0).sin() as f32).collect();
        let b = band_energies(&x, 64);
        assert!((b[2] - 0.5).abs() < 1e-6, "{b:?}");
        assert!(b[0] + b[1] + b[3] < 1e-9, "{b:?}");
    }

    #[test]
    fn missing_vibration_is_an_error() {
        let w = Window { timestamps_ms: &[0], channels: &[] };
        assert!(compute(&w, &mut Vec::new()).is_err());
    }
}

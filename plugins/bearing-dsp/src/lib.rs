//! The signal processing of the bearing plugins, shared by `bearing-features`,
//! `bearing-spectrum` and the host (training data, `edgepm spectrum`): plain Rust on `realfft`,
//! compiled natively and for `wasm32`, with no plugin glue of its own.

pub mod spectrum;

/// Time-domain statistics of a signal, computed in f64.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moments {
    pub rms: f64,
    pub peak: f64,
    pub crest: f64,
    pub kurtosis: f64,
    pub skewness: f64,
}

impl Moments {
    /// Statistics of `x` (not empty).
    pub fn of(x: &[f32]) -> Moments {
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let (mut sq, mut m2, mut m3, mut m4, mut peak) = (0.0, 0.0, 0.0, 0.0, 0.0f64);
        for &v in x {
            let v = v as f64;
            sq += v * v;
            peak = peak.max(v.abs());
            let d = v - mean;
            let d2 = d * d;
            m2 += d2;
            m3 += d2 * d;
            m4 += d2 * d2;
        }
        let rms = (sq / n).sqrt();
        let (m2, m3, m4) = (m2 / n, m3 / n, m4 / n);
        // A constant signal has no shape: report Gaussian-like values instead of dividing by 0.
        let (kurtosis, skewness) = if m2 > 1e-24 { (m4 / (m2 * m2), m3 / m2.powf(1.5)) } else { (3.0, 0.0) };
        let crest = if rms > 0.0 { peak / rms } else { 0.0 };
        Moments { rms, peak, crest, kurtosis, skewness }
    }
}

/// Mean and least-squares slope per hour of `samples` against `timestamps_ms`. When the channel
/// has one sample per reading the reading times are used, otherwise samples are taken as evenly
/// spaced over the window.
pub fn trend(samples: &[f32], timestamps_ms: &[i64]) -> (f64, f64) {
    let n = samples.len();
    let mean = samples.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, 0.0);
    }
    let (first, last) = match (timestamps_ms.first(), timestamps_ms.last()) {
        (Some(&a), Some(&b)) => (a, b),
        _ => (0, 0),
    };
    let hour = |i: usize| -> f64 {
        if timestamps_ms.len() == n {
            (timestamps_ms[i] - first) as f64 / 3_600_000.0
        } else {
            (last - first) as f64 / 3_600_000.0 * i as f64 / (n - 1) as f64
        }
    };
    let tmean = (0..n).map(hour).sum::<f64>() / n as f64;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, &v) in samples.iter().enumerate() {
        let dt = hour(i) - tmean;
        sxy += dt * (v as f64 - mean);
        sxx += dt * dt;
    }
    (mean, if sxx > 0.0 { sxy / sxx } else { 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_is_per_hour() {
        let ts = [0, 1_800_000, 3_600_000];
        let (mean, slope) = trend(&[70.0, 71.0, 72.0], &ts);
        assert!((mean - 71.0).abs() < 1e-9);
        assert!((slope - 2.0).abs() < 1e-9);
    }
}

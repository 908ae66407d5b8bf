//! Frequency-aware analysis of one vibration burst — the core of the bearing features that know
//! what they measure (issue 17): the sample rate and unit of the burst, the bearing's geometry and
//! its shaft speed.
//!
//! - **Band energies in Hz** ([`BAND_EDGES_HZ`]), not in fractions of the sample rate: a band
//!   above the burst's Nyquist frequency is `NaN` (not measured), not 0.
//! - **Velocity RMS** over 10–1,000 Hz (ISO 10816 / 20816), integrated from acceleration in the
//!   frequency domain, in mm/s — comparable across sensors whatever their unit.
//! - **Envelope spectrum**: the burst band-passed around its structural resonance — the band
//!   whose spectral kurtosis (short-time spectra, Antoni's estimator) is highest: impacts of a
//!   defect ring the structure, so their band is the impulsive one — then the Hilbert envelope
//!   (both computed from one real FFT: the band's bins, and the same bins turned by −90°, inverted
//!   by two real inverse FFTs), and the envelope's spectrum. Each defect frequency of the bearing
//!   (BPFO, BPFI, BSF, FTF: [`Geometry::frequencies`]) is read there as the sum of its first three
//!   harmonics' peaks (each within ±3 % for slip and speed error), and as its **prominence**: that
//!   sum over three times the envelope spectrum's median level — a ratio, so the sensor's gain and
//!   mounting cancel out.
//!
//! Plain Rust on `realfft` (the FFT the plugin already uses); no hand-rolled filter: the band-pass
//! is exact in the frequency domain, the burst being one block.

use crate::Moments;
use realfft::RealFftPlanner;
use realfft::num_complex::Complex;
use std::cell::RefCell;
use std::f64::consts::PI;

/// Edges of the band energies, Hz: `[10, 500)`, `[500, 1000)`, ... `[8000, 12800)`.
pub const BAND_EDGES_HZ: [f64; 7] = [10.0, 500.0, 1_000.0, 2_000.0, 4_000.0, 8_000.0, 12_800.0];
pub const HZ_BANDS: usize = BAND_EDGES_HZ.len() - 1;
/// The velocity band of ISO 10816 for machines running above 600 rpm, Hz.
pub const VELOCITY_BAND_HZ: (f64, f64) = (10.0, 1_000.0);
/// Standard gravity, mm/s² per g.
const G_MM_S2: f64 = 9_806.65;
/// The shortest burst [`analyse`] takes.
pub const MIN_SAMPLES: usize = 512;
/// Harmonics summed per defect frequency.
const HARMONICS: usize = 3;
/// How far a harmonic's peak may be from where the geometry puts it (slip, speed error).
const TOLERANCE: f64 = 0.03;
/// Short-time spectra of the spectral kurtosis: the longest frame (a power of two, hop = half)
/// that is at most half the inner-race defect period — a frame must hold at most one impact for
/// the impacts to show as kurtosis — within these bounds.
const SK_FRAME: (usize, usize) = (32, 256);

/// What a burst's samples are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Acceleration in standard gravities.
    G,
    /// Acceleration in m/s².
    MetersPerSecond2,
    /// Velocity in mm/s (the simulator's, and many velocity transmitters').
    MillimetersPerSecond,
}

impl Unit {
    /// `g`, `m/s2` (or `m/s²`), `mm/s`.
    pub fn parse(s: &str) -> Option<Unit> {
        match s {
            "g" => Some(Unit::G),
            "m/s2" | "m/s²" | "m/s^2" => Some(Unit::MetersPerSecond2),
            "mm/s" => Some(Unit::MillimetersPerSecond),
            _ => None,
        }
    }

    /// mm/s² per unit of acceleration (`None` for a velocity).
    fn mm_s2(self) -> Option<f64> {
        match self {
            Unit::G => Some(G_MM_S2),
            Unit::MetersPerSecond2 => Some(1_000.0),
            Unit::MillimetersPerSecond => None,
        }
    }
}

/// A rolling-element bearing's geometry (the asset registry's `balls`, `ball_diameter_mm`,
/// `pitch_diameter_mm`, `contact_angle_deg`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    pub balls: f64,
    pub ball_diameter_mm: f64,
    pub pitch_diameter_mm: f64,
    pub contact_angle_deg: f64,
}

/// The bearing of the FEMTO/PRONOSTIA test rig: 13 balls of 3.5 mm on a 25.6 mm pitch, 0°.
pub const FEMTO_BEARING: Geometry =
    Geometry { balls: 13.0, ball_diameter_mm: 3.5, pitch_diameter_mm: 25.6, contact_angle_deg: 0.0 };

/// The bearing and its shaft speed (Hz) from a device's asset record: `balls`,
/// `ball_diameter_mm`, `pitch_diameter_mm`, `contact_angle_deg` (default 0) and `rpm`. `None` when
/// the record names no bearing (a shaft speed alone is not one); an error that says what is
/// missing or wrong otherwise.
pub fn from_asset(asset: &[(String, String)]) -> Option<Result<(Geometry, f64), String>> {
    const KEYS: [&str; 4] = ["balls", "ball_diameter_mm", "pitch_diameter_mm", "contact_angle_deg"];
    let get = |key: &str| asset.iter().find(|(k, _)| k == key).map(|(_, v)| v.trim());
    if KEYS.iter().all(|k| get(k).is_none()) {
        return None;
    }
    let number = |key: &str, default: Option<f64>| -> Result<f64, String> {
        match get(key) {
            Some(v) => v.parse::<f64>().map_err(|_| format!("asset attribute {key} = {v:?} is not a number")),
            None => default.ok_or_else(|| format!("asset attribute {key} is missing")),
        }
    };
    let parse = || -> Result<(Geometry, f64), String> {
        let geometry = Geometry {
            balls: number("balls", None)?,
            ball_diameter_mm: number("ball_diameter_mm", None)?,
            pitch_diameter_mm: number("pitch_diameter_mm", None)?,
            contact_angle_deg: number("contact_angle_deg", Some(0.0))?,
        };
        let shaft_hz = number("rpm", None)? / 60.0;
        geometry.frequencies(shaft_hz)?;
        Ok((geometry, shaft_hz))
    };
    Some(parse())
}

/// A bearing's defect frequencies at one shaft speed, Hz.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DefectFrequencies {
    /// Ball pass frequency, outer race.
    pub bpfo: f64,
    /// Ball pass frequency, inner race.
    pub bpfi: f64,
    /// Ball spin frequency.
    pub bsf: f64,
    /// Fundamental train (cage) frequency.
    pub ftf: f64,
}

impl Geometry {
    /// The defect frequencies at `shaft_hz` (revolutions per second), by the usual kinematic
    /// formulas (no slip): BPFO = Z/2 · f(1 − r), BPFI = Z/2 · f(1 + r), BSF = D/(2d) · f(1 − r²),
    /// FTF = f/2 · (1 − r), with r = d/D · cos α.
    pub fn frequencies(&self, shaft_hz: f64) -> Result<DefectFrequencies, String> {
        let Geometry { balls, ball_diameter_mm: d, pitch_diameter_mm: p, contact_angle_deg: a } = *self;
        if !(3.0..=100.0).contains(&balls) {
            return Err(format!("a bearing has 3 to 100 rolling elements, not {balls}"));
        }
        if !(d > 0.0 && p > d) {
            return Err(format!("need 0 < ball diameter ({d} mm) < pitch diameter ({p} mm)"));
        }
        if !(0.0..90.0).contains(&a) {
            return Err(format!("contact angle {a}° is not in [0, 90)"));
        }
        if !(shaft_hz > 0.0 && shaft_hz.is_finite()) {
            return Err(format!("shaft speed {shaft_hz} Hz is not positive"));
        }
        let r = d / p * a.to_radians().cos();
        Ok(DefectFrequencies {
            bpfo: balls / 2.0 * shaft_hz * (1.0 - r),
            bpfi: balls / 2.0 * shaft_hz * (1.0 + r),
            bsf: p / (2.0 * d) * shaft_hz * (1.0 - r * r),
            ftf: shaft_hz / 2.0 * (1.0 - r),
        })
    }
}

/// One defect frequency in the envelope spectrum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnvelopeLine {
    /// Sum of the first three harmonics' peak amplitudes, in the burst's unit (g for m/s²).
    pub amplitude: f64,
    /// `amplitude` over three times the envelope spectrum's median level: 2–3 for noise alone
    /// (the largest of a few noise bins), 5–15 for the simulated defects of the tests.
    pub prominence: f64,
}

/// Everything [`analyse`] finds in one burst.
#[derive(Debug, Clone, PartialEq)]
pub struct BurstSpectrum {
    pub moments: Moments,
    /// Mean-square of each [`BAND_EDGES_HZ`] band (`NaN` above the Nyquist frequency).
    pub band_energy: [f64; HZ_BANDS],
    /// RMS velocity over [`VELOCITY_BAND_HZ`], mm/s.
    pub velocity_rms_mm_s: f64,
    /// The band the envelope was taken in (the highest spectral kurtosis), Hz.
    pub resonance_hz: (f64, f64),
    /// Its mean spectral kurtosis (0 for Gaussian noise, large for repeated impacts).
    pub resonance_kurtosis: f64,
    pub bpfo: EnvelopeLine,
    pub bpfi: EnvelopeLine,
    pub bsf: EnvelopeLine,
    pub ftf: EnvelopeLine,
}

thread_local! {
    static PLANNER: RefCell<RealFftPlanner<f64>> = RefCell::new(RealFftPlanner::new());
}

/// Analyses one burst of `samples` taken at `fs_hz` in `unit`, for a bearing whose defect
/// frequencies are `defects`. Needs at least 512 samples and finite values.
pub fn analyse(
    samples: &[f32],
    fs_hz: f64,
    unit: Unit,
    defects: &DefectFrequencies,
) -> Result<BurstSpectrum, String> {
    let n = samples.len();
    if n < MIN_SAMPLES {
        return Err(format!("a burst of {n} samples is too short for a spectrum (at least {MIN_SAMPLES})"));
    }
    if !(fs_hz > 0.0 && fs_hz.is_finite()) {
        return Err(format!("sample rate {fs_hz} Hz is not positive"));
    }
    if let Some(bad) = samples.iter().find(|x| !x.is_finite()) {
        return Err(format!("the burst holds a non-finite sample ({bad})"));
    }
    // Amplitudes in g for any acceleration, as given for a velocity.
    let scale = match unit {
        Unit::MetersPerSecond2 => 1.0 / 9.806_65,
        _ => 1.0,
    };
    let x: Vec<f64> = {
        let mean = samples.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        samples.iter().map(|&v| (v as f64 - mean) * scale).collect()
    };
    let unit = if unit == Unit::MetersPerSecond2 { Unit::G } else { unit };
    let scaled: Vec<f32> = samples.iter().map(|&v| (v as f64 * scale) as f32).collect();
    let moments = Moments::of(&scaled);

    let spectrum = real_fft(&x);
    let bin_hz = fs_hz / n as f64;
    let nyquist = fs_hz / 2.0;
    // One-sided mean-square per bin (Parseval: their sum is the variance).
    let power = |k: usize| {
        let one_sided = if n.is_multiple_of(2) && k == n / 2 { 1.0 } else { 2.0 };
        one_sided * spectrum[k].norm_sqr() / (n * n) as f64
    };
    let mut band_energy = [f64::NAN; HZ_BANDS];
    for (b, e) in band_energy.iter_mut().enumerate() {
        let (lo, hi) = (BAND_EDGES_HZ[b], BAND_EDGES_HZ[b + 1]);
        if hi <= nyquist + bin_hz / 2.0 {
            *e = (1..spectrum.len()).filter(|&k| (lo..hi).contains(&(k as f64 * bin_hz))).map(power).sum();
        }
    }
    let velocity_ms: f64 = (1..spectrum.len())
        .filter(|&k| (VELOCITY_BAND_HZ.0..=VELOCITY_BAND_HZ.1).contains(&(k as f64 * bin_hz)))
        .map(|k| match unit.mm_s2() {
            Some(mm_s2) => power(k) * (mm_s2 / (2.0 * PI * k as f64 * bin_hz)).powi(2),
            None => power(k),
        })
        .sum();

    // The impulsive band: above the defect lines' own region, where a defect's impacts ring.
    let floor_hz = (4.0 * defects.bpfi).max(500.0).min(nyquist / 2.0);
    let frame = {
        let longest = (fs_hz / (2.0 * defects.bpfi)).max(1.0) as usize;
        let pow2 = if longest.is_power_of_two() { longest } else { longest.next_power_of_two() / 2 };
        pow2.clamp(SK_FRAME.0, SK_FRAME.1).min(n / 4)
    };
    let (band, resonance_kurtosis) = resonance_band(&x, fs_hz, floor_hz, frame);
    let envelope = envelope(&spectrum, n, band);
    let env_spectrum = real_fft_padded(&envelope, 4 * n.next_power_of_two());
    let m = env_spectrum.len();
    let pad = 2 * (m - 1);
    let env_bin_hz = fs_hz / pad as f64;
    let amplitude: Vec<f64> = env_spectrum.iter().map(|c| 2.0 * c.norm() / n as f64).collect();
    // The envelope spectrum's level: its median from just under the cage frequency to well
    // above the inner-race one.
    let (lo, hi) =
        (((0.5 * defects.ftf) / env_bin_hz) as usize, ((5.0 * defects.bpfi) / env_bin_hz) as usize);
    let mut level: Vec<f64> = amplitude[lo.max(1)..hi.clamp(lo.max(1) + 1, m)].to_vec();
    level.sort_by(f64::total_cmp);
    let median = level.get(level.len() / 2).copied().unwrap_or(0.0).max(1e-12);
    let line = |f: f64| {
        let mut sum = 0.0;
        for h in 1..=HARMONICS {
            let centre = h as f64 * f;
            let half = (TOLERANCE * centre).max(bin_hz);
            let (a, b) = (
                ((centre - half) / env_bin_hz).floor() as usize,
                ((centre + half) / env_bin_hz).ceil() as usize,
            );
            if b >= m || a == 0 {
                continue;
            }
            sum += amplitude[a..=b].iter().copied().fold(0.0, f64::max);
        }
        EnvelopeLine { amplitude: sum, prominence: sum / (HARMONICS as f64 * median) }
    };
    Ok(BurstSpectrum {
        moments,
        band_energy,
        velocity_rms_mm_s: velocity_ms.sqrt(),
        resonance_hz: (band.0 as f64 * bin_hz, band.1 as f64 * bin_hz),
        resonance_kurtosis,
        bpfo: line(defects.bpfo),
        bpfi: line(defects.bpfi),
        bsf: line(defects.bsf),
        ftf: line(defects.ftf),
    })
}

fn real_fft(x: &[f64]) -> Vec<Complex<f64>> {
    real_fft_padded(x, x.len())
}

/// The spectrum of `x` zero-padded to `len` samples.
fn real_fft_padded(x: &[f64], len: usize) -> Vec<Complex<f64>> {
    let fft = PLANNER.with(|p| p.borrow_mut().plan_fft_forward(len));
    let mut input = fft.make_input_vec();
    input[..x.len()].copy_from_slice(x);
    let mut out = fft.make_output_vec();
    fft.process(&mut input, &mut out).expect("buffers made by the plan");
    out
}

/// The band of the burst's FFT bins `(lo, hi)` (bins of the whole burst) with the highest mean
/// spectral kurtosis, starting at `floor_hz` or above; and that kurtosis.
fn resonance_band(x: &[f64], fs_hz: f64, floor_hz: f64, frame: usize) -> ((usize, usize), f64) {
    let n = x.len();
    let fft = PLANNER.with(|p| p.borrow_mut().plan_fft_forward(frame));
    let mut input = fft.make_input_vec();
    let mut out = fft.make_output_vec();
    let bins = out.len();
    let (mut s2, mut s4) = (vec![0.0; bins], vec![0.0; bins]);
    let hann: Vec<f64> = (0..frame).map(|i| 0.5 - 0.5 * (2.0 * PI * i as f64 / frame as f64).cos()).collect();
    let mut frames = 0usize;
    let mut start = 0;
    while start + frame <= n {
        for (i, v) in input.iter_mut().enumerate() {
            *v = x[start + i] * hann[i];
        }
        fft.process(&mut input, &mut out).expect("buffers made by the plan");
        for (k, c) in out.iter().enumerate() {
            let p = c.norm_sqr();
            s2[k] += p;
            s4[k] += p * p;
        }
        frames += 1;
        start += frame / 2;
    }
    let sk: Vec<f64> = (0..bins)
        .map(|k| {
            let (m2, m4) = (s2[k] / frames as f64, s4[k] / frames as f64);
            if m2 > 0.0 { m4 / (m2 * m2) - 2.0 } else { 0.0 }
        })
        .collect();
    let frame_bin_hz = fs_hz / frame as f64;
    let first = ((floor_hz / frame_bin_hz).ceil() as usize).max(1);
    let last = bins - 1;
    let mut best = ((first, last), f64::NEG_INFINITY);
    for width in [2usize, 4, 8] {
        let mut lo = first;
        while lo + width <= last {
            let mean = sk[lo..lo + width].iter().sum::<f64>() / width as f64;
            if mean > best.1 {
                best = ((lo, lo + width), mean);
            }
            lo += (width / 2).max(1);
        }
    }
    // Frame bins (bin k is centred on k × frame_bin_hz) → the whole burst's bins.
    let to_burst = |k: f64| ((k * frame_bin_hz) / (fs_hz / n as f64)).round().max(1.0) as usize;
    let ((lo, hi), kurtosis) = best;
    (
        (to_burst(lo as f64 - 0.5), to_burst(hi as f64 - 0.5).min(n / 2)),
        if kurtosis.is_finite() { kurtosis } else { 0.0 },
    )
}

/// The Hilbert envelope of the burst band-passed to bins `[lo, hi)`, mean removed: the band's
/// bins inverted as they are (the band-passed signal) and turned by −90° (its Hilbert transform).
fn envelope(spectrum: &[Complex<f64>], n: usize, (lo, hi): (usize, usize)) -> Vec<f64> {
    let ifft = PLANNER.with(|p| p.borrow_mut().plan_fft_inverse(n));
    let mut band = vec![Complex::new(0.0, 0.0); spectrum.len()];
    let mut turned = band.clone();
    let last = spectrum.len() - 1;
    for k in lo.max(1)..hi.min(last) {
        band[k] = spectrum[k];
        turned[k] = Complex::new(spectrum[k].im, -spectrum[k].re);
    }
    let mut x = ifft.make_output_vec();
    let mut h = ifft.make_output_vec();
    ifft.process(&mut band, &mut x).expect("buffers made by the plan");
    ifft.process(&mut turned, &mut h).expect("buffers made by the plan");
    let mut e: Vec<f64> = x.iter().zip(&h).map(|(a, b)| (a * a + b * b).sqrt() / n as f64).collect();
    let mean = e.iter().sum::<f64>() / n as f64;
    e.iter_mut().for_each(|v| *v -= mean);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small reproducible Gaussian source (xorshift + Box–Muller): no RNG crate in a plugin.
    struct Noise(u64);
    impl Noise {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
        fn gauss(&mut self) -> f64 {
            let (u, v) = (self.uniform().max(1e-12), self.uniform());
            (-2.0 * u.ln()).sqrt() * (2.0 * PI * v).cos()
        }
    }

    const FS: f64 = 25_600.0;
    const SHAFT_HZ: f64 = 30.0;

    /// A FEMTO-like burst in g: shaft 1× and noise, plus (if `defect_hz`) impacts at that rate
    /// ringing a 4 kHz resonance, amplitude-modulated at the shaft speed when `modulated` (an
    /// inner-race defect passes through the load zone once per turn).
    fn burst(n: usize, defect_hz: Option<f64>, modulated: bool, seed: u64) -> Vec<f32> {
        let mut noise = Noise(seed);
        let mut since: f64 = 0.37e-3;
        (0..n)
            .map(|i| {
                let t = i as f64 / FS;
                let mut v = 0.05 * (2.0 * PI * SHAFT_HZ * t).sin() + 0.3 * noise.gauss();
                if let Some(f) = defect_hz {
                    let gain = if modulated { 0.6 + 0.4 * (2.0 * PI * SHAFT_HZ * t).cos() } else { 1.0 };
                    v += gain * 1.5 * (-since / 4e-4).exp() * (2.0 * PI * 4_000.0 * since).sin();
                    since += 1.0 / FS;
                    if since >= 1.0 / f {
                        since -= 1.0 / f;
                    }
                }
                v as f32
            })
            .collect()
    }

    #[test]
    fn the_femto_bearings_defect_frequencies_follow_from_its_geometry() {
        let f = FEMTO_BEARING.frequencies(30.0).expect("valid");
        assert!((f.bpfo - 168.34).abs() < 0.01, "{f:?}");
        assert!((f.bpfi - 221.66).abs() < 0.01, "{f:?}");
        assert!((f.bsf - 107.66).abs() < 0.01, "{f:?}");
        assert!((f.ftf - 12.949).abs() < 0.001, "{f:?}");
        let bad = Geometry { ball_diameter_mm: 30.0, ..FEMTO_BEARING };
        assert!(bad.frequencies(30.0).unwrap_err().contains("pitch"));
        assert!(FEMTO_BEARING.frequencies(0.0).is_err());
        assert!(Geometry { contact_angle_deg: 90.0, ..FEMTO_BEARING }.frequencies(30.0).is_err());
    }

    #[test]
    fn the_asset_record_names_the_bearing_and_its_speed() {
        let record = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert_eq!(from_asset(&record(&[("site", "Plant A")])), None);
        assert_eq!(from_asset(&record(&[("rpm", "1800")])), None, "a speed alone names no bearing");
        let femto = record(&[
            ("balls", "13"),
            ("ball_diameter_mm", "3.5"),
            ("pitch_diameter_mm", "25.6"),
            ("rpm", "1800"),
        ]);
        assert_eq!(from_asset(&femto), Some(Ok((FEMTO_BEARING, 30.0))));
        let e = from_asset(&record(&[("balls", "13"), ("rpm", "1800")])).expect("named").unwrap_err();
        assert!(e.contains("ball_diameter_mm is missing"), "{e}");
        let e = from_asset(&record(&[("balls", "thirteen")])).expect("named").unwrap_err();
        assert!(e.contains("not a number"), "{e}");
        let mut slow = femto.clone();
        slow[3].1 = "0".into();
        assert!(from_asset(&slow).expect("named").unwrap_err().contains("shaft speed"));
    }

    #[test]
    fn velocity_rms_integrates_acceleration_and_bands_are_in_hz() {
        // 1 g at 100 Hz (a whole number of periods): v = a / (2π f) = 15.61 mm/s peak, 11.04 RMS.
        let tone = |amp: f64, hz: f64| -> Vec<f32> {
            (0..2560).map(|i| (amp * (2.0 * PI * hz * i as f64 / FS).sin()) as f32).collect()
        };
        let f = FEMTO_BEARING.frequencies(SHAFT_HZ).expect("valid");
        let s = analyse(&tone(1.0, 100.0), FS, Unit::G, &f).expect("analysed");
        assert!((s.velocity_rms_mm_s - 9_806.65 / (2.0 * PI * 100.0) / 2f64.sqrt()).abs() < 0.01, "{s:?}");
        assert!((s.band_energy[0] - 0.5).abs() < 1e-6, "the tone is in [10, 500): {s:?}");
        assert!(s.band_energy[1..].iter().all(|&e| e < 1e-9), "{s:?}");
        // The same acceleration in m/s² reads the same; a velocity burst is not integrated.
        let si = analyse(&tone(9.806_65, 100.0), FS, Unit::MetersPerSecond2, &f).expect("analysed");
        assert!((si.velocity_rms_mm_s - s.velocity_rms_mm_s).abs() < 1e-6);
        assert!((si.moments.rms - s.moments.rms).abs() < 1e-6, "amplitudes in g");
        let v = analyse(&tone(10.0, 100.0), FS, Unit::MillimetersPerSecond, &f).expect("analysed");
        assert!((v.velocity_rms_mm_s - 10.0 / 2f64.sqrt()).abs() < 1e-6, "{v:?}");
        // 3 kHz lands in [2000, 4000); at a 2,560 Hz sample rate the upper bands are not measured.
        let s = analyse(&tone(1.0, 3_000.0), FS, Unit::G, &f).expect("analysed");
        assert!((s.band_energy[3] - 0.5).abs() < 1e-6, "{s:?}");
        let slow: Vec<f32> =
            (0..1024).map(|i| (2.0 * PI * 100.0 * i as f64 / 2_560.0).sin() as f32).collect();
        let s = analyse(&slow, 2_560.0, Unit::MillimetersPerSecond, &f).expect("analysed");
        assert!(s.band_energy[0] > 0.4 && s.band_energy[2..].iter().all(|e| e.is_nan()), "{s:?}");
    }

    #[test]
    fn the_envelope_finds_the_defect_that_rings_the_structure() {
        let f = FEMTO_BEARING.frequencies(SHAFT_HZ).expect("valid");
        for seed in 1..=5 {
            let healthy = analyse(&burst(4096, None, false, seed), FS, Unit::G, &f).expect("healthy");
            let outer = analyse(&burst(4096, Some(f.bpfo), false, seed), FS, Unit::G, &f).expect("outer");
            let inner = analyse(&burst(4096, Some(f.bpfi), true, seed), FS, Unit::G, &f).expect("inner");
            // The impulsive band is found around the 4 kHz resonance.
            for s in [&outer, &inner] {
                assert!(s.resonance_hz.0 <= 4_400.0 && s.resonance_hz.1 >= 3_600.0, "{s:?}");
                assert!(s.resonance_kurtosis > 1.0, "{s:?}");
            }
            assert!(healthy.resonance_kurtosis < 0.5, "{healthy:?}");
            // Each defect stands out at its own frequency, not at the others'.
            assert!(outer.bpfo.prominence > 6.0, "seed {seed}: {outer:?}");
            assert!(
                outer.bpfo.prominence > 2.0 * outer.bpfi.prominence.max(outer.bsf.prominence),
                "{outer:?}"
            );
            assert!(inner.bpfi.prominence > 5.0, "seed {seed}: {inner:?}");
            assert!(inner.bpfi.prominence > 2.0 * inner.bpfo.prominence, "{inner:?}");
            for line in [healthy.bpfo, healthy.bpfi, healthy.bsf] {
                assert!(line.prominence < 3.5, "seed {seed}: a healthy bearing shows a line: {healthy:?}");
            }
            // FEMTO's 2,560-sample snapshots are enough.
            let short = analyse(&burst(2560, Some(f.bpfo), false, seed), FS, Unit::G, &f).expect("2560");
            assert!(short.bpfo.prominence > 6.0, "seed {seed}: {short:?}");
        }
    }

    #[test]
    fn bad_bursts_are_refused_with_the_reason() {
        let f = FEMTO_BEARING.frequencies(SHAFT_HZ).expect("valid");
        assert!(analyse(&[0.0; 64], FS, Unit::G, &f).unwrap_err().contains("too short"));
        let mut x = burst(1024, None, false, 1);
        x[10] = f32::NAN;
        assert!(analyse(&x, FS, Unit::G, &f).unwrap_err().contains("non-finite"));
        assert!(analyse(&burst(1024, None, false, 1), 0.0, Unit::G, &f).unwrap_err().contains("sample rate"));
        assert_eq!(Unit::parse("m/s²"), Some(Unit::MetersPerSecond2));
        assert_eq!(Unit::parse("furlongs"), None);
    }
}

//! The simulated accelerometer: bursts of acceleration in g at a configurable sample rate, shaped
//! after the FEMTO/PRONOSTIA run-to-failure bearings (issue 17, `models/README.md` compares the
//! two feature by feature).
//!
//! A burst is the sum of
//! - **broadband vibration**: Gaussian noise with FEMTO's healthy spectrum — little below 1 kHz,
//!   most of the energy between 1 and 12.8 kHz ([`HEALTHY_BANDS`]) — made in the frequency domain
//!   (each bin's amplitude from the band's level, a random phase, one inverse real FFT), scaled by
//!   the motor's mounting (healthy RMS 0.28–0.44 g across a fleet; FEMTO's six span 0.34–0.45)
//!   and growing with wear;
//! - **running speed**: 1× and 2× the shaft speed, a few hundredths of a g — what the ISO 10816
//!   velocity (10–1,000 Hz) of a healthy motor is made of, with the low broadband;
//! - **defect impacts** once the bearing degrades, each ringing the motor's structural resonance
//!   (a damped sine, quality factor [`RING_Q`]) with a random strength, at the rate the bearing's
//!   geometry gives (`spectrum::Geometry::frequencies`, with [`SLIP`] random slip between
//!   impacts) for the motor's [`Fault`]: an **outer-race** defect (the default) is struck at BPFO
//!   with a steady strength (it sits still in the load zone); an **inner-race** defect at BPFI,
//!   its strength modulated once per shaft revolution as it turns through the load zone (sidebands
//!   at ± 1× in the envelope); a **ball** defect at 2 × BSF (it strikes both races once per spin),
//!   weaker, modulated by the cage (FTF) carrying the ball through the load zone. They raise the
//!   kurtosis, the crest factor, the resonance band's spectral kurtosis and the envelope's defect
//!   lines long before the RMS.
//!
//! Calibrated by `tests::healthy_and_late_life_bursts_look_like_femtos` against the medians of
//! FEMTO's first half of life and last tenth of life.

use bearing_features::spectrum::Geometry;
use rand::Rng as _;
use rand::rngs::SmallRng;
use rand_distr::{Distribution as _, StandardNormal};
use realfft::RealFftPlanner;
use realfft::num_complex::Complex;
use std::cell::RefCell;
use std::f64::consts::{PI, TAU};

/// FEMTO's sample rate (and a common one for bearing monitoring).
pub const DEFAULT_FS_HZ: f64 = 25_600.0;
/// Samples per burst: 0.16 s at 25.6 kHz, 8 KB as base64 i16 — well inside IoT Core's 128 KB.
pub const DEFAULT_SAMPLES: usize = 4_096;
/// Resolution of the published samples (i16 × 1 mg: ±32.7 g, FEMTO's tests stop at 20 g).
pub const SCALE_G: f64 = 0.001;

/// Healthy mean-square per band (from, to Hz; g²), close to the medians of FEMTO's first half of
/// life (its bands of `bearing-spectrum`) once the running-speed lines are added.
pub const HEALTHY_BANDS: [(f64, f64, f64); 6] = [
    (10.0, 500.0, 0.0025),
    (500.0, 1_000.0, 0.0022),
    (1_000.0, 2_000.0, 0.019),
    (2_000.0, 4_000.0, 0.024),
    (4_000.0, 8_000.0, 0.034),
    (8_000.0, 12_800.0, 0.037),
];
/// Broadband amplitude at health `h`: `1 + BROADBAND_GROWTH × h` times the healthy one.
const BROADBAND_GROWTH: f64 = 0.9;
/// Peak acceleration of the 1× line of a healthy motor, g (2× is a third of it).
const RUNNING_SPEED_G: f64 = 0.012;
/// Peak acceleration of one defect impact at `h = 1`, g (before the mounting and the random
/// strength of each impact).
const IMPACT_G: f64 = 4.0;
/// Quality factor of the structural resonance: an impact rings for `Q / (π f)` seconds.
const RING_Q: f64 = 8.0;
/// Random slip between two defect impacts (standard deviation, fraction of the period): real
/// defects are not clocks — FEMTO's envelope lines stand only 2–5× over their neighbours.
const SLIP: f64 = 0.1;
/// Surface roughness of a healthy bearing: small impacts at random times (a Poisson process of
/// this rate, per second, of this peak in g) — FEMTO's healthy bursts are a little impulsive
/// (kurtosis 3.3, crest 4.2), not Gaussian.
const ROUGHNESS: (f64, f64) = (80.0, 1.2);

/// Where a bearing's defect is: what strikes, how often, and how the load zone modulates it.
/// Named on the command line and in recordings as clap spells it: `outer-race`, `inner-race`,
/// `ball`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Fault {
    /// A spall on the outer race: impacts at BPFO, steady.
    #[default]
    OuterRace,
    /// A spall on the inner race: impacts at BPFI, modulated once per shaft revolution.
    InnerRace,
    /// A spall on a ball: impacts at 2 × BSF, weaker, modulated at the cage's speed (FTF).
    Ball,
}

impl Fault {
    /// Impacts per second, the frequency of the load zone's modulation (Hz, `None`: steady) and
    /// the impacts' strength relative to an outer-race defect's, for a shaft at `shaft_hz`.
    fn impacts(self, bearing: &Geometry, shaft_hz: f64) -> (f64, Option<f64>, f64) {
        let f = bearing.frequencies(shaft_hz).ok();
        match self {
            Fault::OuterRace => (f.map_or(3.57 * shaft_hz, |f| f.bpfo), None, 1.0),
            Fault::InnerRace => (f.map_or(5.43 * shaft_hz, |f| f.bpfi), Some(shaft_hz), 1.0),
            Fault::Ball => {
                (f.map_or(4.7 * shaft_hz, |f| 2.0 * f.bsf), Some(f.map_or(0.4 * shaft_hz, |f| f.ftf)), 0.9)
            }
        }
    }
}

/// How a motor's accelerometer sees its bearing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mounting {
    /// The bearing whose defect frequencies the impacts follow.
    pub bearing: Geometry,
    /// Where its defect grows (when the motor degrades).
    pub fault: Fault,
    /// Gain of the sensor's mounting on the whole signal (1 = FEMTO's median).
    pub gain: f64,
    /// Structural resonance the impacts ring, Hz (kept below 0.4 × the sample rate).
    pub resonance_hz: f64,
}

thread_local! {
    static PLANNER: RefCell<RealFftPlanner<f64>> = RefCell::new(RealFftPlanner::new());
}

/// One burst of `n` samples at `fs_hz`, in g, of a motor turning at `shaft_hz` with health `h`
/// (0 healthy … 1 failed).
pub fn burst(
    rng: &mut SmallRng,
    mounting: &Mounting,
    shaft_hz: f64,
    h: f64,
    fs_hz: f64,
    n: usize,
) -> Vec<f32> {
    let n = n.max(2);
    let mut x = broadband(rng, fs_hz, n, mounting.gain * (1.0 + BROADBAND_GROWTH * h));
    let dt = 1.0 / fs_hz;
    let phase = rng.random::<f64>() * TAU;
    let a1 = RUNNING_SPEED_G * mounting.gain * (1.0 + 0.5 * h);
    for (i, v) in x.iter_mut().enumerate() {
        let t = i as f64 * dt;
        *v += a1 * (TAU * shaft_hz * t + phase).sin() + a1 / 3.0 * (2.0 * (TAU * shaft_hz * t + phase)).sin();
    }
    let resonance = mounting.resonance_hz.min(0.4 * fs_hz);
    let decay = RING_Q / (PI * resonance);
    let ring = |x: &mut [f64], at: f64, strength: f64| {
        let first = ((at / dt).ceil().max(0.0)) as usize;
        let last = (((at + 8.0 * decay) / dt).ceil() as usize).min(x.len());
        for (i, v) in x.iter_mut().enumerate().take(last).skip(first) {
            let s = i as f64 * dt - at;
            *v += strength * (-s / decay).exp() * (TAU * resonance * s).sin();
        }
    };
    let span = n as f64 * dt;
    let (rate, roughness) = ROUGHNESS;
    let mut at = -decay * 8.0;
    loop {
        let u: f64 = rng.random::<f64>().max(1e-12);
        at += -u.ln() / rate;
        if at >= span {
            break;
        }
        let strength = roughness * mounting.gain * rng.random::<f64>();
        ring(&mut x, at, strength);
    }
    if h > 0.0 {
        let (per_second, modulation, relative) = mounting.fault.impacts(&mounting.bearing, shaft_hz);
        let peak = IMPACT_G * relative * mounting.gain * h.powf(0.7);
        // The load zone: strongest once per turn of what carries the defect through it (an
        // outer-race defect stays put: no draw, so such motors keep their random streams).
        let load = modulation.map(|f| (f, rng.random::<f64>() * TAU));
        let load_at =
            |t: f64| load.map_or(1.0, |(f, phase)| 0.3 + 0.7 * (0.5 + 0.5 * (TAU * f * t + phase).cos()));
        // The impact before the burst's first sample may still ring: start one period early.
        let period = 1.0 / per_second;
        let mut at = -rng.random::<f64>() * period;
        while at < span {
            let strength = peak * load_at(at) * (0.6 + 0.8 * rng.random::<f64>());
            ring(&mut x, at, strength);
            let slip: f64 = StandardNormal.sample(rng);
            at += period * (1.0 + SLIP * slip);
        }
    }
    x.into_iter().map(|v| v as f32).collect()
}

/// Gaussian noise with [`HEALTHY_BANDS`]'s spectrum times `gain`²: each bin of a band gets an
/// equal share of its mean-square, a Gaussian amplitude and phase; one inverse real FFT.
fn broadband(rng: &mut SmallRng, fs_hz: f64, n: usize, gain: f64) -> Vec<f64> {
    let fft = PLANNER.with(|p| p.borrow_mut().plan_fft_inverse(n));
    let mut spectrum = fft.make_input_vec();
    let bin_hz = fs_hz / n as f64;
    // Bins 1 up to Nyquist, Nyquist itself excluded for an even n (its imaginary part must be 0).
    let top = if n.is_multiple_of(2) { n / 2 } else { n / 2 + 1 };
    for &(lo, hi, mean_square) in &HEALTHY_BANDS {
        let bins = ((lo / bin_hz).ceil() as usize).max(1)..((hi / bin_hz).ceil() as usize).min(top);
        if bins.is_empty() {
            continue;
        }
        // A bin's one-sided mean-square is 2|X|²/n²: each of re and im gets a quarter of it × n².
        let per_bin = gain * gain * mean_square / bins.len() as f64;
        let sd = (per_bin * (n * n) as f64 / 4.0).sqrt();
        for k in bins {
            let (re, im): (f64, f64) = (StandardNormal.sample(rng), StandardNormal.sample(rng));
            spectrum[k] = Complex::new(sd * re, sd * im);
        }
    }
    let mut out = fft.make_output_vec();
    fft.process(&mut spectrum, &mut out).expect("buffers made by the plan");
    out.iter_mut().for_each(|v| *v /= n as f64);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bearing_features::spectrum::{BurstSpectrum, Unit, analyse};
    use rand::SeedableRng as _;

    const FEMTO_LIKE: Mounting = Mounting {
        bearing: bearing_features::spectrum::FEMTO_BEARING,
        fault: Fault::OuterRace,
        gain: 1.0,
        resonance_hz: 5_000.0,
    };

    /// Median over `bursts` bursts at health `h` and sample rate `fs` of each quantity `pick`
    /// takes from a burst's analysis.
    fn medians<const N: usize>(
        m: &Mounting,
        h: f64,
        fs: f64,
        bursts: usize,
        seed: u64,
        pick: impl Fn(&BurstSpectrum) -> [f64; N],
    ) -> [f64; N] {
        let mut rng = SmallRng::seed_from_u64(seed);
        let defects = m.bearing.frequencies(30.0).expect("geometry");
        let mut rows: Vec<[f64; N]> = (0..bursts)
            .map(|_| {
                let x = burst(&mut rng, m, 30.0, h, fs, DEFAULT_SAMPLES);
                pick(&analyse(&x, fs, Unit::G, &defects).expect("a spectrum"))
            })
            .collect();
        std::array::from_fn(|j| {
            rows.sort_by(|a, b| a[j].total_cmp(&b[j]));
            rows[bursts / 2][j]
        })
    }

    /// Median over `bursts` bursts at health `h` of each of (RMS g, velocity mm/s, kurtosis,
    /// crest, resonance SK, BPFO prominence).
    fn features(m: &Mounting, h: f64, bursts: usize, seed: u64) -> [f64; 6] {
        medians(m, h, DEFAULT_FS_HZ, bursts, seed, |s| {
            [
                s.moments.rms,
                s.velocity_rms_mm_s,
                s.moments.kurtosis,
                s.moments.crest,
                s.resonance_kurtosis,
                s.bpfo.prominence,
            ]
        })
    }

    #[test]
    fn a_burst_has_the_asked_length_and_band_levels() {
        let mut rng = SmallRng::seed_from_u64(3);
        let x = broadband(&mut rng, DEFAULT_FS_HZ, DEFAULT_SAMPLES, 1.0);
        assert_eq!(x.len(), DEFAULT_SAMPLES);
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let expected: f64 = HEALTHY_BANDS.iter().map(|b| b.2).sum();
        assert!((ms / expected - 1.0).abs() < 0.1, "mean-square {ms} vs {expected}");
        // At a lower sample rate the bands above Nyquist are simply not there.
        let x = broadband(&mut rng, 8_000.0, 2_048, 1.0);
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let below: f64 = HEALTHY_BANDS.iter().filter(|b| b.1 <= 4_000.0).map(|b| b.2).sum();
        assert!((ms / below - 1.0).abs() < 0.15, "mean-square {ms} vs {below}");
    }

    /// Each fault strikes where its geometry says: its own envelope line stands out (the ball's
    /// 2 × BSF is the BSF line's second harmonic), and the bursts turn impulsive, at FEMTO's
    /// sample rate and at 12 kHz (a common one for industrial accelerometers).
    #[test]
    fn each_fault_shows_its_own_defect_line() {
        // The simulated fleet's 6309-class bearing (FEMTO's puts 2 × BSF within 3 % of BPFI).
        let motor = Mounting {
            bearing: Geometry {
                balls: 8.0,
                ball_diameter_mm: 17.46,
                pitch_diameter_mm: 72.5,
                contact_angle_deg: 0.0,
            },
            ..FEMTO_LIKE
        };
        for fs in [DEFAULT_FS_HZ, 12_000.0] {
            let healthy = line_features(&motor, 0.0, fs, 21, 4);
            for fault in [Fault::OuterRace, Fault::InnerRace, Fault::Ball] {
                let m = Mounting { fault, ..motor };
                let f = line_features(&m, 0.6, fs, 21, 5);
                eprintln!("{fs} Hz {fault:?}: {f:?} (healthy {healthy:?})");
                let own = match fault {
                    Fault::OuterRace => 1,
                    Fault::InnerRace => 2,
                    Fault::Ball => 3,
                };
                assert!(
                    f[0] > healthy[0] + 0.3,
                    "{fault:?} at {fs} Hz: kurtosis {} vs healthy {}",
                    f[0],
                    healthy[0]
                );
                assert!(
                    f[own] > healthy[own] + 1.0,
                    "{fault:?} at {fs} Hz: its line {f:?} vs healthy {healthy:?}"
                );
                for other in 1..4 {
                    assert!(other == own || f[own] > f[other], "{fault:?} at {fs} Hz: {f:?}");
                }
            }
        }
    }

    /// Median kurtosis and BPFO, BPFI, BSF prominences over `bursts` bursts.
    fn line_features(m: &Mounting, h: f64, fs: f64, bursts: usize, seed: u64) -> [f64; 4] {
        medians(m, h, fs, bursts, seed, |s| {
            [s.moments.kurtosis, s.bpfo.prominence, s.bpfi.prominence, s.bsf.prominence]
        })
    }

    /// The targets are FEMTO's medians (models/data/femto-features.csv, `models/femto.sh`): first
    /// half of life — RMS 0.36 g, velocity 1.3 mm/s, kurtosis 3.3, crest 4.2, resonance SK 0.9,
    /// BPFO prominence 2.5; last tenth — RMS 2.5× the baseline, kurtosis 6.2, crest 5.9, SK 4.2,
    /// prominence 3.0 (its 10–90 % ranges are wide: kurtosis 3.9–15.7, RMS 0.9–5.4×).
    #[test]
    fn healthy_and_late_life_bursts_look_like_femtos() {
        let healthy = features(&FEMTO_LIKE, 0.0, 41, 1);
        let [rms, velocity, kurtosis, crest, sk, prominence] = healthy;
        eprintln!("healthy {healthy:?}");
        assert!((0.30..0.42).contains(&rms), "healthy RMS {rms} g");
        assert!((0.9..1.8).contains(&velocity), "healthy velocity {velocity} mm/s");
        assert!((2.8..3.6).contains(&kurtosis), "healthy kurtosis {kurtosis}");
        assert!((3.3..5.0).contains(&crest), "healthy crest {crest}");
        assert!(sk < 1.5, "healthy resonance SK {sk}");
        assert!((1.8..3.2).contains(&prominence), "healthy BPFO prominence {prominence}");
        // The last tenth of a life: h from 0.81 to 1 with the quadratic wear of the simulator.
        let late = features(&FEMTO_LIKE, 0.9, 41, 2);
        let [l_rms, l_velocity, l_kurtosis, l_crest, l_sk, l_prominence] = late;
        eprintln!("late {late:?}");
        assert!((1.8..3.6).contains(&(l_rms / rms)), "late RMS {l_rms} g = {}× healthy", l_rms / rms);
        assert!(l_velocity > velocity, "late velocity {l_velocity} mm/s");
        assert!((4.5..10.0).contains(&l_kurtosis), "late kurtosis {l_kurtosis}");
        assert!((4.8..8.0).contains(&l_crest), "late crest {l_crest}");
        assert!((2.5..12.0).contains(&l_sk), "late resonance SK {l_sk}");
        assert!((prominence + 1.0..9.0).contains(&l_prominence), "late BPFO prominence {l_prominence}");
        // Early wear shows in the envelope's BPFO lines before the level.
        let early = features(&FEMTO_LIKE, 0.15, 41, 3);
        eprintln!("early {early:?}");
        assert!(
            early[0] / rms < 1.4 && early[5] > prominence + 1.0,
            "early wear {early:?} vs healthy {healthy:?}"
        );
    }
}

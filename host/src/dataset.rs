//! Labelled training windows from the simulator's physics (`edgepm dataset`).
//!
//! A fleet of motors runs until its bearing fails (or, for some, until the observation ends
//! without a failure). Every `interval` a window of readings is taken — the same readings the
//! simulator publishes — and its features are computed by `bearing_features::compute`, the code
//! the `bearing-features` plugin runs: training features and serving features cannot drift.
//!
//! Label: `1` when the motor fails within `horizon` after the window's end, else `0`. Motors are
//! assigned to `train` / `validation` / `test` (70 / 15 / 15 %) as whole motors, so no motor
//! appears in two splits.

use crate::sim::{Degradation, Motor, MotorSpec};
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use std::io::Write;

/// What to generate.
#[derive(Debug, Clone)]
pub struct DatasetOptions {
    pub motors: usize,
    /// Fraction of motors whose bearing fails during the observation.
    pub failing_fraction: f64,
    /// Label horizon, hours.
    pub horizon_hours: f64,
    /// Time between two windows of a motor, minutes.
    pub interval_minutes: f64,
    /// Readings per window and seconds between them.
    pub window_readings: usize,
    pub reading_interval_s: f64,
    pub samples: usize,
    /// Observation span of a motor that does not fail, days; failing motors run to failure.
    pub observe_days: f64,
    pub seed: u64,
}

impl Default for DatasetOptions {
    fn default() -> Self {
        DatasetOptions {
            motors: 500,
            failing_fraction: 0.6,
            horizon_hours: 72.0,
            interval_minutes: 60.0,
            window_readings: bearing_features::DEFAULT_WINDOW_SIZE as usize,
            reading_interval_s: 1.0,
            samples: crate::sim::DEFAULT_SAMPLES,
            observe_days: 20.0,
            seed: 7,
        }
    }
}

/// Totals of a generated dataset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DatasetSummary {
    pub windows: u64,
    pub positives: u64,
    pub motors: u64,
    pub failing_motors: u64,
}

/// The split of motor `i`.
pub fn split_of(motor: usize, seed: u64) -> &'static str {
    // A fixed pseudo-random permutation of motors: splits do not depend on generation order.
    let h = (motor as u64 ^ seed.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    match h % 100 {
        0..70 => "train",
        70..85 => "validation",
        _ => "test",
    }
}

/// The features of the window of `readings` readings, `interval_s` apart, that a simulated
/// `motor` ends at `end_s` (its clock, seconds), with `samples` vibration samples per reading —
/// computed by `bearing_features::compute`, the plugin's own code. Timestamps are
/// `start_ms + t × 1000`. `buf` is reused between calls.
pub fn window_features(
    motor: &mut crate::sim::Motor,
    end_s: f64,
    readings: usize,
    interval_s: f64,
    samples: usize,
    start_ms: i64,
    buf: &mut WindowBuffer,
) -> anyhow::Result<()> {
    buf.fill(motor, end_s, readings, interval_s, samples, start_ms);
    let WindowBuffer { timestamps, vibration, temperature, current, features } = buf;
    let channels = [
        bearing_features::Channel {
            name: "vibration",
            samples: vibration,
            samples_per_reading: samples as u32,
        },
        bearing_features::Channel { name: "temperature", samples: temperature, samples_per_reading: 1 },
        bearing_features::Channel { name: "current", samples: current, samples_per_reading: 1 },
    ];
    let window = bearing_features::Window { timestamps_ms: timestamps, channels: &channels };
    bearing_features::compute(&window, features).map_err(anyhow::Error::msg)
}

/// Buffers of [`window_features`]; `features` holds the result, in `FEATURE_NAMES` order.
#[derive(Default)]
pub struct WindowBuffer {
    timestamps: Vec<i64>,
    vibration: Vec<f32>,
    temperature: Vec<f32>,
    current: Vec<f32>,
    pub features: Vec<f32>,
}

impl WindowBuffer {
    /// Takes the `readings` readings, `interval_s` apart, of the window a simulated `motor` ends
    /// at `end_s` (its clock, seconds), `samples` vibration samples each, stamped
    /// `start_ms + t × 1000`.
    pub fn fill(
        &mut self,
        motor: &mut crate::sim::Motor,
        end_s: f64,
        readings: usize,
        interval_s: f64,
        samples: usize,
        start_ms: i64,
    ) {
        self.timestamps.clear();
        self.vibration.clear();
        self.temperature.clear();
        self.current.clear();
        let span = readings as f64 * interval_s;
        for k in 0..readings {
            let ts = end_s - span + k as f64 * interval_s;
            let r = motor.reading(ts, samples);
            self.timestamps.push(start_ms + (ts * 1000.0) as i64);
            self.vibration.extend_from_slice(&r.vibration);
            self.temperature.push(r.temperature);
            self.current.push(r.current);
        }
    }

    /// The readings of the last [`WindowBuffer::fill`] as the host would have assembled them
    /// from `motor`'s telemetry (the vibration's sample rate and unit, the asset record the motor
    /// publishes): a window to run through a tenant's real pipeline.
    pub fn window(&self, motor: &crate::sim::MotorSpec, samples: usize) -> crate::types::Window {
        let channel = |name: &str, samples: &[f32], per: usize| {
            crate::types::Channel::new(name, samples.to_vec(), per as u32)
        };
        let (fs_hz, unit) = motor.sensor.describe();
        let vibration = crate::types::Channel {
            sample_rate_hz: Some(fs_hz),
            unit: Some(unit.to_string()),
            ..channel("vibration", &self.vibration, samples)
        };
        crate::types::Window {
            tenant: motor.tenant.clone(),
            device: motor.device.clone(),
            start_ms: self.timestamps.first().copied().unwrap_or(0),
            end_ms: self.timestamps.last().copied().unwrap_or(0),
            timestamps_ms: self.timestamps.clone(),
            channels: vec![
                vibration,
                channel("temperature", &self.temperature, 1),
                channel("current", &self.current, 1),
            ],
            asset: motor.asset(),
        }
    }
}

/// Writes the CSV header and one row per window to `out`; `progress` is called after each motor
/// with (motors done, windows so far).
pub fn generate(
    opts: &DatasetOptions,
    out: &mut impl Write,
    mut progress: impl FnMut(usize, u64),
) -> anyhow::Result<DatasetSummary> {
    let mut rng = SmallRng::seed_from_u64(opts.seed);
    let fleet = crate::sim::fleet("dataset", opts.motors, 0, 0.0, 1.0, opts.seed);
    write!(out, "motor,split,t_hours,time_to_failure_hours,health,label")?;
    for name in bearing_features::FEATURE_NAMES {
        write!(out, ",{name}")?;
    }
    writeln!(out)?;
    let mut summary = DatasetSummary { motors: opts.motors as u64, ..Default::default() };
    let day = 86_400.0;
    let mut buf = WindowBuffer::default();
    for (i, base) in fleet.into_iter().enumerate() {
        let fails = rng.random::<f64>() < opts.failing_fraction;
        // Lives of 8–40 days; the defect becomes detectable after 40–80 % of the life.
        let life = (8.0 + 32.0 * rng.random::<f64>()) * day;
        let degradation =
            fails.then(|| Degradation { onset_s: life * (0.4 + 0.4 * rng.random::<f64>()), failure_s: life });
        let end_s = if fails { life } else { opts.observe_days * day };
        summary.failing_motors += fails as u64;
        let spec =
            MotorSpec { device: format!("M{i:05}"), degradation, seed: base.spec.seed ^ 0xDA7A, ..base.spec };
        let mut motor = Motor::new(spec);
        let split = split_of(i, opts.seed);
        let step = opts.interval_minutes * 60.0;
        let mut t = step;
        while t <= end_s {
            window_features(
                &mut motor,
                t,
                opts.window_readings,
                opts.reading_interval_s,
                opts.samples,
                0,
                &mut buf,
            )?;
            let ttf = motor.time_to_failure(t);
            let label = ttf.is_some_and(|s| s <= opts.horizon_hours * 3600.0);
            write!(
                out,
                "{},{split},{:.3},{},{:.4},{}",
                motor.spec.device,
                t / 3600.0,
                ttf.map(|s| format!("{:.3}", s / 3600.0)).unwrap_or_default(),
                motor.health(t),
                label as u8
            )?;
            for v in &buf.features {
                write!(out, ",{v}")?;
            }
            writeln!(out)?;
            summary.windows += 1;
            summary.positives += label as u64;
            t += step;
        }
        progress(i + 1, summary.windows);
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_labelled_by_horizon_and_split_by_motor() {
        let opts = DatasetOptions {
            motors: 6,
            failing_fraction: 1.0,
            interval_minutes: 240.0,
            observe_days: 2.0,
            ..Default::default()
        };
        let mut out = Vec::new();
        let s = generate(&opts, &mut out, |_, _| {}).expect("dataset");
        let text = String::from_utf8(out).expect("utf-8");
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().expect("header").split(',').collect();
        assert_eq!(header.len(), 6 + 13);
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert_eq!(rows.len() as u64, s.windows);
        for r in &rows {
            let ttf: f64 = r[3].parse().expect("every motor fails here");
            assert_eq!(r[5] == "1", ttf <= 72.0, "{r:?}");
            assert!(r[6..].iter().all(|v| v.parse::<f64>().is_ok_and(f64::is_finite)), "{r:?}");
        }
        assert!(s.positives > 0 && s.positives < s.windows);
        // A motor is in exactly one split.
        let mut seen = std::collections::HashMap::new();
        for r in &rows {
            assert_eq!(*seen.entry(r[0]).or_insert(r[1]), r[1]);
        }
    }
}

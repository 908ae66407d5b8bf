//! Simulated motors with a bearing that wears out, publishing telemetry.
//!
//! The physics is deliberately simple but has the right signatures, so features, models and
//! alerts behave as they would on a real outer-race defect:
//! - **vibration** (velocity, mm/s, bursts sampled at [`SAMPLE_RATE_HZ`]): running-speed (1×) and
//!   2× components, broadband noise, and — once the defect starts — impacts at the outer-race
//!   fault frequency (BPFO ≈ 3.57 × shaft speed) ringing a structural resonance at ~900 Hz. Early
//!   on the impacts raise the kurtosis; as the defect grows the RMS rises and the energy moves
//!   into the resonance band;
//! - **temperature** (°C): load heating plus friction heating growing with the defect's square;
//! - **current** (A): nominal load current, rising with the extra friction.
//!
//! A motor's health `h` goes from 0 (healthy) to 1 (failed): 0 before the defect's onset, then
//! `((t − onset) / (failure − onset))²`. The same generator feeds `edgepm simulate`, the demo and
//! the training-data generator, so live data and training data come from the same physics.
//!
//! That is the **velocity** sensor of the canonical payload (`bearing-features`, `bearing-xgb`).
//! A motor can instead carry an **accelerometer** ([`Sensor::Accelerometer`], [`accelerometer`]):
//! bursts in g at a configurable sample rate, shaped after the FEMTO/PRONOSTIA bearings, the
//! impacts at the BPFO of the bearing in its asset record — what `bearing-spectrum` and the tenant
//! `vibration` (and the demo) analyse. Temperature and current are the same for both.

use bearing_features::spectrum::Geometry;
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use rand_distr::{Distribution as _, Normal};
use std::f64::consts::TAU;

pub mod accelerometer;

/// Vibration sampling rate of a burst.
pub const SAMPLE_RATE_HZ: f64 = 2560.0;
/// Samples per burst, as in the canonical payload.
pub const DEFAULT_SAMPLES: usize = 64;
/// Ball-pass frequency of the outer race, in multiples of the shaft speed (a 6205-class bearing).
pub const BPFO_ORDER: f64 = 3.57;
/// Structural resonance excited by the impacts.
const RESONANCE_HZ: f64 = 900.0;
/// Decay time of one impact's ringing.
const RING_DECAY_S: f64 = 0.0015;
/// Peak velocity of an impact at `h = 1`, mm/s.
const IMPACT_PEAK: f64 = 25.0;

/// When a motor's bearing degrades (seconds since the start of the simulation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Degradation {
    pub onset_s: f64,
    pub failure_s: f64,
}

/// One motor: identity, asset metadata and physics parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct MotorSpec {
    pub tenant: String,
    pub device: String,
    /// Registry metadata: model, install date, site, position, latitude and longitude.
    pub asset: Vec<(String, String)>,
    pub shaft_hz: f64,
    /// Peak 1× velocity of the healthy motor, mm/s.
    pub imbalance: f64,
    /// Broadband noise of the healthy motor (standard deviation), mm/s.
    pub noise: f64,
    /// Healthy operating temperature, °C.
    pub temperature: f64,
    /// Healthy load current, A.
    pub current: f64,
    pub degradation: Option<Degradation>,
    pub seed: u64,
    pub sensor: Sensor,
    /// The bearing, the accelerometer's mounting gain and the structural resonance (used by
    /// [`Sensor::Accelerometer`]; the bearing is also in the asset record of such a motor).
    pub mounting: accelerometer::Mounting,
}

/// What a motor's vibration sensor measures and how it publishes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sensor {
    /// Velocity in mm/s at [`SAMPLE_RATE_HZ`], as a bare array (the canonical payload).
    Velocity,
    /// Acceleration in g at `fs_hz`, as a burst object (`fs_hz`, `unit`, base64 `i16le` of
    /// milli-g), the bearing's geometry and shaft speed in the asset record.
    Accelerometer { fs_hz: f64 },
}

impl Sensor {
    /// An accelerometer at FEMTO's 25.6 kHz.
    pub const ACCELEROMETER: Sensor = Sensor::Accelerometer { fs_hz: accelerometer::DEFAULT_FS_HZ };

    /// Samples per burst when none is asked for: 64 (the canonical payload) or 4,096.
    pub fn default_samples(&self) -> usize {
        match self {
            Sensor::Velocity => DEFAULT_SAMPLES,
            Sensor::Accelerometer { .. } => accelerometer::DEFAULT_SAMPLES,
        }
    }

    /// Sample rate and unit of the vibration channel.
    pub fn describe(&self) -> (f64, &'static str) {
        match self {
            Sensor::Velocity => (SAMPLE_RATE_HZ, "mm/s"),
            Sensor::Accelerometer { fs_hz } => (*fs_hz, "g"),
        }
    }
}

impl MotorSpec {
    /// The asset record the motor publishes: [`MotorSpec::asset`], and for an accelerometer the
    /// bearing's geometry and the shaft speed, so the host finds its defect frequencies.
    pub fn asset(&self) -> Vec<(String, String)> {
        let mut asset = self.asset.clone();
        if let Sensor::Accelerometer { .. } = self.sensor {
            let b = &self.mounting.bearing;
            for (k, v) in [
                ("balls", b.balls),
                ("ball_diameter_mm", b.ball_diameter_mm),
                ("pitch_diameter_mm", b.pitch_diameter_mm),
                ("contact_angle_deg", b.contact_angle_deg),
                ("rpm", self.rpm()),
            ] {
                asset.push((k.to_string(), v.to_string()));
            }
        }
        asset
    }

    /// The shaft speed in revolutions per minute, to 0.1.
    pub fn rpm(&self) -> f64 {
        (self.shaft_hz * 600.0).round() / 10.0
    }
}

/// One reading of a simulated motor.
#[derive(Debug, Clone, PartialEq)]
pub struct SimReading {
    pub vibration: Vec<f32>,
    pub temperature: f32,
    pub current: f32,
}

/// A motor producing readings.
pub struct Motor {
    pub spec: MotorSpec,
    rng: SmallRng,
    last_ts_ms: i64,
}

const SITES: [&str; 3] = ["Plant A - Campinas", "Plant B - Joinville", "Plant C - Betim"];
/// Where each site is (latitude, longitude): the motors stand on a grid of lines and pumps
/// around it, about 40 m apart.
const SITE_POSITIONS: [(f64, f64); 3] = [(-22.9056, -47.0608), (-26.3045, -48.8487), (-19.9678, -44.1983)];
/// Motor models: name, shaft speed (Hz), rated current (A) and the drive-end bearing (6309,
/// 6308, 6310: 8 balls; diameters from the catalogues, rounded).
const MODELS: [(&str, f64, f64, Geometry); 3] = [
    ("WEG W22 15 kW 4P", 29.6, 28.0, bearing(8.0, 17.46, 72.5)),
    ("WEG W22 7.5 kW 4P", 29.5, 14.2, bearing(8.0, 15.08, 65.0)),
    ("ABB M3BP 22 kW 4P", 29.7, 40.5, bearing(8.0, 19.05, 80.0)),
];

const fn bearing(balls: f64, ball_diameter_mm: f64, pitch_diameter_mm: f64) -> Geometry {
    Geometry { balls, ball_diameter_mm, pitch_diameter_mm, contact_angle_deg: 0.0 }
}

impl Motor {
    pub fn new(spec: MotorSpec) -> Motor {
        let rng = SmallRng::seed_from_u64(spec.seed);
        Motor { spec, rng, last_ts_ms: i64::MIN }
    }

    /// Health at `t_s`: 0 healthy … 1 failed.
    pub fn health(&self, t_s: f64) -> f64 {
        match self.spec.degradation {
            Some(d) if t_s > d.onset_s => {
                let x = ((t_s - d.onset_s) / (d.failure_s - d.onset_s).max(1e-9)).clamp(0.0, 1.0);
                x * x
            }
            _ => 0.0,
        }
    }

    /// Seconds left until failure at `t_s`, for a degrading motor (negative after it).
    pub fn time_to_failure(&self, t_s: f64) -> Option<f64> {
        self.spec.degradation.map(|d| d.failure_s - t_s)
    }

    /// The reading at `t_s` with a burst of `samples` vibration samples (of the motor's sensor).
    pub fn reading(&mut self, t_s: f64, samples: usize) -> SimReading {
        let h = self.health(t_s);
        let s = &self.spec;
        let f1 = s.shaft_hz * (1.0 - 0.002 * h); // a little more slip under friction
        if let Sensor::Accelerometer { fs_hz } = s.sensor {
            let vibration = accelerometer::burst(&mut self.rng, &s.mounting, f1, h, fs_hz, samples);
            return self.thermal(h, vibration);
        }
        let noise =
            Normal::new(0.0, s.noise.abs() * (1.0 + 1.5 * h)).expect("a finite, non-negative deviation");
        let phase = self.rng.random::<f64>() * TAU;
        let bpfo_period = 1.0 / (BPFO_ORDER * f1);
        // Time since the previous impact at the burst's first sample.
        let mut since_impact = self.rng.random::<f64>() * bpfo_period;
        let impact = IMPACT_PEAK * h.powf(1.2);
        let mut vibration = Vec::with_capacity(samples);
        for n in 0..samples {
            let t = n as f64 / SAMPLE_RATE_HZ;
            let mut v = s.imbalance * (1.0 + 0.3 * h) * (TAU * f1 * t + phase).sin()
                + 0.2 * s.imbalance * (TAU * 2.0 * f1 * t + 2.0 * phase).sin()
                + noise.sample(&mut self.rng);
            if impact > 0.0 {
                v +=
                    impact * (-since_impact / RING_DECAY_S).exp() * (TAU * RESONANCE_HZ * since_impact).sin();
            }
            vibration.push(v as f32);
            since_impact += 1.0 / SAMPLE_RATE_HZ;
            if since_impact >= bpfo_period {
                since_impact -= bpfo_period;
            }
        }
        self.thermal(h, vibration)
    }

    /// The reading with temperature and current at health `h`.
    fn thermal(&mut self, h: f64, vibration: Vec<f32>) -> SimReading {
        let (temperature, current) = (self.spec.temperature, self.spec.current);
        let temperature = temperature + 20.0 * h * h + 0.2 * self.gauss();
        let current = current * (1.0 + 0.08 * h) + 0.005 * current * self.gauss();
        SimReading { vibration, temperature: temperature as f32, current: current as f32 }
    }

    fn gauss(&mut self) -> f64 {
        rand_distr::StandardNormal.sample(&mut self.rng)
    }

    /// The canonical JSON payload of the reading at `t_s`, stamped `ts_ms` (made strictly
    /// increasing per motor, so two readings never share a timestamp).
    pub fn payload(&mut self, ts_ms: i64, t_s: f64, samples: usize) -> (i64, Vec<u8>) {
        let ts = ts_ms.max(self.last_ts_ms.saturating_add(1));
        self.last_ts_ms = ts;
        let r = self.reading(t_s, samples);
        let vibration = match self.spec.sensor {
            Sensor::Velocity => {
                let rounded: Vec<f64> = r.vibration.iter().map(|&x| (x as f64 * 1e4).round() / 1e4).collect();
                serde_json::json!(rounded)
            }
            Sensor::Accelerometer { fs_hz } => {
                use base64::Engine as _;
                let bytes: Vec<u8> = r
                    .vibration
                    .iter()
                    .flat_map(|&g| {
                        let q = (g as f64 / accelerometer::SCALE_G)
                            .round()
                            .clamp(i16::MIN as f64, i16::MAX as f64);
                        (q as i16).to_le_bytes()
                    })
                    .collect();
                serde_json::json!({
                    "fs_hz": fs_hz,
                    "unit": "g",
                    "encoding": "i16le",
                    "scale": accelerometer::SCALE_G,
                    "data": base64::engine::general_purpose::STANDARD.encode(bytes),
                })
            }
        };
        let body = serde_json::json!({
            "ts": ts,
            "vibration": vibration,
            "temperature": (r.temperature as f64 * 100.0).round() / 100.0,
            "current": (r.current as f64 * 100.0).round() / 100.0,
        });
        (ts, body.to_string().into_bytes())
    }

    /// Telemetry topic of the motor.
    pub fn topic(&self) -> String {
        crate::topics::device(&self.spec.tenant, &self.spec.device, crate::topics::TELEMETRY)
    }

    /// Asset topic and retained payload (a JSON object of strings).
    pub fn asset_message(&self) -> (String, Vec<u8>) {
        let map: serde_json::Map<String, serde_json::Value> =
            self.spec.asset().into_iter().map(|(k, v)| (k, v.into())).collect();
        (
            crate::topics::device(&self.spec.tenant, &self.spec.device, crate::topics::ASSET),
            serde_json::Value::Object(map).to_string().into_bytes(),
        )
    }
}

/// Writes `motor`'s life from 0 to `end_s` (its clock) as a recording of bursts — a folder of CSV
/// snapshots, one every `period_s`, `samples` samples each, with a `recording.toml` giving the
/// sample rate, shaft speed, period and the motor's asset record (its bearing) — which `edgepm
/// replay --recording` and `edgepm spectrum` read like a real one. Returns the snapshots written.
pub fn write_recording(
    motor: &mut Motor,
    dir: &std::path::Path,
    end_s: f64,
    period_s: f64,
    samples: usize,
) -> anyhow::Result<usize> {
    use anyhow::Context as _;
    use std::io::Write as _;
    anyhow::ensure!(period_s > 0.0 && end_s >= 0.0, "a recording needs a positive period");
    let (fs_hz, unit) = motor.spec.sensor.describe();
    let column = match motor.spec.sensor {
        Sensor::Velocity => "vibration_mm_s",
        Sensor::Accelerometer { .. } => "vibration_g",
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut description = toml::Table::new();
    description.insert("fs_hz".into(), fs_hz.into());
    description.insert("rpm".into(), motor.spec.rpm().into());
    description.insert("period_s".into(), period_s.into());
    let asset: toml::Table = motor.spec.asset().into_iter().map(|(k, v)| (k, v.into())).collect();
    description.insert("asset".into(), asset.into());
    std::fs::write(
        dir.join(crate::recordings::CSV_DESCRIPTION),
        format!(
            "# A simulated {unit} recording of {} ({}), written by edgepm\n{}",
            motor.spec.device,
            match motor.spec.degradation {
                Some(d) => format!(
                    "{} bearing defect from {:.0} s, failure at {:.0} s",
                    clap::ValueEnum::to_possible_value(&motor.spec.mounting.fault)
                        .expect("every fault has a name")
                        .get_name(),
                    d.onset_s,
                    d.failure_s
                ),
                None => "healthy".into(),
            },
            toml::to_string(&description)?
        ),
    )?;
    let snapshots = (end_s / period_s).floor() as usize + 1;
    let width = snapshots.to_string().len().max(5);
    for i in 0..snapshots {
        let r = motor.reading(i as f64 * period_s, samples);
        let path = dir.join(format!("snapshot_{i:0width$}.csv"));
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        );
        writeln!(out, "{column}")?;
        for v in &r.vibration {
            writeln!(out, "{v}")?;
        }
        out.flush()?;
    }
    Ok(snapshots)
}

/// A fleet: `motors` motors named `MTR-001`…, the first `failing` of them degrading between
/// `onset_s` and `failure_s` (spread a little per motor), all of tenant `tenant`.
pub fn fleet(
    tenant: &str,
    motors: usize,
    failing: usize,
    onset_s: f64,
    failure_s: f64,
    seed: u64,
) -> Vec<Motor> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..motors)
        .map(|i| {
            let (model, shaft_hz, current, bearing) = MODELS[i % MODELS.len()];
            let spread = 1.0 + 0.1 * (rng.random::<f64>() - 0.5);
            let degradation = (i < failing)
                .then_some(Degradation { onset_s: onset_s * spread, failure_s: failure_s * spread });
            let year = 2015 + (i % 9);
            let asset = vec![
                ("model".to_string(), model.to_string()),
                ("install_date".to_string(), format!("{year}-{:02}-{:02}", 1 + i % 12, 1 + (i * 7) % 28)),
                ("site".to_string(), SITES[i % SITES.len()].to_string()),
                ("position".to_string(), format!("Line {} / Pump P-{}", 1 + i / 10, 1 + i % 10)),
                (
                    "lat".to_string(),
                    format!("{:.6}", SITE_POSITIONS[i % SITES.len()].0 + 0.0004 * (i / 10) as f64),
                ),
                (
                    "lon".to_string(),
                    format!("{:.6}", SITE_POSITIONS[i % SITES.len()].1 + 0.0004 * (i % 10) as f64),
                ),
            ];
            Motor::new(MotorSpec {
                tenant: tenant.to_string(),
                device: format!("MTR-{:03}", i + 1),
                asset,
                shaft_hz: shaft_hz * (1.0 + 0.01 * (rng.random::<f64>() - 0.5)),
                imbalance: 1.4 * (0.85 + 0.3 * rng.random::<f64>()),
                noise: 0.25,
                temperature: 58.0 + 6.0 * rng.random::<f64>(),
                current: current * (0.95 + 0.1 * rng.random::<f64>()),
                degradation,
                seed: seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
                sensor: Sensor::Velocity,
                mounting: {
                    // A generator of its own, so the velocity motors stay what they were.
                    let mut rng = SmallRng::seed_from_u64(seed ^ 0xACCE_1000 ^ i as u64);
                    accelerometer::Mounting {
                        bearing,
                        fault: accelerometer::Fault::OuterRace,
                        // Healthy RMS 0.28–0.44 g across the fleet.
                        gain: 0.8 + 0.45 * rng.random::<f64>(),
                        resonance_hz: 3_000.0 + 6_000.0 * rng.random::<f64>(),
                    }
                },
            })
        })
        .collect()
}

/// Options of [`publish`].
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Readings per second per motor.
    pub rate: f64,
    /// Stop after this long (`None`: until stopped).
    pub duration: Option<std::time::Duration>,
    pub samples: usize,
    /// Publish the asset metadata retained (default), so a host that starts later gets it.
    pub retain_assets: bool,
    /// Motor `i` of `n` is switched on `i/n × stagger` after the start and then publishes on its
    /// own clock, as devices switched on at different moments do. A stagger shorter than one
    /// reading period counts as one period, so readings are always spread evenly in time. With
    /// 0, every motor's windows complete within the same period, every hop (the worst case for
    /// latency); with `hop / rate` the fleet's windows are spread evenly over time.
    pub stagger: std::time::Duration,
    /// Also subscribe to the predictions and measure publish → prediction latency.
    pub measure_latency: bool,
}

impl PublishOptions {
    /// Options for `rate` readings per second per motor, with every other default.
    pub fn new(rate: f64) -> PublishOptions {
        PublishOptions {
            rate,
            duration: None,
            samples: DEFAULT_SAMPLES,
            retain_assets: true,
            stagger: std::time::Duration::ZERO,
            measure_latency: false,
        }
    }
}

/// When each motor publishes: motor `i` of `n` first at `i/n × max(stagger, period)`, then every
/// `period`. [`Schedule::next_due`] hands out the motors in the order of their due times.
#[derive(Debug)]
pub struct Schedule {
    period: std::time::Duration,
    due: std::collections::BinaryHeap<std::cmp::Reverse<(std::time::Duration, usize)>>,
}

impl Schedule {
    pub fn new(motors: usize, rate: f64, stagger: std::time::Duration) -> Schedule {
        let period = std::time::Duration::from_secs_f64(1.0 / rate.max(1e-3));
        let spread = stagger.max(period);
        let n = motors.max(1);
        let due = (0..motors).map(|i| std::cmp::Reverse((spread.mul_f64(i as f64 / n as f64), i))).collect();
        Schedule { period, due }
    }

    /// The next reading due at or before `now` (time since the start), if any.
    pub fn next_due(&mut self, now: std::time::Duration) -> Option<usize> {
        let std::cmp::Reverse((at, motor)) = *self.due.peek()?;
        if at > now {
            return None;
        }
        self.due.pop();
        self.due.push(std::cmp::Reverse((at + self.period, motor)));
        Some(motor)
    }
}

/// What [`publish`] did.
#[derive(Debug, Clone, Default)]
pub struct PublishReport {
    /// Readings the broker acknowledged.
    pub acked: u64,
    /// Publish → prediction latency, with [`PublishOptions::measure_latency`].
    pub latency: Option<LatencyReport>,
}

/// Publish → prediction latency, measured in the simulator's process: from the moment a reading
/// was handed to the MQTT client to the moment the prediction of the window it completed
/// arrived (same clock, microsecond resolution).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LatencyReport {
    /// Predictions received whose window-completing reading this run published.
    pub predictions: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencyReport {
    fn from_samples(mut ms: Vec<f64>) -> LatencyReport {
        ms.sort_by(f64::total_cmp);
        let q = |p: f64| {
            if ms.is_empty() {
                return 0.0;
            }
            let i = ((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1;
            (ms[i] * 1000.0).round() / 1000.0
        };
        LatencyReport {
            predictions: ms.len(),
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: q(1.0),
        }
    }
}

/// The predictions a latency probe received: (device, window end, when).
type Received = Vec<(String, i64, std::time::Instant)>;

/// A second connection subscribed to the tenant's predictions; returns once the subscription is
/// acknowledged. The task collects until aborted or the returned sender says stop.
async fn probe(
    url: &str,
    client_id: &str,
    tenant: &str,
) -> anyhow::Result<(tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<Received>)> {
    use rumqttc::{Event, Packet, QoS};
    #[derive(serde::Deserialize)]
    struct Prediction {
        device: String,
        timestamp: String,
    }
    let config = crate::ingest::mqtt::MqttConfig::new(url);
    let (client, mut eventloop) = crate::ingest::mqtt::client(config.options(client_id, true)?, 16);
    // QoS 0 to the probe: the broker's acknowledgement traffic stays out of the measurement.
    let filter = crate::topics::tenant_filter(tenant, crate::topics::PREDICTION);
    client.subscribe(filter.clone(), QoS::AtMostOnce).await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => anyhow::bail!("latency probe: {e}"),
            Err(_) => anyhow::bail!("latency probe: no subscription acknowledgement within 10 s"),
        }
    }
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let mut got = Received::new();
        loop {
            let event = tokio::select! {
                e = eventloop.poll() => e,
                _ = stop.wait_for(|s| *s) => break,
            };
            match event {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let at = std::time::Instant::now();
                    let Ok(pred) = serde_json::from_slice::<Prediction>(&p.payload) else { continue };
                    let Ok(end) = crate::clock::parse_rfc3339(&pred.timestamp) else { continue };
                    got.push((pred.device, end, at));
                }
                // A new connection (clean session) after an error: subscribe again.
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe(filter.clone(), QoS::AtMostOnce);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
        got
    });
    Ok((stop_tx, task))
}

/// Publishes readings of every motor at `rate` per second each (QoS 1) until the duration is over
/// or `stop` turns true; the asset metadata is published first (retained).
pub async fn publish(
    url: &str,
    client_id: &str,
    motors: &mut [Motor],
    options: &PublishOptions,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<PublishReport> {
    use rumqttc::{Event, Packet, QoS};
    let config = crate::ingest::mqtt::MqttConfig::new(url);
    let (client, mut eventloop) = crate::ingest::mqtt::client(config.options(client_id, true)?, 10_000);
    let (acked_tx, acked_rx) = tokio::sync::watch::channel(0u64);
    let driver = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked_tx.send_modify(|n| *n += 1),
                // Our own disconnect at the end: nothing to retry.
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "Simulator connection lost; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
    });
    let probe = match (options.measure_latency, motors.first()) {
        (true, Some(m)) => Some(probe(url, &format!("{client_id}-probe"), &m.spec.tenant).await?),
        _ => None,
    };
    let mut sent = 0u64;
    for m in motors.iter() {
        let (topic, payload) = m.asset_message();
        client.publish(topic, QoS::AtLeastOnce, options.retain_assets, payload).await?;
        sent += 1;
    }
    // Every millisecond, the readings due by then are published.
    let mut schedule = Schedule::new(motors.len(), options.rate, options.stagger);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = std::time::Instant::now();
    let mut readings = 0u64;
    // (motor, ts) → when it was handed to the client, for the latency probe.
    let mut published: Vec<(usize, i64, std::time::Instant)> = Vec::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let elapsed = start.elapsed();
        if options.duration.is_some_and(|d| elapsed >= d) {
            break;
        }
        while let Some(index) = schedule.next_due(elapsed) {
            let m = &mut motors[index];
            let (ts, payload) = m.payload(crate::clock::now_ms(), elapsed.as_secs_f64(), options.samples);
            client.publish(m.topic(), QoS::AtLeastOnce, false, payload).await?;
            if probe.is_some() {
                published.push((index, ts, std::time::Instant::now()));
            }
            sent += 1;
            readings += 1;
        }
    }
    // Wait (bounded) for the broker to acknowledge everything published.
    let mut acked = acked_rx.clone();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), acked.wait_for(|n| *n >= sent)).await;
    let acked_readings = (*acked_rx.borrow()).saturating_sub(motors.len() as u64).min(readings);
    let latency = match probe {
        Some((stop_probe, task)) => {
            // The last readings' predictions are still on their way.
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            let _ = stop_probe.send(true);
            let received = task.await?;
            let index: std::collections::HashMap<&str, usize> =
                motors.iter().enumerate().map(|(i, m)| (m.spec.device.as_str(), i)).collect();
            let sent_at: std::collections::HashMap<(usize, i64), std::time::Instant> =
                published.into_iter().map(|(i, ts, at)| ((i, ts), at)).collect();
            let ms = received
                .iter()
                .filter_map(|(device, end, at)| {
                    let sent = sent_at.get(&(*index.get(device.as_str())?, *end))?;
                    Some(at.saturating_duration_since(*sent).as_secs_f64() * 1000.0)
                })
                .collect();
            Some(LatencyReport::from_samples(ms))
        }
        None => None,
    };
    let _ = client.disconnect().await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    driver.abort();
    Ok(PublishReport { acked: acked_readings, latency })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    fn kurtosis(x: &[f32]) -> f64 {
        let n = x.len() as f64;
        let m = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let m2 = x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n;
        let m4 = x.iter().map(|&v| (v as f64 - m).powi(4)).sum::<f64>() / n;
        m4 / (m2 * m2)
    }

    #[test]
    fn a_degrading_bearing_shows_rising_rms_kurtosis_and_temperature() {
        let mut motors = fleet("t", 2, 1, 10.0, 100.0, 7);
        let window = |m: &mut Motor, t: f64| {
            let rs: Vec<SimReading> = (0..32).map(|i| m.reading(t + i as f64 * 0.1, 64)).collect();
            let v: Vec<f32> = rs.iter().flat_map(|r| r.vibration.clone()).collect();
            (rms(&v), kurtosis(&v), rs.iter().map(|r| r.temperature as f64).sum::<f64>() / 32.0)
        };
        let (healthy_rms, healthy_k, healthy_t) = window(&mut motors[0], 5.0);
        let (early_rms, early_k, _) = window(&mut motors[0], 50.0);
        let (late_rms, _, late_t) = window(&mut motors[0], 99.0);
        let (other_rms, _, _) = window(&mut motors[1], 99.0);
        assert!((0.8..1.6).contains(&healthy_rms), "healthy RMS {healthy_rms}");
        assert!((1.4..3.2).contains(&healthy_k), "healthy kurtosis {healthy_k} (sine-dominated velocity)");
        eprintln!("rms {healthy_rms} {early_rms} {late_rms}; kurtosis {healthy_k} {early_k}");
        assert!(early_k > healthy_k + 1.0, "impacts raise kurtosis early: {early_k} vs {healthy_k}");
        assert!(
            late_rms > 2.5 * healthy_rms && late_rms > early_rms,
            "RMS {healthy_rms} → {early_rms} → {late_rms}"
        );
        assert!(late_t > healthy_t + 15.0, "temperature {healthy_t} → {late_t}");
        assert!((0.8..1.6).contains(&other_rms), "a healthy motor stays healthy: {other_rms}");
    }

    #[test]
    fn timestamps_are_strictly_increasing_and_payloads_canonical() {
        let mut m = fleet("acme", 1, 0, 0.0, 1.0, 1).remove(0);
        let (a, _) = m.payload(1000, 0.0, 64);
        let (b, payload) = m.payload(1000, 0.0, 64);
        assert_eq!((a, b), (1000, 1001));
        let reading = crate::ingest::decode(&m.topic(), &payload, &crate::ingest::Limits::default(), 1001)
            .expect("the simulator publishes what the host accepts");
        assert_eq!(reading.channels.len(), 3);
        assert_eq!(m.topic(), "edgepm/acme/MTR-001/telemetry");
    }

    #[test]
    fn an_accelerometer_publishes_described_bursts_and_its_bearing() {
        let mut m = fleet("acme", 1, 0, 0.0, 1.0, 1).remove(0);
        m.spec.sensor = Sensor::ACCELEROMETER;
        let (ts, payload) = m.payload(1000, 0.0, 4096);
        assert!(payload.len() < 12_000, "{} bytes", payload.len());
        let reading = crate::ingest::decode(&m.topic(), &payload, &crate::ingest::Limits::default(), ts)
            .expect("the host accepts the burst object");
        let v = reading.channels.iter().find(|(name, _)| name == "vibration").expect("vibration");
        let crate::ingest::Samples::Burst(samples) = &v.1 else { panic!("a burst") };
        assert_eq!(samples.len(), 4096);
        let rms = (samples.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / 4096.0).sqrt();
        assert!((0.2..0.6).contains(&rms), "healthy RMS {rms} g");
        let d = reading.described.iter().find(|d| d.channel == "vibration").expect("described");
        assert_eq!((d.fs_hz, d.unit.as_deref()), (Some(25_600.0), Some("g")));
        // The asset record names the bearing: the host finds its defect frequencies.
        let asset = m.spec.asset();
        let (geometry, shaft_hz) =
            bearing_features::spectrum::from_asset(&asset).expect("a geometry").expect("a valid geometry");
        assert_eq!(geometry.balls, 8.0);
        assert!((shaft_hz - m.spec.shaft_hz).abs() < 0.01, "rpm to 0.1: {shaft_hz} Hz");
        let (_, message) = m.asset_message();
        assert!(String::from_utf8_lossy(&message).contains("\"pitch_diameter_mm\":\"72.5\""));
    }

    /// Window-completion times (32nd reading, then every 8th) of every motor over `secs`.
    fn window_times(motors: usize, rate: f64, stagger: f64, secs: f64) -> Vec<f64> {
        let mut s = Schedule::new(motors, rate, std::time::Duration::from_secs_f64(stagger));
        let mut counts = vec![0usize; motors];
        let mut out = Vec::new();
        let mut t = std::time::Duration::ZERO;
        while t.as_secs_f64() < secs {
            while let Some(i) = s.next_due(t) {
                counts[i] += 1;
                if counts[i] >= 32 && (counts[i] - 32).is_multiple_of(8) {
                    out.push(t.as_secs_f64());
                }
            }
            t += std::time::Duration::from_millis(1);
        }
        out
    }

    /// Most windows completing within one `bucket` of seconds after `from`.
    fn burst(times: &[f64], from: f64, bucket: f64) -> usize {
        let mut counts = std::collections::HashMap::new();
        for t in times.iter().filter(|&&t| t >= from) {
            *counts.entry(((t - from) / bucket) as i64).or_insert(0usize) += 1;
        }
        counts.into_values().max().unwrap_or(0)
    }

    #[test]
    fn a_staggered_fleet_completes_its_windows_evenly_over_time() {
        // 1,000 motors at 10 readings/s, window 32 / hop 8: 1,250 windows/s. Switched on over one
        // hop (0.8 s), about 12.5 complete in any 10 ms; an earlier version snapped every motor
        // to one of 8 phases and completed 125 within 12.5 ms every 100 ms.
        let staggered = window_times(1000, 10.0, 0.8, 8.0);
        assert!(staggered.len() > 5000, "{}", staggered.len());
        let most = burst(&staggered, 4.0, 0.01);
        assert!(most <= 16, "{most} windows in one 10 ms");
        // Switched on at once: every motor's windows complete within the same 0.1 s.
        let lockstep = window_times(1000, 10.0, 0.0, 8.0);
        assert!(burst(&lockstep, 4.0, 0.1) >= 1000, "lockstep is the worst case");
        // Readings are spread evenly either way: 10 per millisecond.
        let mut s = Schedule::new(1000, 10.0, std::time::Duration::ZERO);
        let t = std::time::Duration::from_millis(500);
        let mut n = 0;
        while s.next_due(t).is_some() {
            n += 1;
        }
        let mut m = 0;
        while s.next_due(t + std::time::Duration::from_millis(1)).is_some() {
            m += 1;
        }
        assert!(n >= 5000 && (9..=11).contains(&m), "{n} then {m}");
    }

    #[test]
    fn latency_percentiles() {
        let r = LatencyReport::from_samples((1..=1000).map(f64::from).collect());
        assert_eq!((r.predictions, r.p50_ms, r.p99_ms, r.max_ms), (1000, 500.0, 990.0, 1000.0));
        assert_eq!(LatencyReport::from_samples(vec![]).predictions, 0);
    }
}

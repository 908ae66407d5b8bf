//! Recorded vibration bursts, such as the FEMTO/PRONOSTIA run-to-failure set, read for
//! `edgepm spectrum` and `edgepm replay`: a numpy `.npz` file of snapshots ([`load_npz`]) or a
//! folder of CSV files, one per snapshot ([`load_csv_dir`]); [`load`] takes either.
//!
//! The arrays of a recording (`np.savez[_compressed]`):
//! - `t_s`: when each snapshot was taken, seconds (float, one per snapshot);
//! - `fs_hz`: the sample rate (a scalar);
//! - `rpm`: the shaft speed (a scalar, optional);
//! - one 2-D array (snapshots × samples) per axis, named `<axis>_<unit>` with unit `g`, `mg`
//!   (milli-g: converted to g), `ms2` (m/s²) or `mm_s` (mm/s) — FEMTO's `horiz_mg`, `vert_mg`.
//!
//! Integers and floats of any width are accepted. The recording ends at its last snapshot: for
//! a run to failure, the end of life.

use anyhow::{Context as _, bail};
use bearing_features::spectrum::Unit;
use std::io::Read as _;
use std::path::Path;

/// One axis of a recording: a burst per snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub name: String,
    pub unit: Unit,
    pub snapshots: Vec<Vec<f32>>,
}

/// A recording of bursts.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    pub name: String,
    pub fs_hz: f64,
    pub rpm: Option<f64>,
    pub t_s: Vec<f64>,
    pub axes: Vec<Axis>,
    /// Asset attributes of the recorded machine (its bearing's geometry, ...): the `[asset]`
    /// table of a folder's `recording.toml`; a `.npz` carries none.
    pub asset: Vec<(String, String)>,
}

/// Largest array read (a guard against a file that claims billions of elements).
const MAX_ELEMENTS: u64 = 200_000_000;

struct Array {
    shape: Vec<u64>,
    values: Vec<f64>,
}

fn read_array(name: &str, bytes: &[u8]) -> anyhow::Result<Array> {
    use npyz::{DType, TypeChar};
    let npy = npyz::NpyFile::new(bytes).with_context(|| format!("{name}: not a .npy array"))?;
    let shape = npy.shape().to_vec();
    let len: u64 = shape.iter().product();
    anyhow::ensure!(len <= MAX_ELEMENTS, "{name}: {len} elements is more than {MAX_ELEMENTS}");
    let DType::Plain(ty) = npy.dtype() else { bail!("{name}: a structured array, not numbers") };
    let values: Vec<f64> = match (ty.type_char(), ty.size_field()) {
        (TypeChar::Float, 8) => npy.into_vec::<f64>()?,
        (TypeChar::Float, 4) => npy.into_vec::<f32>()?.into_iter().map(f64::from).collect(),
        (TypeChar::Int, 8) => npy.into_vec::<i64>()?.into_iter().map(|v| v as f64).collect(),
        (TypeChar::Int, 4) => npy.into_vec::<i32>()?.into_iter().map(f64::from).collect(),
        (TypeChar::Int, 2) => npy.into_vec::<i16>()?.into_iter().map(f64::from).collect(),
        (TypeChar::Uint, 1) => npy.into_vec::<u8>()?.into_iter().map(f64::from).collect(),
        (c, s) => bail!("{name}: numbers of type {c:?}{s} are not read"),
    };
    Ok(Array { shape, values })
}

/// Reads a recording.
pub fn load_npz(path: &Path) -> anyhow::Result<Recording> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .with_context(|| format!("{}: not a .npz (zip) file", path.display()))?;
    let mut arrays = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i)?;
        let name = entry.name().map(|n| n.trim_end_matches(".npy").to_string()).unwrap_or_default();
        anyhow::ensure!(entry.size() <= 8 * MAX_ELEMENTS + 4096, "{name}: too large");
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes)?;
        arrays.push((name.clone(), read_array(&name, &bytes).with_context(|| path.display().to_string())?));
    }
    let scalar =
        |key: &str| arrays.iter().find(|(n, _)| n == key).and_then(|(_, a)| a.values.first().copied());
    let fs_hz = scalar("fs_hz").ok_or_else(|| anyhow::anyhow!("{}: no fs_hz array", path.display()))?;
    anyhow::ensure!(
        fs_hz > 0.0 && fs_hz.is_finite(),
        "{}: fs_hz {fs_hz} is not a sample rate",
        path.display()
    );
    let t_s = arrays
        .iter()
        .find(|(n, _)| n == "t_s")
        .map(|(_, a)| a.values.clone())
        .ok_or_else(|| anyhow::anyhow!("{}: no t_s array", path.display()))?;
    anyhow::ensure!(t_s.windows(2).all(|w| w[0] < w[1]), "{}: t_s is not increasing", path.display());
    let mut axes = Vec::new();
    for (name, a) in &arrays {
        let Some((axis, unit, scale)) = axis_of(name) else { continue };
        if a.shape.len() != 2 {
            continue;
        }
        let (rows, cols) = (a.shape[0] as usize, a.shape[1] as usize);
        anyhow::ensure!(
            rows == t_s.len(),
            "{}: {name} has {rows} snapshots, t_s {}",
            path.display(),
            t_s.len()
        );
        let snapshots = a
            .values
            .chunks_exact(cols.max(1))
            .map(|row| row.iter().map(|&v| (v * scale) as f32).collect())
            .collect();
        axes.push(Axis { name: axis, unit, snapshots });
    }
    anyhow::ensure!(
        !axes.is_empty(),
        "{}: no axis array (<axis>_g, _mg, _ms2 or _mm_s, snapshots × samples)",
        path.display()
    );
    axes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Recording {
        name: path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        fs_hz,
        rpm: scalar("rpm"),
        t_s,
        axes,
        asset: Vec::new(),
    })
}

/// A recording from `path`: a folder with a `recording.toml` is a folder of CSV snapshots
/// ([`load_csv_dir`]), anything else a `.npz` file ([`load_npz`]).
pub fn load(path: &Path) -> anyhow::Result<Recording> {
    if path.join(CSV_DESCRIPTION).is_file() { load_csv_dir(path) } else { load_npz(path) }
}

/// The file that makes a folder a recording of CSV snapshots.
pub const CSV_DESCRIPTION: &str = "recording.toml";

/// `recording.toml` of a folder of CSV snapshots.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CsvDescription {
    /// Samples per second of every snapshot.
    fs_hz: f64,
    /// Shaft speed.
    rpm: Option<f64>,
    /// Seconds between two snapshots, when the files carry no time.
    period_s: Option<f64>,
    /// Column names of files without a header row (FEMTO's `acc_*.csv`:
    /// `["hour", "minute", "second", "microsecond", "horiz_g", "vert_g"]`).
    columns: Option<Vec<String>>,
    /// The recorded machine's asset record, e.g. its bearing's geometry (strings or numbers).
    #[serde(default)]
    asset: toml::Table,
}

/// Reads a folder of CSV snapshots: every `*.csv` file but those named in the description is
/// one snapshot, in file-name order, one row per sample. Its axis columns are named
/// `<axis>_<unit>` as in a `.npz` (`horiz_g`, `vert_mg`, `x_ms2`, `x_mm_s`); the columns come
/// from a header row, or from `columns` in `recording.toml` for files without one. A snapshot's
/// time is its first row's `t_s` column, or `hour`, `minute`, `second`, `microsecond` (FEMTO's,
/// a day boundary crossed when they go back), or else its index × `period_s`. `recording.toml`
/// gives `fs_hz` and optionally `rpm` and an `[asset]` table (e.g. `balls = 13`).
pub fn load_csv_dir(dir: &Path) -> anyhow::Result<Recording> {
    let at = |what: &str| format!("{}: {what}", dir.display());
    let text = std::fs::read_to_string(dir.join(CSV_DESCRIPTION)).with_context(|| at(CSV_DESCRIPTION))?;
    let d: CsvDescription = toml::from_str(&text).with_context(|| at(CSV_DESCRIPTION))?;
    anyhow::ensure!(
        d.fs_hz > 0.0 && d.fs_hz.is_finite(),
        "{}",
        at(&format!("fs_hz {} is not a sample rate", d.fs_hz))
    );
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .with_context(|| at("reading the folder"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("csv")))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "{}", at("no .csv snapshot"));
    let mut axes: Vec<Axis> = Vec::new();
    let mut t_s = Vec::with_capacity(files.len());
    let mut day = 0.0;
    for (i, file) in files.iter().enumerate() {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(d.columns.is_none())
            .trim(csv::Trim::All)
            .from_path(file)
            .with_context(|| at(&name))?;
        let columns: Vec<String> = match &d.columns {
            Some(c) => c.clone(),
            None => reader.headers().with_context(|| at(&name))?.iter().map(str::to_string).collect(),
        };
        let mut values: Vec<Vec<f64>> = vec![Vec::new(); columns.len()];
        for (row, record) in reader.records().enumerate() {
            let record = record.with_context(|| at(&name))?;
            anyhow::ensure!(
                record.len() == columns.len(),
                "{}",
                at(&format!("{name} row {}: {} values for {} columns", row + 1, record.len(), columns.len()))
            );
            for (c, v) in record.iter().enumerate() {
                let x: f64 = v.parse().map_err(|_| {
                    anyhow::anyhow!("{}", at(&format!("{name} row {}: {v:?} is not a number", row + 1)))
                })?;
                values[c].push(x);
            }
        }
        anyhow::ensure!(
            values.first().is_some_and(|v| !v.is_empty()),
            "{}",
            at(&format!("{name}: no samples"))
        );
        let first = |col: &str| columns.iter().position(|c| c == col).map(|i| values[i][0]);
        let t = if let Some(t) = first("t_s") {
            t
        } else if let (Some(h), Some(m), Some(s), Some(us)) =
            (first("hour"), first("minute"), first("second"), first("microsecond"))
        {
            let of_day = h * 3600.0 + m * 60.0 + s + us * 1e-6;
            if t_s.last().is_some_and(|&last: &f64| of_day + day < last) {
                day += 86_400.0;
            }
            of_day + day
        } else {
            let period = d.period_s.ok_or_else(|| {
                anyhow::anyhow!(
                    "{}",
                    at("the files carry no time (t_s or hour/minute/second/microsecond): set period_s")
                )
            })?;
            i as f64 * period
        };
        if let Some(&last) = t_s.last() {
            anyhow::ensure!(t > last, "{}", at(&format!("{name} is not later than the snapshot before it")));
        }
        t_s.push(t);
        let mut found = 0;
        for (c, column) in columns.iter().enumerate() {
            let Some((axis, unit, scale)) = axis_of(column) else { continue };
            found += 1;
            let burst: Vec<f32> = values[c].iter().map(|&v| (v * scale) as f32).collect();
            match axes.iter_mut().find(|a| a.name == axis) {
                Some(a) => a.snapshots.push(burst),
                None if i == 0 => axes.push(Axis { name: axis, unit, snapshots: vec![burst] }),
                None => {
                    anyhow::bail!("{}", at(&format!("{name} has axis {axis:?}, the first snapshot has not")))
                }
            }
        }
        anyhow::ensure!(
            found == axes.len() && found > 0,
            "{}",
            at(&format!(
                "{name}: needs the same axis columns as the first snapshot (<axis>_g, _mg, _ms2 or _mm_s)"
            ))
        );
    }
    axes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Recording {
        name: dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        fs_hz: d.fs_hz,
        rpm: d.rpm,
        t_s,
        axes,
        asset: d
            .asset
            .into_iter()
            .map(|(k, v)| match v {
                toml::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect(),
    })
}

/// `<axis>_<unit>` → (axis, unit, scale to the unit): `g`, `mg` (to g), `ms2`, `mm_s`.
fn axis_of(name: &str) -> Option<(String, Unit, f64)> {
    let (axis, unit) = name.rsplit_once('_')?;
    let (unit, scale) = match unit {
        "g" => (Unit::G, 1.0),
        "mg" => (Unit::G, 1e-3),
        "ms2" => (Unit::MetersPerSecond2, 1.0),
        "s" if axis.ends_with("_mm") => (Unit::MillimetersPerSecond, 1.0),
        _ => return None,
    };
    let axis = axis.trim_end_matches("_mm");
    (!axis.is_empty()).then(|| (axis.to_string(), unit, scale))
}

/// Writes `rec` as a `.npz` that [`load_npz`] (and numpy) reads: `t_s`, `fs_hz`, `rpm` if known,
/// and each axis as `<axis>_<unit>` (float32). Written next to its place, then renamed.
pub fn save_npz(rec: &Recording, path: &Path) -> anyhow::Result<()> {
    let mut arrays = vec![
        ("t_s".to_string(), npy(&[rec.t_s.len() as u64], &rec.t_s)?),
        ("fs_hz".to_string(), npy(&[], &[rec.fs_hz])?),
    ];
    if let Some(rpm) = rec.rpm {
        arrays.push(("rpm".to_string(), npy(&[], &[rpm])?));
    }
    for axis in &rec.axes {
        let cols = axis.snapshots.first().map_or(0, Vec::len);
        anyhow::ensure!(
            axis.snapshots.iter().all(|s| s.len() == cols),
            "axis {}: snapshots of different lengths",
            axis.name
        );
        let unit = match axis.unit {
            Unit::G => "g",
            Unit::MetersPerSecond2 => "ms2",
            Unit::MillimetersPerSecond => "mm_s",
        };
        let values: Vec<f32> = axis.snapshots.concat();
        arrays.push((
            format!("{}_{unit}", axis.name),
            npy(&[axis.snapshots.len() as u64, cols as u64], &values)?,
        ));
    }
    let partial = path.with_extension("npz.partial");
    write_zip(&partial, &arrays)?;
    std::fs::rename(&partial, path).with_context(|| path.display().to_string())?;
    Ok(())
}

/// One `.npy` array of `values` with `shape`.
fn npy<T: npyz::AutoSerialize + Copy>(shape: &[u64], values: &[T]) -> std::io::Result<Vec<u8>> {
    use npyz::WriterBuilder as _;
    let mut out = Vec::new();
    let mut w = npyz::WriteOptions::new().default_dtype().shape(shape).writer(&mut out).begin_nd()?;
    w.extend(values.iter().copied())?;
    w.finish()?;
    Ok(out)
}

/// A zip of `<name>.npy` entries (stored, as `np.savez` writes them).
fn write_zip<S: AsRef<str>>(path: &Path, arrays: &[(S, Vec<u8>)]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let file = std::fs::File::create(path).with_context(|| path.display().to_string())?;
    let mut zip = zip::ZipWriter::new(file);
    for (name, bytes) in arrays {
        zip.start_file(format!("{}.npy", name.as_ref()), zip::write::SimpleFileOptions::default())?;
        zip.write_all(bytes)?;
    }
    zip.finish()?;
    Ok(())
}

/// The burst features of one snapshot of one axis (`bearing_features::spectrum`).
#[derive(Debug, Clone)]
pub struct SnapshotFeatures {
    pub axis: String,
    pub t_s: f64,
    /// Fraction of the recording elapsed at the snapshot (1 at the last: the end of life).
    pub life: f64,
    pub features: bearing_features::spectrum::BurstSpectrum,
}

/// The names and values of the features compared by [`onsets`] and written by `edgepm spectrum`.
pub fn feature_values(s: &bearing_features::spectrum::BurstSpectrum) -> Vec<(String, f64)> {
    use bearing_features::spectrum::BAND_EDGES_HZ;
    let mut v = vec![
        ("rms".to_string(), s.moments.rms),
        ("peak".to_string(), s.moments.peak),
        ("crest".to_string(), s.moments.crest),
        ("kurtosis".to_string(), s.moments.kurtosis),
        ("velocity_rms_mm_s".to_string(), s.velocity_rms_mm_s),
    ];
    for (b, e) in s.band_energy.iter().enumerate() {
        v.push((format!("band_{}_{}_hz", BAND_EDGES_HZ[b], BAND_EDGES_HZ[b + 1]), *e));
    }
    v.push(("resonance_lo_hz".into(), s.resonance_hz.0));
    v.push(("resonance_hi_hz".into(), s.resonance_hz.1));
    v.push(("resonance_kurtosis".into(), s.resonance_kurtosis));
    for (name, line) in [("bpfo", s.bpfo), ("bpfi", s.bpfi), ("bsf", s.bsf), ("ftf", s.ftf)] {
        v.push((format!("{name}_amplitude"), line.amplitude));
        v.push((format!("{name}_prominence"), line.prominence));
    }
    v
}

/// Every snapshot of every axis of `rec` analysed for a bearing of `geometry` at `rpm`.
pub fn analyse(
    rec: &Recording,
    geometry: &bearing_features::spectrum::Geometry,
    rpm: f64,
) -> anyhow::Result<Vec<SnapshotFeatures>> {
    let defects = geometry.frequencies(rpm / 60.0).map_err(anyhow::Error::msg)?;
    let (first, last) = (rec.t_s[0], *rec.t_s.last().expect("checked when loaded"));
    let mut out = Vec::new();
    for axis in &rec.axes {
        for (i, burst) in axis.snapshots.iter().enumerate() {
            let features = bearing_features::spectrum::analyse(burst, rec.fs_hz, axis.unit, &defects)
                .map_err(|e| anyhow::anyhow!("{} {} snapshot {i}: {e}", rec.name, axis.name))?;
            let t_s = rec.t_s[i];
            let life = if last > first { (t_s - first) / (last - first) } else { 1.0 };
            out.push(SnapshotFeatures { axis: axis.name.clone(), t_s, life, features });
        }
    }
    Ok(out)
}

/// When one feature first rose and stayed above `k` × its early-life level.
#[derive(Debug, Clone, PartialEq)]
pub struct Onset {
    pub feature: String,
    /// Median over the first 10 % of the recording: the largest of the axes' (each axis is
    /// judged against its own).
    pub baseline: f64,
    /// Seconds before the end of the first of three consecutive snapshots above `k` × baseline
    /// (on any axis), `None` if that never happens.
    pub lead_s: Option<f64>,
    /// The same as a fraction of the recording's span.
    pub lead_life: Option<f64>,
    /// Whether such a run starts in the first half of the recording (a false alarm on a run to
    /// failure).
    pub early: bool,
}

/// For each feature, its [`Onset`] on `rows` (one recording).
pub fn onsets(rows: &[SnapshotFeatures], k: f64) -> Vec<Onset> {
    const RUN: usize = 3;
    let (Some(first), Some(last)) = (
        rows.iter().map(|r| r.t_s).min_by(f64::total_cmp),
        rows.iter().map(|r| r.t_s).max_by(f64::total_cmp),
    ) else {
        return Vec::new();
    };
    let names: Vec<String> = rows
        .first()
        .map(|r| feature_values(&r.features).into_iter().map(|(n, _)| n).collect())
        .unwrap_or_default();
    let mut axes: Vec<&str> = rows.iter().map(|r| r.axis.as_str()).collect();
    axes.sort_unstable();
    axes.dedup();
    let mut out = Vec::new();
    for (f, name) in names.iter().enumerate() {
        if name.starts_with("resonance_") && name.ends_with("_hz") {
            continue;
        }
        let mut baseline_max: f64 = 0.0;
        let mut onset: Option<f64> = None;
        let mut early = false;
        for axis in &axes {
            let series: Vec<(f64, f64, f64)> = rows
                .iter()
                .filter(|r| r.axis == *axis)
                .map(|r| (r.t_s, r.life, feature_values(&r.features)[f].1))
                .collect();
            let mut early_values: Vec<f64> =
                series.iter().filter(|s| s.1 <= 0.1 && s.2.is_finite()).map(|s| s.2).collect();
            early_values.sort_by(f64::total_cmp);
            let Some(&baseline) = early_values.get(early_values.len() / 2) else { continue };
            baseline_max = baseline_max.max(baseline);
            let mut run = 0;
            for (i, s) in series.iter().enumerate() {
                run = if s.2 > k * baseline { run + 1 } else { 0 };
                if run == RUN {
                    let start = series[i + 1 - RUN];
                    if start.1 < 0.5 {
                        early = true;
                    }
                    onset = Some(onset.map_or(start.0, |o: f64| o.min(start.0)));
                    break;
                }
            }
        }
        let span = last - first;
        out.push(Onset {
            feature: name.clone(),
            baseline: baseline_max,
            lead_s: onset.map(|t| last - t),
            lead_life: onset.map(|t| if span > 0.0 { (last - t) / span } else { 0.0 }),
            early,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_of_femto_csv_snapshots_reads_as_its_recording() {
        let dir = tempfile::tempdir().expect("tempdir");
        // FEMTO's own format: no header; hour, minute, second, microsecond, horizontal, vertical
        // acceleration in g — three snapshots across midnight.
        let times = [(23, 59, 50, 0), (23, 59, 59, 900_000), (0, 0, 9, 500_000)];
        for (i, (h, m, s, us)) in times.iter().enumerate() {
            let rows: String =
                (0..4).map(|k| format!("{h},{m},{s},{us},{},{}\n", 0.1 * k as f64, -(i as f64))).collect();
            std::fs::write(dir.path().join(format!("acc_{:05}.csv", i + 1)), rows).expect("csv");
        }
        std::fs::write(
            dir.path().join(CSV_DESCRIPTION),
            "fs_hz = 25600\nrpm = 1800\ncolumns = [\"hour\", \"minute\", \"second\", \"microsecond\", \"horiz_g\", \"vert_mg\"]\n",
        )
        .expect("toml");
        let rec = load(dir.path()).expect("a CSV recording");
        assert_eq!((rec.fs_hz, rec.rpm), (25_600.0, Some(1_800.0)));
        let day = 86_400.0;
        assert_eq!(rec.t_s, vec![86_390.0, 86_399.9, day + 9.5]);
        assert_eq!(rec.axes.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["horiz", "vert"]);
        assert_eq!(rec.axes[0].snapshots[1], vec![0.0, 0.1, 0.2, 0.3f32]);
        assert_eq!(rec.axes[1].snapshots[2], vec![-0.002f32; 4], "mg read in g");
        assert_eq!(rec.axes[0].unit, Unit::G);

        // With a header, a t_s column or none (then period_s); and what is wrong is named.
        let other = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str| std::fs::write(other.path().join(name), text).expect("write");
        write(CSV_DESCRIPTION, "fs_hz = 1000\nperiod_s = 10\n");
        write("s1.csv", "x_ms2,temperature\n1,20\n2,20\n");
        write("s2.csv", "x_ms2,temperature\n3,20\n4,21\n");
        let rec = load(other.path()).expect("header and period_s");
        assert_eq!((rec.t_s.clone(), rec.axes[0].unit), (vec![0.0, 10.0], Unit::MetersPerSecond2));
        write("s3.csv", "x_ms2\n5\nloud\n");
        let e = load(other.path()).expect_err("not a number").to_string();
        assert!(e.contains("s3.csv row 2: \"loud\" is not a number"), "{e}");
        write("s3.csv", "y_g\n5\n");
        let e = format!("{:#}", load(other.path()).expect_err("another axis"));
        assert!(e.contains("s3.csv has axis \"y\""), "{e}");
        write("s3.csv", "x_ms2\n5\n");
        write(CSV_DESCRIPTION, "fs_hz = 1000\n");
        let e = load(other.path()).expect_err("no time").to_string();
        assert!(e.contains("set period_s"), "{e}");
        write(CSV_DESCRIPTION, "fs_hz = 0\n");
        assert!(load(other.path()).expect_err("no rate").to_string().contains("not a sample rate"));
    }

    fn npy<T: npyz::AutoSerialize + Copy>(shape: &[u64], values: &[T]) -> Vec<u8> {
        super::npy(shape, values).expect("npy")
    }

    fn npz(path: &Path, arrays: &[(&str, Vec<u8>)]) {
        write_zip(path, arrays).expect("zip");
    }

    /// A run to failure in milli-g like FEMTO's: 40 snapshots of 2,560 samples at 25.6 kHz,
    /// 1,800 rpm; an outer-race defect (impacts at BPFO ringing 4 kHz) from snapshot 24 on,
    /// growing. Deterministic noise.
    fn femto_like(path: &Path) {
        let defects = bearing_features::spectrum::FEMTO_BEARING.frequencies(30.0).expect("geometry");
        let (rows, cols, fs) = (40usize, 2560usize, 25_600.0);
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut noise = || {
            // Sum of four uniforms: near Gaussian, enough for a test.
            (0..4)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
                })
                .sum::<f64>()
        };
        let mut horiz = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            let defect = if r >= 24 { 0.8 + 0.1 * (r - 24) as f64 } else { 0.0 };
            let mut since = 0.0f64;
            for i in 0..cols {
                let t = i as f64 / fs;
                let mut v = 0.05 * (2.0 * std::f64::consts::PI * 30.0 * t).sin() + 0.5 * noise();
                v += defect * (-since / 4e-4).exp() * (2.0 * std::f64::consts::PI * 4_000.0 * since).sin();
                since += 1.0 / fs;
                if since >= 1.0 / defects.bpfo {
                    since -= 1.0 / defects.bpfo;
                }
                horiz.push((v * 1000.0).round() as i32);
            }
        }
        let t_s: Vec<f64> = (0..rows).map(|r| 10.0 * r as f64).collect();
        npz(
            path,
            &[
                ("t_s", npy(&[rows as u64], &t_s)),
                ("horiz_mg", npy(&[rows as u64, cols as u64], &horiz)),
                ("fs_hz", npy(&[], &[25_600i64])),
                ("rpm", npy(&[], &[1_800i64])),
            ],
        );
    }

    #[test]
    fn a_recording_reads_in_g_and_its_defect_shows_when_it_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run.npz");
        femto_like(&path);
        let rec = load_npz(&path).expect("loads");
        assert_eq!(
            (rec.name.as_str(), rec.fs_hz, rec.rpm, rec.t_s.len()),
            ("run", 25_600.0, Some(1_800.0), 40)
        );
        assert_eq!(rec.axes.len(), 1);
        assert_eq!((rec.axes[0].name.as_str(), rec.axes[0].unit), ("horiz", Unit::G));
        let m = bearing_features::Moments::of(&rec.axes[0].snapshots[0]);
        assert!((0.2..0.4).contains(&m.rms), "milli-g read as g (σ 0.29 g): {m:?}");
        let rows = analyse(&rec, &bearing_features::spectrum::FEMTO_BEARING, 1_800.0).expect("analysed");
        assert_eq!(rows.len(), 40);
        assert_eq!((rows[0].life, rows[39].life), (0.0, 1.0));
        let onsets = onsets(&rows, 2.0);
        let bpfo = onsets.iter().find(|o| o.feature == "bpfo_prominence").expect("bpfo");
        // The defect starts at snapshot 24 of 40, 150 s before the end: found within its first
        // three snapshots, never before it.
        assert!(bpfo.lead_s.is_some_and(|s| (120.0..=150.0).contains(&s)), "{bpfo:?}");
        assert!(!bpfo.early);
        // The outer-race line is the one that stands out (the inner race's window catches BPFO's
        // 4th harmonic at the end: 4 × 168.3 Hz is within 3 % of 3 × 221.7 Hz).
        let last = &rows[39].features;
        assert!(last.bpfo.prominence > 2.0 * last.bpfi.prominence.max(last.bsf.prominence), "{last:?}");
        let bpfi = onsets.iter().find(|o| o.feature == "bpfi_prominence").expect("bpfi");
        assert!(bpfi.lead_s.is_none_or(|s| s + 60.0 < bpfo.lead_s.unwrap_or(0.0)), "{bpfi:?}");
    }

    #[test]
    fn a_recording_without_what_it_needs_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.npz");
        npz(&path, &[("t_s", npy(&[2], &[0.0f64, 1.0])), ("x_g", npy(&[2, 4], &[0.0f32; 8]))]);
        assert!(load_npz(&path).unwrap_err().to_string().contains("no fs_hz"));
        npz(
            &path,
            &[
                ("t_s", npy(&[2], &[1.0f64, 0.0])),
                ("fs_hz", npy(&[], &[100i64])),
                ("x_g", npy(&[2, 4], &[0.0f32; 8])),
            ],
        );
        assert!(load_npz(&path).unwrap_err().to_string().contains("not increasing"));
        npz(
            &path,
            &[
                ("t_s", npy(&[3], &[0.0f64, 1.0, 2.0])),
                ("fs_hz", npy(&[], &[100i64])),
                ("x_g", npy(&[2, 4], &[0.0f32; 8])),
            ],
        );
        assert!(load_npz(&path).unwrap_err().to_string().contains("2 snapshots"));
        npz(&path, &[("t_s", npy(&[2], &[0.0f64, 1.0])), ("fs_hz", npy(&[], &[100i64]))]);
        assert!(load_npz(&path).unwrap_err().to_string().contains("no axis"));
        std::fs::write(&path, b"not a zip").expect("write");
        assert!(load_npz(&path).unwrap_err().to_string().contains("not a .npz"));
    }
}

//! Parity of the host's model engines with the reference implementations, on fixtures written by
//! the training pipeline (`models/train.py`): the exported models and 1,000 rows — some with
//! missing values — with XGBoost's `predict_proba` and `pred_contribs` and onnxruntime's output
//! on the exported ONNX.

use edgepm::model::{ModelRegistry, TreeModel};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

struct Parity {
    rows: Vec<Vec<f32>>,
    columns: Vec<String>,
    values: Vec<Vec<f64>>,
}

impl Parity {
    fn load(model: &str) -> Parity {
        let path = fixtures().join(model).join("parity.csv");
        let mut r = csv::Reader::from_path(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let columns: Vec<String> = r.headers().expect("header").iter().map(str::to_string).collect();
        let is_input = |c: &str| {
            c.strip_prefix('x').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        };
        let n_x = columns.iter().filter(|c| is_input(c)).count();
        let (mut rows, mut values) = (Vec::new(), Vec::new());
        for rec in r.records() {
            let rec = rec.expect("row");
            let v: Vec<f64> = rec.iter().map(|f| f.parse::<f64>().expect("number or NaN")).collect();
            rows.push(v[..n_x].iter().map(|&x| x as f32).collect());
            values.push(v);
        }
        Parity { rows, columns, values }
    }

    fn column(&self, name: &str) -> Vec<f64> {
        let i = self.columns.iter().position(|c| c == name).unwrap_or_else(|| panic!("no column {name}"));
        self.values.iter().map(|v| v[i]).collect()
    }
}

fn tree_model(name: &str) -> TreeModel {
    TreeModel::open(&fixtures().join(name)).expect("tree model")
}

fn check_tree_model(name: &str) {
    let model = tree_model(name);
    let p = Parity::load(name);
    assert!(p.rows.len() >= 1000, "{name}: {} rows", p.rows.len());
    assert!(
        p.rows.iter().any(|r| r.iter().any(|x| x.is_nan())),
        "{name}: the fixture exercises missing values"
    );
    let (xgb, ort) = (p.column("xgboost_probability"), p.column("onnxruntime_probability"));
    let n = model.ensemble().n_features();
    let shap: Vec<Vec<f64>> = (0..=n).map(|i| p.column(&format!("shap{i}"))).collect();
    let (mut worst_p, mut worst_ort, mut worst_shap) = (0.0f64, 0.0f64, 0.0f64);
    for (i, row) in p.rows.iter().enumerate() {
        let prob = model.ensemble().probability(row);
        worst_p = worst_p.max((prob - xgb[i]).abs());
        worst_ort = worst_ort.max((prob - ort[i]).abs());
        let phi = model.ensemble().shap(row);
        for (j, s) in shap.iter().enumerate() {
            worst_shap = worst_shap.max((phi[j] - s[i]).abs());
        }
    }
    assert!(worst_p < 1e-5, "{name}: max |p − XGBoost| = {worst_p:e}");
    assert!(worst_ort < 1e-5, "{name}: max |p − onnxruntime| = {worst_ort:e}");
    assert!(worst_shap < 1e-4, "{name}: max |SHAP − pred_contribs| = {worst_shap:e}");
    // Batched evaluation gives the same numbers as one row at a time.
    let flat: Vec<f32> = p.rows.iter().flatten().copied().collect();
    let batch = model.ensemble().probabilities(&flat);
    assert!(batch.iter().zip(&xgb).all(|(a, b)| (a - b).abs() < 1e-5));
    use edgepm::model::Model;
    let batch = model.predict_rows(&flat).expect("batch");
    assert!(batch.iter().zip(&xgb).all(|(a, b)| (*a as f64 - b).abs() < 1e-5));
}

#[test]
fn bearing_xgb_matches_xgboost_and_onnxruntime() {
    check_tree_model("bearing-xgb");
}

#[test]
fn bearing_spectrum_xgb_matches_xgboost_and_onnxruntime() {
    check_tree_model("bearing-spectrum-xgb");
}

#[test]
fn ai4i_xgb_matches_xgboost_and_onnxruntime() {
    check_tree_model("ai4i-xgb");
}

#[test]
fn tract_matches_onnxruntime_on_the_mlp() {
    let registry = ModelRegistry::new(fixtures());
    let model = registry.get("bearing-mlp").expect("the MLP loads on tract");
    let p = Parity::load("bearing-mlp");
    let ort = p.column("onnxruntime_probability");
    let mut worst = 0.0f64;
    for (i, row) in p.rows.iter().enumerate() {
        let s = model.predict_row(row, false).expect("inference");
        worst = worst.max((s.probability as f64 - ort[i]).abs());
    }
    assert!(p.rows.len() >= 1000);
    assert!(worst < 1e-5, "max |tract − onnxruntime| = {worst:e}");
    // The batched plan (several windows ready at once) gives the same numbers. The MLP needs
    // complete rows, which every parity row of it is.
    let flat: Vec<f32> = p.rows.iter().flatten().copied().collect();
    let batch = model.predict_rows(&flat).expect("batched inference");
    assert_eq!(batch.len(), p.rows.len());
    let worst = batch.iter().zip(&ort).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-5, "batched: max |tract − onnxruntime| = {worst:e}");
}

/// The sequence model (a 1-D CNN over the readings of a window, trained in numpy on FEMTO and the
/// simulator, exported by `models/train.py femto`) on tract: the same probabilities as
/// onnxruntime on 1,000 real windows' features, one at a time and batched.
#[test]
fn tract_matches_onnxruntime_on_the_sequence_cnn() {
    let registry = ModelRegistry::new(fixtures());
    let model = registry.get("bearing-spectrum-cnn").expect("the CNN loads on tract");
    assert_eq!(model.feature_names().len(), 32);
    assert_eq!(model.feature_names()[0], "seq_rms_rel_0");
    let p = Parity::load("bearing-spectrum-cnn");
    let ort = p.column("onnxruntime_probability");
    assert!(p.rows.len() >= 1000);
    let mut worst = 0.0f64;
    for (i, row) in p.rows.iter().enumerate() {
        let s = model.predict_row(row, false).expect("inference");
        worst = worst.max((s.probability as f64 - ort[i]).abs());
    }
    assert!(worst < 1e-5, "max |tract − onnxruntime| = {worst:e}");
    let flat: Vec<f32> = p.rows.iter().flatten().copied().collect();
    let batch = model.predict_rows(&flat).expect("batched inference");
    let worst = batch.iter().zip(&ort).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-5, "batched: max |tract − onnxruntime| = {worst:e}");
    // Not a constant: the windows span healthy to failing.
    let (lo, hi) = ort.iter().fold((1.0f64, 0.0f64), |(l, h), &p| (l.min(p), h.max(p)));
    assert!(lo < 0.2 && hi > 0.8, "probabilities from {lo} to {hi}");
    // A 12 kHz accelerometer has no 8–12.8 kHz band (nor a whole 4–8 kHz one): its rows lack
    // those readings. The graph would turn the NaN into a confident "healthy" (Max(x, ε)); the
    // host refuses the row and names what is missing, alone or in a batch.
    let band = |k: usize| format!("seq_band_8000_12800hz_rel_{k}");
    let mut row = p.rows[0].clone();
    for k in 0..4 {
        let i = model.feature_names().iter().position(|n| *n == band(k)).expect("a band feature");
        row[i] = f32::NAN;
    }
    let err = model.predict_row(&row, false).expect_err("a row with missing values is refused").to_string();
    assert!(err.contains("cannot score missing values") && (0..4).all(|k| err.contains(&band(k))), "{err}");
    let mut flat = p.rows[1].clone();
    flat.extend_from_slice(&row);
    assert!(
        model.predict_rows(&flat).is_err(),
        "a batch holding such a row is refused (its rows then run one by one)"
    );
}

#[test]
fn explanations_come_with_the_tree_models_prediction() {
    let registry = ModelRegistry::new(fixtures());
    let model = registry.get("bearing-xgb").expect("model");
    let p = Parity::load("bearing-xgb");
    let s = model.predict_row(&p.rows[0], true).expect("score");
    assert_eq!(s.contributions.len(), model.feature_names().len());
    assert_eq!(s.contributions[0].feature, "vibration_rms");
    let quiet = model.predict_row(&p.rows[0], false).expect("score");
    assert!(quiet.contributions.is_empty(), "no explanation unless asked");
    assert_eq!(s.probability, quiet.probability);
}

#[test]
fn a_changed_model_is_swapped_in_and_a_broken_one_is_refused() {
    use crate::support::{Deployment, wait_until};
    use std::time::Duration;
    let d = Deployment::new();
    let dir = d.models_dir().join("trees");
    std::fs::create_dir_all(&dir).expect("folder");
    let src = fixtures().join("bearing-xgb");
    std::fs::copy(src.join("model.json"), dir.join("model.json")).expect("model");
    let meta = std::fs::read_to_string(src.join("metadata.json")).expect("metadata");
    let with_version = |v: &str| {
        let mut m: serde_json::Value = serde_json::from_str(&meta).expect("json");
        m["name"] = "trees".into();
        m["version"] = v.into();
        m.to_string()
    };
    std::fs::write(dir.join("metadata.json"), with_version("A")).expect("write");
    let host = d.open();
    let _watcher = host.watch().expect("watch");
    assert_eq!(host.models().get("trees").expect("loads").id(), "trees@A");

    // A new version, written then renamed into place.
    let tmp = d.root.path().join("staging/metadata.json");
    std::fs::write(&tmp, with_version("B")).expect("write");
    std::fs::rename(&tmp, dir.join("metadata.json")).expect("rename");
    let swapped =
        wait_until(Duration::from_secs(10), || host.models().get("trees").is_ok_and(|m| m.id() == "trees@B"));
    assert!(swapped.is_some(), "the new version serves");

    // A broken model file: refused, version B keeps serving.
    std::fs::write(&tmp, "{\"learner\": 1}").expect("write");
    std::fs::rename(&tmp, dir.join("model.json")).expect("rename");
    let refused = wait_until(Duration::from_secs(10), || host.models().rejected_reloads() == 1);
    assert!(refused.is_some(), "the broken file was seen and refused");
    let m = host.models().get("trees").expect("still serving");
    assert_eq!(m.id(), "trees@B");
    assert!(m.predict_row(&vec![0.0; m.feature_names().len()], false).is_ok());
}

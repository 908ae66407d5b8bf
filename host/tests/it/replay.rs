//! `edgepm replay` on real AI4I 2020 rows through tenant `ai4i`: its own preprocess plugin
//! (ai4i-features), the reference scorer and policy, and the exported XGBoost model.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn deploy(root: &Path) -> PathBuf {
    let tenant = root.join("plugins/ai4i");
    std::fs::create_dir_all(&tenant).expect("folder");
    std::fs::copy(crate::support::AI4I_FEATURES, tenant.join("preprocess.wasm")).expect("plugin");
    let toml = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tenants/ai4i/tenant.toml");
    std::fs::copy(toml, tenant.join("tenant.toml")).expect("tenant.toml");
    root.join("plugins")
}

fn replay(plugins: &Path, csv: &Path, out: &Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_edgepm"))
        .arg("replay")
        .arg("--plugins-dir")
        .arg(plugins)
        .arg("--models-dir")
        .arg(fixtures().join("models"))
        .args(["--tenant", "ai4i", "--csv"])
        .arg(csv)
        .arg("--out")
        .arg(out)
        .output()
        .expect("edgepm replay");
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_to_string(out).expect("predictions")
}

#[test]
fn replaying_ai4i_rows_scores_each_reading_and_ignores_label_columns() {
    let root = tempfile::tempdir().expect("tempdir");
    let plugins = deploy(root.path());
    let sample = fixtures().join("ai4i2020_sample.csv");
    let out = replay(&plugins, &sample, &root.path().join("a.csv"));
    let rows: Vec<Vec<String>> =
        out.lines().skip(1).map(|l| l.split(',').map(str::to_string).collect()).collect();
    assert_eq!(rows.len(), 500, "one prediction per reading (window 1)");
    assert_eq!(rows[0][0], "1");
    assert!(rows.iter().all(|r| r[5].starts_with("ai4i-xgb@")), "{:?}", rows[0]);

    // The rows that failed are (training rows of this model) flagged; healthy ones mostly not.
    let text = std::fs::read_to_string(&sample).expect("sample");
    let failed: std::collections::HashSet<String> = text
        .lines()
        .skip(1)
        .filter(|l| l.split(',').nth(8) == Some("1"))
        .map(|l| l.split(',').next().expect("UDI").to_string())
        .collect();
    let flagged = rows.iter().filter(|r| failed.contains(&r[0]) && r[4] == "1").count();
    let false_alarms = rows.iter().filter(|r| !failed.contains(&r[0]) && r[4] == "1").count();
    assert!(flagged * 4 >= failed.len() * 3, "{flagged} of {} failures flagged", failed.len());
    assert!(false_alarms <= 5, "{false_alarms} healthy rows flagged");
    // Explanations are computed for flagged rows (TreeSHAP), so their top feature is named.
    assert!(rows.iter().filter(|r| r[4] == "1").all(|r| !r[7].is_empty()), "{out}");

    // Label columns cannot influence a prediction: flip every label and replay again.
    let flipped: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                return format!("{l}\n");
            }
            let mut f: Vec<String> = l.split(',').map(str::to_string).collect();
            for v in &mut f[8..] {
                *v = if v == "1" { "0".into() } else { "1".into() };
            }
            format!("{}\n", f.join(","))
        })
        .collect();
    let flipped_path = root.path().join("flipped.csv");
    std::fs::write(&flipped_path, flipped).expect("write");
    let again = replay(&plugins, &flipped_path, &root.path().join("b.csv"));
    assert_eq!(out, again, "labels changed a prediction");
}

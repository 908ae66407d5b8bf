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
    replay_with(plugins, &fixtures().join("models"), csv, out)
}

fn replay_with(plugins: &Path, models: &Path, csv: &Path, out: &Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_edgepm"))
        .arg("replay")
        .arg("--plugins-dir")
        .arg(plugins)
        .arg("--models-dir")
        .arg(models)
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

fn tenant_deploy(args: &[&str], plugins: &Path, models: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgepm"))
        .args(["tenant", "deploy"])
        .args(args)
        .arg("--plugins-dir")
        .arg(plugins)
        .arg("--models-dir")
        .arg(models)
        .output()
        .expect("edgepm tenant deploy")
}

#[test]
fn a_shipped_tenant_deploys_with_one_command_and_replays_like_a_hand_deployed_one() {
    let root = tempfile::tempdir().expect("tempdir");
    let (plugins, models) = (root.path().join("plugins"), root.path().join("models"));
    let o = tenant_deploy(&["ai4i"], &plugins, &models);
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{stdout}{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("tenant ai4i deployed"), "{stdout}");
    for file in ["tenant.toml", "preprocess.wasm", "score.wasm", "policy.wasm"] {
        assert!(plugins.join("ai4i").join(file).is_file(), "{file}");
    }
    assert!(models.join("ai4i-xgb/metadata.json").is_file());

    // The same predictions as the tenant deployed by hand with the model of the repository.
    let sample = fixtures().join("ai4i2020_sample.csv");
    let shipped = replay_with(&plugins, &models, &sample, &root.path().join("a.csv"));
    let by_hand_root = tempfile::tempdir().expect("tempdir");
    let by_hand = replay_with(
        &deploy(by_hand_root.path()),
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"),
        &sample,
        &root.path().join("b.csv"),
    );
    assert_eq!(shipped.lines().count(), 501);
    assert_eq!(shipped, by_hand);

    // Again: nothing to do. A file changed by hand is not overwritten without --force.
    let again = tenant_deploy(&["ai4i"], &plugins, &models);
    assert!(String::from_utf8_lossy(&again.stdout).contains("already up to date"));
    let toml = plugins.join("ai4i/tenant.toml");
    std::fs::write(&toml, "threshold = 0.1\n").expect("edit");
    let refused = tenant_deploy(&["ai4i"], &plugins, &models);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not overwriting"), "{refused:?}");
    assert!(tenant_deploy(&["ai4i", "--force"], &plugins, &models).status.success());
    assert!(std::fs::read_to_string(&toml).expect("toml").contains("threshold = 0.61"));

    // Under another name; and an unknown one names those shipped.
    assert!(tenant_deploy(&["bearing", "--as", "plant-7"], &plugins, &models).status.success());
    assert!(plugins.join("plant-7/tenant.toml").is_file() && models.join("bearing-xgb/model.json").is_file());
    let unknown = tenant_deploy(&["nope"], &plugins, &models);
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(!unknown.status.success() && err.contains("ai4i, bearing"), "{err}");
}

#[test]
fn replaying_a_tenant_not_deployed_says_how_to_deploy_a_shipped_one() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(root.path().join("plugins")).expect("folder");
    let o = Command::new(env!("CARGO_BIN_EXE_edgepm"))
        .arg("replay")
        .arg("--plugins-dir")
        .arg(root.path().join("plugins"))
        .args(["--tenant", "ai4i", "--csv"])
        .arg(fixtures().join("ai4i2020_sample.csv"))
        .arg("--out")
        .arg(root.path().join("out.csv"))
        .output()
        .expect("edgepm replay");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("edgepm tenant deploy ai4i"), "{err}");
}

//! The deployment files under `infrastructure/` checked by the tools made for them.

use std::process::Command;

/// `infrastructure/edgepm.service` with `ExecStart` pointing at the binary under test (verify
/// checks that the command exists), in a temporary folder.
fn unit() -> (tempfile::TempDir, std::path::PathBuf) {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infrastructure/edgepm.service"))
            .expect("infrastructure/edgepm.service");
    assert!(text.contains("ExecStart=/usr/local/bin/edgepm run --config /etc/edgepm/edgepm.toml"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgepm.service");
    std::fs::write(&path, text.replace("/usr/local/bin/edgepm", env!("CARGO_BIN_EXE_edgepm"))).expect("unit");
    (dir, path)
}

fn systemd_analyze(args: &[&str], unit: &std::path::Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze is not installed: scripts/test.sh installs Debian's systemd");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
#[ignore = "needs systemd-analyze: run scripts/test.sh"]
fn the_systemd_unit_verifies_clean_and_is_hardened() {
    let (_dir, unit) = unit();
    let (ok, text) = systemd_analyze(&["verify"], &unit);
    assert!(ok && text.trim().is_empty(), "systemd-analyze verify: {text}");
    let (_, text) = systemd_analyze(&["security", "--offline=yes"], &unit);
    let level = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for edgepm.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    assert!(level <= 2.0, "exposure {level} (docs/operations.md reports 1.5): {text}");
}

/// Runs `edgepm validate --config <example> [--offline]` with its folders moved under `root`.
fn validate_example(name: &str, root: &std::path::Path, offline: bool) -> (bool, String) {
    let text =
        std::fs::read_to_string(format!("{}/../infrastructure/config/{name}", env!("CARGO_MANIFEST_DIR")))
            .unwrap_or_else(|e| panic!("infrastructure/config/{name}: {e}"));
    let moved = text
        .replace("\"/var/lib/edgepm\"", &format!("{:?}", root.join("data")))
        .replace("\"/data\"", &format!("{:?}", root.join("data")))
        .replace("\"/efs/", &format!("\"{}/efs/", root.display()));
    let config = root.join(name);
    std::fs::write(&config, moved).expect("config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgepm"));
    cmd.args(["validate", "--config"]).arg(&config);
    if offline {
        cmd.arg("--offline");
    }
    let out = cmd.output().expect("edgepm validate");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_example_configurations_of_the_three_deployments_validate() {
    let root = tempfile::tempdir().expect("tempdir");
    for name in ["gateway-offline.toml", "gateway-uplink.toml", "fargate.toml"] {
        let (ok, text) = validate_example(name, root.path(), true);
        assert!(ok, "{name}: {text}");
        assert!(text.contains(&format!("{name}: valid")), "{name}: {text}");
    }
    // The offline gateway has no cloud sink: the full check (not --offline) passes too.
    let (ok, text) = validate_example("gateway-offline.toml", root.path(), false);
    assert!(ok && text.contains("no cloud sink configured"), "{text}");
    // A typo is refused (unknown keys are errors).
    let bad = root.path().join("bad.toml");
    std::fs::write(
        &bad,
        "data_dir = \"x\"\n[mqtt]\nurl = \"mqtt://h\"\n[sinks.sns]\ntopic = \"arn:aws:sns:x\"\n",
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_edgepm"))
        .args(["validate", "--offline", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("unknown field `topic`"),
        "{out:?}"
    );
    // So is a broker address left as a placeholder.
    std::fs::write(
        &bad,
        "data_dir = \"x\"\n[mqtt]\nurl = \"mqtts://<prefix>-ats.iot.<region>.amazonaws.com\"\n",
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_edgepm"))
        .args(["validate", "--offline", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("MQTT url"), "{out:?}");
}

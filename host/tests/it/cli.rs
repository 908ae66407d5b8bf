//! The `edgepm` binary: `plugin check`, `plugin export`, `process`, `--help`.

use crate::support::{self, Deployment, T0};
use std::io::Write;
use std::process::{Command, Stdio};

fn edgepm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgepm")).args(args).output().expect("edgepm runs")
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn plugin_check_describes_each_reference_plugin() {
    let _timing = support::shared();
    // bearing-features is built against the first contract (0.1.0), which the host still
    // serves; the others against the current one.
    for (file, stage, export, contract) in [
        (support::BEARING_FEATURES, "preprocess", "features", "0.1.0"),
        (support::BEARING_SPECTRUM, "preprocess", "features", "0.2.0"),
        (support::MODEL_SCORE, "score", "score", "0.2.0"),
        (support::THRESHOLD_POLICY, "policy", "decide", "0.2.0"),
    ] {
        let out = edgepm(&["plugin", "check", file, "--stage", stage]);
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        assert!(t.contains(&format!("stage:   {stage}")), "{t}");
        let world = match stage {
            "preprocess" => "preprocessor",
            "score" => "scorer",
            _ => "policy",
        };
        assert!(t.contains(&format!("edgepm:plugin/{world}@{contract})")), "{t}");
        assert!(t.contains(export), "{t}");
        assert!(t.contains(&format!("edgepm:plugin/host@{contract}")), "imports are listed: {t}");
        assert!(t.contains("smoke:   ok"), "{t}");
    }
    let t = text(&edgepm(&["plugin", "check", support::BEARING_SPECTRUM]));
    assert!(t.contains("edgepm:plugin/history@0.2.0") && t.contains("window:  4 readings"), "{t}");
    let t = text(&edgepm(&["plugin", "check", support::BEARING_FEATURES]));
    assert!(t.contains("window:  32 readings"), "{t}");
}

#[test]
fn plugin_check_rejects_bad_files_with_a_clear_message() {
    let _timing = support::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm at all").expect("write");
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, wat::parse_str("(module)").expect("wat")).expect("write");
    let missing = dir.path().join("missing.wasm");
    let cases = [
        (vec!["plugin", "check", support::path(&junk).leak()], "not WebAssembly"),
        (vec!["plugin", "check", support::path(&core).leak()], "core WebAssembly module"),
        (vec!["plugin", "check", support::path(&missing).leak()], "No such file"),
        (
            vec!["plugin", "check", support::BEARING_FEATURES, "--stage", "policy"],
            "implements the preprocessor world, but this is the policy slot",
        ),
    ];
    for (args, reason) in cases {
        let out = edgepm(&args);
        let t = text(&out);
        assert!(!out.status.success(), "{args:?} must fail: {t}");
        assert!(t.contains("not a usable edgepm plugin") && t.contains(reason), "{args:?}: {t}");
    }
}

#[test]
fn help_lists_every_subcommand() {
    let _timing = support::shared();
    let t = text(&edgepm(&["--help"]));
    for sub in ["plugin", "process", "validate"] {
        assert!(t.contains(sub), "{t}");
    }
    let t = text(&edgepm(&["plugin", "--help"]));
    assert!(t.contains("check") && t.contains("export"), "{t}");
}

#[test]
fn process_runs_windows_from_stdin_through_exported_plugins() {
    let _timing = support::shared();
    let d = Deployment::new();
    d.add_tenant("acme", "");
    // Start the tenant folder from the exported built-ins, as an operator would.
    let tenant_dir = d.plugins_dir().join("acme");
    let out = edgepm(&["plugin", "export", tenant_dir.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", text(&out));
    let plugins = support::path(&d.plugins_dir());
    let models = support::path(&d.models_dir());
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgepm"))
        .args(["process", "--no-watch", "--plugins-dir", &plugins, "--models-dir", &models])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    for (i, wear) in [0.0, 3.0].into_iter().enumerate() {
        let w = support::window("acme", "MTR-042", 32, T0 + i as i64 * 3_600_000, wear);
        writeln!(stdin, "{}", serde_json::to_string(&w).expect("json")).expect("write");
    }
    writeln!(stdin, "{{\"not\": \"a window\"}}").expect("write");
    drop(stdin);
    let out = child.wait_with_output().expect("exits");
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 2, "one outcome per valid window");
    assert_eq!(lines[0]["decision"]["is_failure"], false);
    assert_eq!(lines[1]["decision"]["is_failure"], true);
    assert_eq!(
        lines[1]["decision"]["alerts"][0]["subject"],
        "⚠️ ALERTA DE FALHA IMINENTE — Equipamento MTR-042"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 3: not a window"));
}

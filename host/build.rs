//! Builds the reference plugins (and the host's test plugins) from source for `wasm32-wasip2`,
//! so a clean clone needs no committed binaries. The host embeds the reference plugins as its
//! built-in defaults; tests find every plugin through `EDGEPM_WASM_<NAME>` variables.
//!
//! A nested `cargo build` runs with its own target folder (no lock contention with the outer
//! build) and with the outer build's compiler wrappers and flags removed (clippy, coverage).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, file stem) of every plugin built here.
const PLUGINS: &[(&str, &str)] = &[
    ("bearing-features", "bearing_features"),
    ("bearing-spectrum", "bearing_spectrum"),
    ("ai4i-features", "ai4i_features"),
    ("model-score", "model_score"),
    ("threshold-policy", "threshold_policy"),
    ("chaos-policy", "chaos_policy"),
    ("chaos-score", "chaos_score"),
    ("chaos-preprocess", "chaos_preprocess"),
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("host/ lives in the workspace root").to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for watched in ["plugins", "wit", "host/tests/plugins", "Cargo.lock", ".cargo/config.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=EDGEPM_PLUGIN_TARGET_DIR");

    // <target>/<profile>/build/edgepm-<hash>/out → <target>/wasm-plugins
    let target_dir = env::var_os("EDGEPM_PLUGIN_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| {
        out_dir
            .ancestors()
            .nth(4)
            .map(|t| t.join("wasm-plugins"))
            .unwrap_or_else(|| out_dir.join("wasm-plugins"))
    });
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--profile", "plugin", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir);
    for (package, _) in PLUGINS {
        cmd.args(["-p", package]);
    }
    for var in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_LLVM_COV",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().unwrap_or_else(|e| panic!("running cargo to build the plugins: {e}"));
    if !status.success() {
        panic!(
            "building the plugins for wasm32-wasip2 failed ({status}); the target installs with \
             `rustup target add wasm32-wasip2` (rust-toolchain.toml asks rustup for it)"
        );
    }
    let built = target_dir.join("wasm32-wasip2").join("plugin");
    for (package, stem) in PLUGINS {
        let from = built.join(format!("{stem}.wasm"));
        let to = out_dir.join(format!("{stem}.wasm"));
        copy_if_changed(&from, &to)
            .unwrap_or_else(|e| panic!("copying {} for {package}: {e}", from.display()));
        println!("cargo:rustc-env=EDGEPM_WASM_{}={}", stem.to_uppercase(), to.display());
    }
}

fn copy_if_changed(from: &Path, to: &Path) -> std::io::Result<()> {
    let new = std::fs::read(from)?;
    if std::fs::read(to).ok().as_deref() != Some(&new[..]) {
        std::fs::write(to, new)?;
    }
    Ok(())
}

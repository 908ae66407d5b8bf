#!/usr/bin/env bash
# Runs every test of the project. Installs what the tests need first (idempotent).
#   scripts/test.sh            all tests
#   scripts/test.sh <filter>   passes the filter to cargo test
set -euo pipefail
cd "$(dirname "$0")/.."

# The plugins are built for wasm32-wasip2 by host/build.rs; rust-toolchain.toml names the target,
# this makes sure it is there even when rustup's auto-install is off.
if command -v rustup >/dev/null; then
  rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
fi

cargo test --workspace --locked "$@"

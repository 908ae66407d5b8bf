# Sourced by the scripts that build edgepm. host/build.rs compiles the plugins for wasm32-wasip2;
# rust-toolchain.toml names that target, but rustup only applies it when it installs the
# toolchain itself, so a machine whose toolchain came first lacks it. This adds it (idempotent).
if command -v rustup >/dev/null; then
  rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
else
  echo "rustup not found: install it from https://rustup.rs (the wasm32-wasip2 target is needed)" >&2
  exit 1
fi

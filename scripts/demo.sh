#!/usr/bin/env bash
# The main job: builds courier and the example guests, then pipes a few lines
# through the `uppercase` guest on the embedded broker (nothing to install).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --quiet --release --target wasm32-wasip2 --manifest-path guests/Cargo.toml \
  --target-dir target/guests
cargo build --quiet -p courier-cli
guest=target/guests/wasm32-wasip2/release/uppercase.wasm
echo "\$ printf 'hello\\nworld\\nfrom courier\\n' | courier run $guest --stdin in --print out" >&2
courier="${CARGO_TARGET_DIR:-target}/debug/courier"
printf 'hello\nworld\nfrom courier\n' | "$courier" run "$guest" --stdin in --print out

#!/usr/bin/env bash
# Runs every test: unit tests, and integration tests that build the guests
# under guests/ for wasm32-wasip2 and run them through Courier.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --guests
scripts/brokers.sh ensure
cargo test --workspace "$@"
# The guests' shared library (the `transform` guest's work), natively.
cargo test --manifest-path guests/Cargo.toml -p orders

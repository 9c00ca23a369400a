#!/usr/bin/env bash
# Installs what a fresh machine lacks to build Courier and its guests.
set -euo pipefail
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi

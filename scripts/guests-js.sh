#!/usr/bin/env bash
# Builds the JavaScript example guests (guests/js/examples/*/app.js, with the
# SDK in guests/js/courier) into components with componentize-js:
# target/guests/js/NAME.wasm, or under the directory given as $1.
#
# componentize-js is the one guests/js/package.json pins, installed by
# `npm ci` in guests/js (scripts/setup.sh --guests does it). A component
# newer than every source and the WIT is not built again. The world is
# guests/js/wit's `guest`: wasi:messaging's, plus wasi:cli/environment.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/target/guests/js}"
tool="$root/guests/js/node_modules/.bin/componentize-js"
if [[ ! -x "$tool" ]]; then
  echo "componentize-js is not installed: run scripts/setup.sh --guests" >&2
  exit 2
fi
mkdir -p "$out"
cd "$root/guests/js"
for dir in examples/*/; do
  name="$(basename "$dir")"
  wasm="$out/$name.wasm"
  if [[ -f "$wasm" ]] && [[ -z "$(find courier "$dir" "$root/wit" wit package-lock.json \
      -newer "$wasm" -type f -print -quit)" ]]; then
    continue
  fi
  echo "componentize-js: $name -> $wasm" >&2
  # No fetch(): Courier links no wasi:http, and a guest reaches the world
  # only through wasi:messaging.
  "$tool" "$dir/app.js" --wit wit --world-name guest \
    --disable http fetch-event -o "$wasm.tmp" >&2
  mv "$wasm.tmp" "$wasm"
done

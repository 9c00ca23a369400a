#!/usr/bin/env bash
# Prints docs/guests.md's table: the uppercase guest in Rust, Python and
# JavaScript, measured in one run with a release `courier`:
#   size        the component file
#   cold start  `courier run` of one message with an empty compile cache
#               (compile, instantiate, handle, exit)
#   warm start  the same again, the compiled code now cached
#   throughput  MESSAGES lines (default 20000) through `courier run --stdin
#               in --print out` on the embedded broker, less the warm start
# Usage: scripts/guests-bench.sh [MESSAGES]   (COURIER=path: that courier, not a release build)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
n="${1:-20000}"
target="${CARGO_TARGET_DIR:-$root/target}"
if [[ -n "${COURIER:-}" ]]; then
  courier="$COURIER" # another build, e.g. a debug one: say so next to the figures
else
  cargo build --quiet --release -p courier-cli --manifest-path "$root/Cargo.toml"
  courier="$target/release/courier"
fi
CARGO_TARGET_DIR="$root/target/guests" cargo build --quiet --release \
  --target wasm32-wasip2 --manifest-path "$root/guests/Cargo.toml" -p uppercase
"$root/scripts/guests-python.sh" >/dev/null
"$root/scripts/guests-js.sh" >/dev/null
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
seq 1 "$n" | sed 's/^/message /' >"$work/input"
now() { date +%s.%N; }

# run COMPONENT INPUT CACHE: seconds `courier run` took; fails unless every
# line came out upper-cased.
run() {
  local start end lines
  start="$(now)"
  XDG_CACHE_HOME="$3" "$courier" run "$1" --stdin in --print out <"$2" >"$work/out" 2>"$work/err" ||
    { cat "$work/err" >&2; exit 1; }
  end="$(now)"
  lines="$(grep -c '^MESSAGE ' "$work/out" || true)"
  if [[ "$lines" != "$(wc -l <"$2")" ]]; then
    echo "$1: $lines of $(wc -l <"$2") messages came out" >&2
    exit 1
  fi
  awk -v a="$start" -v b="$end" 'BEGIN { print b - a }'
}

echo "message 0" >"$work/one"
printf '| guest | size | cold start | warm start | throughput (msg/s) |\n'
printf '|---|---:|---:|---:|---:|\n'
for lang in rust python js; do
  case "$lang" in
    rust) wasm="$root/target/guests/wasm32-wasip2/release/uppercase.wasm" ;;
    *) wasm="$root/target/guests/$lang/uppercase.wasm" ;;
  esac
  cache="$work/cache-$lang"
  cold="$(run "$wasm" "$work/one" "$cache")"
  warm="$(run "$wasm" "$work/one" "$cache")"
  total="$(run "$wasm" "$work/input" "$cache")"
  size="$(stat -c %s "$wasm")"
  awk -v l="$lang" -v s="$size" -v c="$cold" -v w="$warm" -v t="$total" -v n="$n" \
    'BEGIN { printf "| %s uppercase | %.1f MiB | %.2f s | %.2f s | %.0f |\n", l, s / 1048576, c, w, n / (t - w) }'
done

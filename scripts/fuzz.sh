#!/usr/bin/env bash
# Runs every fuzz target under fuzz/ (cargo fuzz, libFuzzer) for a bounded
# time and prints, per target, the executions libFuzzer made:
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Works on the stable toolchain: cargo-fuzz's build needs no nightly feature
# without a sanitizer, and RUSTC_BOOTSTRAP covers the flags it passes that
# stable would otherwise refuse. Safe Rust needs no AddressSanitizer; a
# panic (failed assertion included) is the crash libFuzzer catches, with
# debug assertions on. Exits non-zero on a crash; the input that crashed is
# in fuzz/artifacts/TARGET/, replayed by `cargo fuzz run TARGET FILE`.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(config nats_headers redis_fields amqp_properties mqtt_properties kafka_headers)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
flags=(--sanitizer none --debug-assertions)
(cd fuzz && cargo fuzz build "${flags[@]}")
mkdir -p fuzz/logs
failed=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  corpora=("fuzz/corpus/$t")
  [ -d "fuzz/seeds/$t" ] && corpora+=("fuzz/seeds/$t")
  log="fuzz/logs/$t.log"
  status=0
  (cd fuzz && cargo fuzz run "${flags[@]}" "$t" "${corpora[@]/#fuzz\//}" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1) \
    >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ "$status" -eq 0 ]; then
    echo "fuzz $t: ${runs:-?} executions, 0 crashes"
  else
    failed=1
    echo "fuzz $t: CRASH after ${runs:-?} executions (exit $status); see $log and fuzz/artifacts/$t/" >&2
    grep -E "panicked at|ERROR: libFuzzer|Test unit written" "$log" >&2 || tail -20 "$log" >&2
  fi
done
exit "$failed"

#!/usr/bin/env bash
# Runs the broker-restart tests (crates/courier-runtime/tests/faults.rs) N
# times in a row per broker — NATS JetStream, Redis Streams, RabbitMQ and
# Mosquitto — and prints, per broker, runs passed / runs. It stops
# at the first run that does not pass (a failure, or a test ignored because
# its broker program is missing) and prints that run's whole output.
#
#   scripts/restart-loop.sh [N] [BROKER...]
#
# N defaults to 20. BROKER (nats_jetstream, redis_streams, rabbitmq,
# mosquitto) runs only those. A run that has not ended after
# COURIER_RESTART_RUN_SECS (default 600) is killed and counts as failed: the
# test itself has unbounded waits (stopping the runtime). Each run starts a private broker and takes it down
# twice: about 15 s a run on NATS and Redis, 22 s on Mosquitto and 30 s on
# RabbitMQ on a 2-core machine, so N = 20 takes about 30 minutes. The test
# binary is built once first (debug, as `cargo test` builds it) and run
# directly.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=20
only=()
usage="usage: $0 [N] [nats_jetstream|redis_streams|rabbitmq|mosquitto ...]"
for arg in "$@"; do
  case "$arg" in
    nats_jetstream|redis_streams|rabbitmq|mosquitto) only+=("$arg") ;;
    ''|*[!0-9]*) echo "$usage" >&2; exit 2 ;;
    *) runs="$arg" ;;
  esac
done
limit="${COURIER_RESTART_RUN_SECS:-600}"
if [ "$runs" -lt 1 ]; then
  echo "$usage (N >= 1)" >&2
  exit 2
fi

# broker label, test name
cases=(
  "nats_jetstream|nats_jetstream_survives_broker_restarts"
  "redis_streams|redis_streams_survive_broker_restarts"
  "rabbitmq|rabbitmq_survives_broker_restarts"
  "mosquitto|mosquitto_survives_broker_restarts"
)

# The test binary is built once and run directly: every run tests the same
# build, even if the working tree changes meanwhile.
bin="$(cargo test -q --workspace --test faults --no-run --message-format=json |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "faults" and m.get("executable"):
        print(m["executable"])')"
[ -x "$bin" ] || { echo "restart-loop: the faults test binary was not built" >&2; exit 1; }

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
summary=()
print_summary() {
  echo
  echo "restart loop summary ($(date -u +%Y-%m-%d), N = $runs):"
  for line in "${summary[@]}"; do
    echo "  $line"
  done
}

for c in "${cases[@]}"; do
  IFS='|' read -r label test <<<"$c"
  if [ ${#only[@]} -gt 0 ] && [[ " ${only[*]} " != *" $label "* ]]; then
    continue
  fi
  passed=0
  for ((i = 1; i <= runs; i++)); do
    started=$SECONDS
    if (cd crates/courier-runtime && timeout -k 10 "$limit" "$bin" --exact "$test" \
      --nocapture --test-threads 1) >"$out" 2>&1 &&
      grep -q '^test result: ok\. 1 passed' "$out"; then
      passed=$((passed + 1))
      # The test's summary line (it may follow libtest's `test NAME ... ` on its line).
      line="$(grep -o -m1 'faults [a-z]*: [0-9]* published.*' "$out" || true)"
      echo "$label run $i/$runs passed in $((SECONDS - started)) s: ${line#faults }"
    else
      echo "$label run $i/$runs DID NOT PASS (after $((SECONDS - started)) s, limit $limit s); its output:"
      cat "$out"
      summary+=("$label: $passed/$i runs passed (stopped at run $i)")
      print_summary
      exit 1
    fi
  done
  summary+=("$label: $passed/$runs runs passed")
done
print_summary

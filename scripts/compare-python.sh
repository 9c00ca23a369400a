#!/usr/bin/env bash
# Courier against the plain Python service a user would write instead, on
# core NATS: the `uppercase` work (each message's data upper-cased and
# published to an output subject) done by `courier run` with the uppercase
# guest, then by bench/python-uppercase/service.py (nats-py), in one run,
# compared by CPU time per million messages.
#
# For each, bench/python-uppercase/load.py (nats-py) waits until the service
# answers, warms it up, then publishes N messages of 16 bytes (at most
# WINDOW unanswered, so that core NATS drops none) and counts N upper-cased
# copies; the service's CPU time (utime + stime, /proc/PID/stat) is read just
# before the first publish and just after the last copy arrived, so start-up
# (and Courier's compilation) is left out. A run that loses a message fails.
#
# Usage: scripts/compare-python.sh [N]   (default 200000)
#   NATS_URL     the server (default nats://127.0.0.1:4222)
#   COURIER      a courier binary to use instead of a release build
#   WINDOW       most messages unanswered at once (default 10000)
# nats-py (the version bench/python-uppercase/requirements.txt pins) is
# installed in a virtualenv under target/toolchains/bench-python.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
n="${1:-200000}"
url="${NATS_URL:-nats://127.0.0.1:4222}"
window="${WINDOW:-10000}"
target="${CARGO_TARGET_DIR:-$root/target}"
if [[ -n "${COURIER:-}" ]]; then
  courier="$COURIER"
else
  cargo build --quiet --release -p courier-cli --manifest-path "$root/Cargo.toml"
  courier="$target/release/courier"
fi
CARGO_TARGET_DIR="$root/target/guests" cargo build --quiet --release \
  --target wasm32-wasip2 --manifest-path "$root/guests/Cargo.toml" -p uppercase
wasm="$root/target/guests/wasm32-wasip2/release/uppercase.wasm"

bench="$root/bench/python-uppercase"
venv="$root/target/toolchains/bench-python"
want="$(sed -n 's/^nats-py==//p' "$bench/requirements.txt")"
have="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("nats-py"))' 2>/dev/null || true)"
if [[ "$have" != "$want" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$bench/requirements.txt"
fi
py="$venv/bin/python"

work="$(mktemp -d)"
pid=""
stop() {
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    wait "$pid" || true
  fi
  pid=""
}
trap 'stop; rm -rf "$work"' EXIT

ns="compare.$$.$RANDOM"
cat >"$work/courier.toml" <<TOML
[clients.default]
backend = "nats"
url = "$url"

[guests.uppercase]
component = "$wasm"
subscribe = ["$ns.courier.in"]
allow-publish = ["$ns.courier.out"]
env = { OUT = "$ns.courier.out" }
TOML

# measure NAME: loads the service running as $pid on $ns.NAME.in/out; prints
# "N cpu-seconds wall-seconds rss-KiB".
measure() {
  "$py" "$bench/load.py" "$url" "$ns.$1.in" "$ns.$1.out" "$pid" "$n" 1000 "$window" ||
    { echo "$1: see $work/$1.log" >&2; cat "$work/$1.log" >&2; exit 1; }
}

# The compiled component goes to a cache of this run's own.
XDG_CACHE_HOME="$work/cache" "$courier" run --config "$work/courier.toml" 2>"$work/courier.log" &
pid=$!
out="$(measure courier)"
read -r _ c_cpu c_wall c_rss <<<"$out"
stop

"$py" "$bench/service.py" "$url" "$ns.python.in" "$ns.python.out" 2>"$work/python.log" &
pid=$!
out="$(measure python)"
read -r _ p_cpu p_wall p_rss <<<"$out"
stop

printf '| implementation | messages | CPU s | CPU s per million messages | ratio to Courier | wall s | msg/s | RSS at end |\n'
printf '|---|---:|---:|---:|---:|---:|---:|---:|\n'
row() {
  awk -v name="$1" -v n="$n" -v cpu="$2" -v wall="$3" -v rss="$4" -v base="$c_cpu" 'BEGIN {
    printf "| %s | %d | %.2f | %.2f | %.2f | %.2f | %.0f | %.1f MiB |\n",
      name, n, cpu, cpu / n * 1e6, cpu / base, wall, n / wall, rss / 1024 }'
}
row "Courier (uppercase guest, batch-size 100)" "$c_cpu" "$c_wall" "$c_rss"
row "Python service (nats-py $want)" "$p_cpu" "$p_wall" "$p_rss"

#!/usr/bin/env bash
# Profiles the guest side of the throughput benchmark (embedded broker, noop
# guest, batch 100) with perf, and prints where its samples go: for each
# sample, the first frame that belongs to Courier, wasmtime's component
# calls or the guest's JIT code, with its library callees (malloc, memcpy,
# locks) counted in it. Samples of the benchmark's publisher and of the
# native baseline are left out.
#
#   scripts/profile.sh [MESSAGES]
#
# Needs perf (Debian: linux-perf) and a kernel that lets it sample.
set -euo pipefail
cd "$(dirname "$0")/.."
messages="${1:-200000}"
cargo build --release -p courier-runtime --example bench
bench="${CARGO_TARGET_DIR:-target}/release/examples/bench"
out="$(mktemp -d)"
# The engine names the guests' compiled functions for perf
# (/tmp/perf-PID.map): `perf report -i` on a kept perf.data shows them.
COURIER_PERF_MAP=1 perf record -F 999 --call-graph dwarf,32768 -o "$out/perf.data" \
  "$bench" throughput backend=embedded guest=noop "messages=$messages" \
  >/dev/null 2>"$out/record.log"
perf script -i "$out/perf.data" 2>/dev/null >"$out/perf.txt"
python3 - "$out/perf.txt" <<'PY'
import collections, re, sys
stacks = open(sys.argv[1]).read().split("\n\n")
interesting = re.compile(r"(courier|wasmtime::runtime::component::func|Func::call)")
own = collections.Counter()
total = 0
for st in stacks:
    lines = [l.strip() for l in st.strip().split("\n")[1:] if l.strip()]
    if not lines:
        continue
    frames = [re.sub(r"\+0x[0-9a-f]+.*$", "", re.sub(r"^[0-9a-f]+ ", "", l)) for l in lines]
    joined = " ".join(frames)
    if any(s in joined for s in ("harness::publish", "native_rate", "native_consume", "take_batch")):
        continue
    total += 1
    for f in frames:
        if interesting.search(f):
            own[f[:100]] += 1
            break
    else:
        own["guest code (JIT)" if "perf-" in frames[0] else "other: " + frames[0][:60]] += 1
print(f"{total} samples on the guest side\n")
print("| share | where |\n|---|---|")
for k, v in own.most_common(20):
    print(f"| {100 * v / total:.1f}% | `{k}` |")
PY
rm -rf "$out"

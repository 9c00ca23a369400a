#!/usr/bin/env bash
# Profiles the guest side of the throughput benchmark (embedded broker, noop
# guest, batch 100) with perf, and prints where its samples go: for each
# sample, the first frame that belongs to Courier, wasmtime's component
# calls or the guest's JIT code, with its library callees (malloc, memcpy,
# locks) counted in it. Samples of the benchmark's publisher and of the
# native baseline are left out of that table.
#
# A second table is each side's CPU per message: every sample of the run
# put to the guest side (the call, the worker around it, the pump, the
# rest), the native consumer or the publisher, and turned into nanoseconds
# per message (samples / frequency / messages each side handled).
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
freq=999
COURIER_PERF_MAP=1 perf record -F "$freq" --call-graph dwarf,32768 -o "$out/perf.data" \
  "$bench" throughput backend=embedded guest=noop "messages=$messages" \
  >/dev/null 2>"$out/record.log"
perf script -i "$out/perf.data" 2>/dev/null >"$out/perf.txt"
# The messages each side handled (warm-up and rounds), as the benchmark says
# on stderr; the publisher runs for both sides.
per_side="$(grep -o '[0-9]* messages through each side' "$out/record.log" | cut -d' ' -f1)"
python3 - "$out/perf.txt" "$freq" "$per_side" <<'PY'
import collections, re, sys
stacks = open(sys.argv[1]).read().split("\n\n")
freq, per_side = int(sys.argv[2]), int(sys.argv[3])
interesting = re.compile(r"(courier|wasmtime::runtime::component::func|Func::call)")

def where(joined, leaf):
    """The side and part of one sample (its frames joined, its leaf frame)."""
    if "harness::publish" in joined:
        return "publisher", ""
    if any(k in joined for k in ("native_consume", "take_batch", "native_rate")):
        sub = "next_batch" if "next_batch" in joined else "ack_tags" if "ack_tags" in joined else "the rest"
        return "native", sub
    if "GuestRuntime>::worker" in joined:
        return "guest: worker around the call", "ack_all" if "ack_all" in joined else "the rest"
    if "pump::" in joined:
        return "guest: pump", "next_batch" if "next_batch" in joined else "the rest"
    if any(k in joined for k in ("wasm[", "cabi_realloc", "dlmalloc", "dlfree", "wasi:messaging", "fiber")):
        if any(k in leaf for k in ("cabi_realloc", "dlmalloc", "dlfree")):
            sub = "the guest's allocator"
        elif "LowerContext<T>::realloc" in joined:
            sub = "wasmtime's realloc, host side"
        elif "courier_wasi_messaging::lower" in joined or "memcpy" in leaf:
            sub = "lowering and copying (lower.rs)"
        else:
            sub = "the rest"
        return "guest: the handler call", sub
    return "guest: in no task's frames", ""

own = collections.Counter()  # guest-side samples by their first frame of interest
part = collections.Counter()  # every sample by side and part
for st in stacks:
    lines = [l.strip() for l in st.strip().split("\n")[1:] if l.strip()]
    if not lines:
        continue
    frames = [re.sub(r"\+0x[0-9a-f]+.*$", "", re.sub(r"^[0-9a-f]+ ", "", l)) for l in lines]
    joined = " ".join(frames)
    side, sub = where(joined, frames[0])
    part[(side, "")] += 1
    if sub:
        part[(side, sub)] += 1
    if not side.startswith("guest"):
        continue
    for f in frames:
        if interesting.search(f):
            own[f[:100]] += 1
            break
    else:
        own["guest code (JIT)" if "perf-" in frames[0] else "other: " + frames[0][:60]] += 1

total = sum(own.values())
print(f"{total} samples on the guest side\n")
print("| share | where |\n|---|---|")
for k, v in own.most_common(20):
    print(f"| {100 * v / total:.1f}% | `{k}` |")

ns = lambda n, share=1: n / share / freq * 1e9 / per_side
print(f"\nCPU per message ({per_side} messages each side, {freq} Hz)\n")
print("| side | part | ns / message |\n|---|---|---|")
order = ["guest: the handler call", "guest: worker around the call", "guest: pump",
         "guest: in no task's frames", "native", "publisher"]
for side in order:
    share = 2 if side == "publisher" else 1
    print(f"| {side} | | {ns(part[(side, '')], share):.0f} |")
    for (s2, sub), n in sorted(part.items(), key=lambda kv: -kv[1]):
        if s2 == side and sub:
            print(f"| | {sub} | {ns(n):.0f} |")
guest = sum(n for (s2, sub), n in part.items() if s2.startswith("guest") and not sub)
print(f"| guest, whole | | {ns(guest):.0f} |")
PY
rm -rf "$out"

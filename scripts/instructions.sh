#!/usr/bin/env bash
# Counts the instructions each side of the throughput benchmark executes per
# message, with valgrind's callgrind: for the same build and inputs the count
# moves by 1-4 % between runs, whatever else the machine is doing (it counts
# user-space instructions, not time), so a change of a few percent in
# Courier's own work shows, where wall-clock rates move 10-15 % from run to
# run. (It counts the benchmark's process only: a remote broker's own work
# is not in it.)
#
# Each side runs alone (`bench throughput side=guest|native`), at MESSAGES
# and at twice as many; the difference, divided by the messages it adds,
# is the cost per message without start-up, compilation and shutdown. The
# publisher is in both sides' counts, as it is in both sides' rates.
#
# Prints instructions per message by part for both sides, the instruction
# ratio (native / guest: what the throughput ratio would be if both sides
# ran one instruction at a time), and the guest side's costliest functions.
#
#   scripts/instructions.sh [BACKEND] [GUEST] [MESSAGES]
#   scripts/instructions.sh embedded noop 10000     # the defaults
#
# Needs valgrind (Debian: valgrind). Takes about a minute for the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
backend="${1:-embedded}"
guest="${2:-noop}"
messages="${3:-10000}"
command -v valgrind >/dev/null || {
  echo "instructions.sh: valgrind is missing (apt-get install valgrind)" >&2
  exit 1
}
cargo build --release -p courier-runtime --example bench
bench="${CARGO_TARGET_DIR:-target}/release/examples/bench"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# What a failed run said: its error, else the end of its log.
why() { grep -m1 -A3 '^Error' "$1" >&2 || tail -5 "$1" >&2; }
# One run first that compiles the guest into the engine's cache, so that no
# counted run compiles it. Under valgrind too: the processor valgrind shows
# has other features than the real one, so its compiled code is cached apart.
valgrind --tool=none --smc-check=all-non-file \
  "$bench" throughput "backend=$backend" "guest=$guest" messages=1000 \
  >"$out/warm-up.txt" 2>"$out/warm-up.log" || {
  echo "instructions.sh: the warm-up run failed:" >&2
  why "$out/warm-up.log"
  exit 1
}
for side in guest native; do
  for n in "$messages" "$((messages * 2))"; do
    # --smc-check: the engine writes the guest's machine code at run time.
    valgrind --tool=callgrind --smc-check=all-non-file \
      --callgrind-out-file="$out/$side.$n" \
      "$bench" throughput "backend=$backend" "guest=$guest" "side=$side" "messages=$n" \
      >"$out/$side.$n.txt" 2>"$out/$side.$n.log" || {
      echo "instructions.sh: the $side side's run of $n messages failed:" >&2
      why "$out/$side.$n.log"
      exit 1
    }
    callgrind_annotate --inclusive=no --auto=no --threshold=100 "$out/$side.$n" \
      >"$out/$side.$n.functions"
  done
done
# The messages the larger run adds, from what each run says it handled.
handled() { grep -o '[0-9]* messages through each side' "$1" | cut -d' ' -f1; }
added="$(($(handled "$out/guest.$((messages * 2)).log") - $(handled "$out/guest.$messages.log")))"
python3 - "$out" "$messages" "$added" "$backend" "$guest" <<'PY'
import collections, re, sys
out, n, added, backend, guest = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]

def functions(path):
    """Instructions by function (self cost) in one callgrind_annotate listing."""
    cost = collections.Counter()
    for line in open(path):
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S.*)$", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        name = re.sub(r" \[[^\]]*\]$", "", m.group(2))
        if not name.startswith("???"):
            name = name.split(":", 1)[-1]
        cost[name] += int(m.group(1).replace(",", ""))
    return cost

# Each function's part: the first pattern (a regular expression) it matches.
PARTS = [
    (r"^\?\?\?", "the guest's code (compiled wasm: its bindings and allocator)"),
    (r"malloc|free|_int_|unlink_chunk|__rdl_|__rust_(alloc|dealloc)", "host allocator"),
    (r"memcpy|memmove|memcmp|memset", "memcpy and friends"),
    (r"courier_wasi_messaging", "Courier: lowering into the guest (lower.rs)"),
    (r"wasmtime", "wasmtime (calls, realloc entries, traps)"),
    (r"courier_runtime", "Courier: dispatcher (pump, queue, worker, tracker, settlement)"),
    (r"courier_(embedded|nats|redis|mqtt|amqp|kafka|broker)|async_nats|lapin|rumqttc|redis::",
     "the broker client or embedded broker"),
    (r"bench::", "the benchmark (publisher, native consumer)"),
    (r"tokio", "tokio"),
]

def part(name):
    """Which part of the work a function is."""
    return next((p for pattern, p in PARTS if re.search(pattern, name)), "other")

per = {}
for side in ("guest", "native"):
    small, large = functions(f"{out}/{side}.{n}.functions"), functions(f"{out}/{side}.{2 * n}.functions")
    per[side] = {k: (large[k] - small[k]) / added for k in set(small) | set(large)}
total = {side: sum(per[side].values()) for side in per}
print(f"Instructions per message, {backend} {guest} ({added} messages added per side)\n")
# round(), not a format: a part that costs nothing shows 0, not -0.
print("| part | guest | native |\n|---|---|---|")
parts = collections.defaultdict(lambda: {"guest": 0.0, "native": 0.0})
for side in per:
    for k, v in per[side].items():
        parts[part(k)][side] += v
for p, v in sorted(parts.items(), key=lambda kv: -kv[1]["guest"]):
    print(f"| {p} | {round(v['guest'])} | {round(v['native'])} |")
print(f"| **whole side** | **{round(total['guest'])}** | **{round(total['native'])}** |")
print(f"\ninstruction ratio (native / guest): {total['native'] / total['guest']:.2f}\n")
print("The guest side's costliest functions, instructions per message:\n")
print("| Ir / message | function |\n|---|---|")
for k, v in sorted(per["guest"].items(), key=lambda kv: -kv[1])[:25]:
    print(f"| {round(v)} | `{k[:110]}` |")
PY

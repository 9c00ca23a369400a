"""The load of scripts/compare-python.sh: publishes N messages to IN on core
NATS and counts their upper-cased copies on OUT, measuring the CPU time of
the process that does the work (PID) over exactly that span.

1. Probes until the service answers (it is subscribed and, for Courier, its
   component compiled): a `probe` message every 100 ms until `PROBE` comes
   back; probes are not counted.
2. Warms up with WARMUP messages, all of which must come back.
3. Reads PID's CPU time (utime + stime, /proc/PID/stat), publishes N
   messages of 16 bytes (the Rust benchmark's `uppercase` input), at most
   WINDOW of them unanswered at a time, so that neither side is taken past
   what core NATS holds for a slow consumer (at most once: a message
   dropped is lost), waits for N copies, and reads the CPU time again.
4. Fails (exit 1) unless exactly N copies came back within DEADLINE
   seconds, or if more come within half a second after.

Prints one line: N, CPU seconds, wall seconds, resident set (KiB) of PID at
the end.

Usage: load.py NATS_URL IN OUT PID N [WARMUP [WINDOW [DEADLINE]]]
"""

import asyncio
import os
import sys
import time

import nats

PAYLOAD = bytes(ord("a") + i % 26 for i in range(16))
EXPECTED = PAYLOAD.upper()
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        # The command name, in parentheses, may hold spaces: split after it.
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Counter:
    """Copies of the payload seen on OUT, waking whoever waits for a count."""

    def __init__(self) -> None:
        self.seen = 0
        self.probes = 0
        self.target = 0
        self.reached = asyncio.Event()

    async def on_message(self, msg) -> None:
        if msg.data == EXPECTED:
            self.seen += 1
            if self.seen >= self.target:
                self.reached.set()
        elif msg.data == b"PROBE":
            self.probes += 1

    async def wait_for(self, count: int, timeout: float) -> None:
        while self.seen < count:
            self.target = count
            self.reached.clear()
            if self.seen >= count:
                return
            await asyncio.wait_for(self.reached.wait(), timeout)


async def send(nc, counter: Counter, subject: str, n: int, window: int, deadline: float) -> None:
    """Publishes n messages, keeping at most `window` unanswered."""
    base = counter.seen
    sent = 0
    while sent < n:
        room = window - (sent - (counter.seen - base))
        if room <= 0:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            await counter.wait_for(base + sent - window // 2, left)
            continue
        for _ in range(min(room, n - sent, 1000)):
            await nc.publish(subject, PAYLOAD)
        sent += min(room, n - sent, 1000)
    await nc.flush()


async def main() -> int:
    url, subject_in, subject_out = sys.argv[1:4]
    pid, n = int(sys.argv[4]), int(sys.argv[5])
    warmup = int(sys.argv[6]) if len(sys.argv) > 6 else 1000
    window = int(sys.argv[7]) if len(sys.argv) > 7 else 10000
    limit = float(sys.argv[8]) if len(sys.argv) > 8 else 120.0
    nc = await nats.connect(url)
    counter = Counter()
    await nc.subscribe(subject_out, cb=counter.on_message)
    await nc.flush()

    give_up = time.monotonic() + limit
    while counter.probes == 0:
        if time.monotonic() > give_up:
            print(f"no answer to a probe on {subject_in} in {limit:.0f} s", file=sys.stderr)
            return 1
        await nc.publish(subject_in, b"probe")
        await nc.flush()
        await asyncio.sleep(0.1)

    try:
        await send(nc, counter, subject_in, warmup, window, time.monotonic() + limit)
        await counter.wait_for(warmup, limit)
    except (TimeoutError, asyncio.TimeoutError):
        print(f"warm-up: {counter.seen} of {warmup} messages came back", file=sys.stderr)
        return 1

    base = counter.seen
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    try:
        await send(nc, counter, subject_in, n, window, t0 + limit)
        await counter.wait_for(base + n, max(0.0, t0 + limit - time.monotonic()))
    except (TimeoutError, asyncio.TimeoutError):
        print(f"only {counter.seen - base} of {n} messages came back in {limit:.0f} s",
              file=sys.stderr)
        return 1
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    rss = rss_kib(pid)
    await asyncio.sleep(0.5)
    if counter.seen != base + n:
        print(f"{counter.seen - base} messages came back for {n} sent", file=sys.stderr)
        return 1
    await nc.close()
    print(n, f"{cpu1 - cpu0:.2f}", f"{t1 - t0:.3f}", rss)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

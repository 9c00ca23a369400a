"""The `uppercase` guest's work as a plain Python service, for
scripts/compare-python.sh: subscribes to IN on core NATS with nats-py and
publishes each message's data upper-cased to OUT, keeping its headers (the
guest keeps content type and metadata).

An ordinary nats-py service: one subscription with a callback, `publish`
without a flush per message (the client's flusher task writes what has
piled up, its default batching). Runs until SIGTERM or SIGINT.

Usage: service.py NATS_URL IN OUT
"""

import asyncio
import signal
import sys

import nats


async def main(url: str, subject_in: str, subject_out: str) -> None:
    nc = await nats.connect(url)

    async def handle(msg):
        await nc.publish(subject_out, msg.data.upper(), headers=msg.headers)

    await nc.subscribe(subject_in, cb=handle)
    await nc.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await nc.drain()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))

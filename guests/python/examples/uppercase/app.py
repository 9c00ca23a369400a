"""``uppercase``: sends each message's data upper-cased to its ``reply-to``,
or to the channel ``out`` (or the one in the guest's ``OUT`` environment
variable), keeping its content type and metadata. ``DELAY_MS`` makes it
sleep that long per batch, to simulate work in tests.

The same behaviour as the Rust ``uppercase`` guest, so the same tests apply.
"""

import os
import time

import courier


@courier.handler
def handle(messages: list[courier.Message]) -> None:
    out = os.environ.get("OUT", "out")
    try:
        delay_ms = int(os.environ.get("DELAY_MS", "0"))
    except ValueError:
        delay_ms = 0
    if delay_ms > 0:
        time.sleep(delay_ms / 1000)
    # One send per destination, in arrival order within each.
    by_destination: dict[str, list[courier.Message]] = {}
    for m in messages:
        to = m.reply_to or out
        metadata = [(k, v) for k, v in m.metadata or () if not k.startswith("courier-")]
        upper = courier.message(
            to,
            m.text.upper(),
            content_type=m.content_type,
            metadata=metadata or None,
        )
        by_destination.setdefault(to, []).append(upper)
    for to in sorted(by_destination):
        courier.send(to, by_destination[to])

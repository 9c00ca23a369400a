"""``flaky``: settles messages itself. A message whose data starts with
``abandon`` is abandoned, ``fail`` fails the batch (an error: the batch is
redelivered), ``trap`` raises an exception that is not a messaging error
(the instance traps and is replaced); any other message is forwarded to
``out`` (or the channel in the guest's ``OUT`` environment variable) and
completed.

The same behaviour as the Rust ``flaky`` guest, so the same tests apply.
"""

import os

import courier


@courier.handler
def handle(messages: list[courier.Message]) -> None:
    out = os.environ.get("OUT", "out")
    for m in messages:
        text = m.text
        if text.startswith("abandon"):
            courier.abandon(m)
        elif text.startswith("fail"):
            raise courier.Other(f"flaky: failed on {text}")
        elif text.startswith("trap"):
            raise RuntimeError(f"flaky: trapping on {text}")
        else:
            courier.send(out, [courier.message(out, m.data)])
            courier.complete(m)

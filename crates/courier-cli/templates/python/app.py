"""``{{name}}``: sends each message's data upper-cased to the channel ``out``."""

import courier


@courier.handler
def handle(messages: list[courier.Message]) -> None:
    courier.send("out", [courier.message("out", m.text.upper()) for m in messages])

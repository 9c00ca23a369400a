"""The Python guest SDK for Courier (``wasi:messaging@0.2.0-draft``).

A guest is a module with one function decorated with :func:`handler`, built
into a component with componentize-py::

    import courier

    @courier.handler
    def handle(messages: list[courier.Message]) -> None:
        courier.send("echo", [courier.message("echo", m.data) for m in messages])

The handler gets the batch of messages Courier delivers. Returning normally
accepts every message the handler did not settle itself; raising a
:class:`courier.Error` (``Other("why")``, ...) rejects the batch with that
error (redelivered, then dead-lettered); any other exception traps the
instance, which Courier counts against the message and replaces.

:func:`send` connects to the guest's default client (or the named one) and
sends; :func:`complete` / :func:`abandon` settle one message;
:func:`subscribe` replaces the guest's subscriptions. Host errors arrive as
the typed exceptions :class:`Unauthorized`, :class:`Timeout`,
:class:`Connection` and :class:`Other`, all :class:`Error`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import consumer, producer, types

__all__ = [
    "ATTEMPT",
    "DELIVERY_ID",
    "Connection",
    "Error",
    "Message",
    "Other",
    "Timeout",
    "Unauthorized",
    "abandon",
    "complete",
    "handler",
    "message",
    "send",
    "subscribe",
]

#: Metadata key of the host-issued delivery id.
DELIVERY_ID = "courier-delivery-id"
#: Metadata key of the delivery attempt, on a redelivery only (none: the
#: first delivery).
ATTEMPT = "courier-attempt"


class Error(Exception):
    """An error of the messaging interface (``wasi:messaging/types.error``)."""

    def _wit(self) -> types.Error:
        raise NotImplementedError

    def describe(self) -> str:
        """``unauthorized``, ``timeout``, ``connection:…`` or ``other:…``,
        the way the examples report errors."""
        raise NotImplementedError


class Unauthorized(Error):
    """The guest is not allowed to do this (a channel outside its grant, ...)."""

    def __init__(self) -> None:
        super().__init__("unauthorized")

    def _wit(self) -> types.Error:
        return types.Error_Unauthorized()

    def describe(self) -> str:
        return "unauthorized"


class Timeout(Error):
    """The request or operation timed out."""

    def __init__(self) -> None:
        super().__init__("timeout")

    def _wit(self) -> types.Error:
        return types.Error_Timeout()

    def describe(self) -> str:
        return "timeout"


class Connection(Error):
    """An error with the connection to the broker, or no such client."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def _wit(self) -> types.Error:
        return types.Error_Connection(self.detail)

    def describe(self) -> str:
        return f"connection:{self.detail}"


class Other(Error):
    """Any other error; raised from a handler, it rejects the batch with its text."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def _wit(self) -> types.Error:
        return types.Error_Other(self.detail)

    def describe(self) -> str:
        return f"other:{self.detail}"


def _typed(e: Err) -> Error:
    """The typed exception for an ``Err`` a host call raised."""
    v = e.value
    if isinstance(v, types.Error_Unauthorized):
        return Unauthorized()
    if isinstance(v, types.Error_Timeout):
        return Timeout()
    if isinstance(v, types.Error_Connection):
        return Connection(v.value)
    if isinstance(v, types.Error_Other):
        return Other(v.value)
    return Other(repr(v))


@dataclass
class Message(types.Message):
    """A message: ``topic``, ``data`` (bytes), ``content_type``, ``reply_to``
    and ``metadata`` (a list of ``(key, value)`` pairs, or ``None``)."""

    def meta(self, key: str) -> Optional[str]:
        """The first metadata value of ``key``."""
        for k, v in self.metadata or ():
            if k == key:
                return v
        return None

    @property
    def delivery_id(self) -> Optional[str]:
        """The host-issued delivery id of a received message."""
        return self.meta(DELIVERY_ID)

    @property
    def attempt(self) -> int:
        """The delivery attempt of a received message (1 for the first delivery)."""
        try:
            return int(self.meta(ATTEMPT) or 1)
        except ValueError:
            return 1

    @property
    def text(self) -> str:
        """The data as text (UTF-8; invalid bytes replaced)."""
        return self.data.decode("utf-8", "replace")


def message(
    topic: str,
    data: bytes | str,
    *,
    content_type: Optional[str] = None,
    reply_to: Optional[str] = None,
    metadata: Optional[Iterable[Tuple[str, str]]] = None,
) -> Message:
    """A message on ``topic`` with ``data`` (text is encoded as UTF-8)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return Message(
        topic,
        content_type,
        reply_to,
        bytes(data),
        list(metadata) if metadata is not None else None,
    )


def send(channel: str, messages: List[types.Message], client: str = "") -> None:
    """Sends ``messages`` through ``client`` (the default one when empty). A
    non-empty ``channel`` overrides each message's topic."""
    try:
        # `send` takes the client (an owned handle): nothing is left to close.
        producer.send(types.Client.connect(client), channel, list(messages))
    except Err as e:
        raise _typed(e) from None


def complete(m: types.Message) -> None:
    """Accepts a received message now."""
    try:
        consumer.complete_message(m)
    except Err as e:
        raise _typed(e) from None


def abandon(m: types.Message) -> None:
    """Rejects a received message: redelivered later, or dead-lettered."""
    try:
        consumer.abandon_message(m)
    except Err as e:
        raise _typed(e) from None


def subscribe(channels: Iterable[str], extensions: Optional[dict] = None) -> None:
    """Replaces the guest's subscriptions with ``channels``."""
    gc = types.GuestConfiguration(
        list(channels),
        list(extensions.items()) if extensions else None,
    )
    try:
        consumer.update_guest_configuration(gc)
    except Err as e:
        raise _typed(e) from None


def _received(m: types.Message) -> Message:
    return Message(m.topic, m.content_type, m.reply_to, m.data, m.metadata)


def handler(fn: Callable[[List[Message]], None]) -> Callable[[List[Message]], None]:
    """Makes ``fn`` the guest's handler.

    componentize-py looks for the export in the module it builds (``app``):
    this defines the ``Guest`` class there. ``fn`` is returned unchanged.
    """

    class Guest(exports.Guest):
        def handler(self, ms: List[types.Message]) -> None:
            try:
                fn([_received(m) for m in ms])
            except Error as e:
                raise Err(e._wit()) from None

    module = sys.modules[fn.__module__]
    if hasattr(module, "Guest"):
        raise TypeError(f"module {fn.__module__} already defines a guest handler")
    module.Guest = Guest
    return fn

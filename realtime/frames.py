"""Outgoing frames, encoded once per event and written straight to each local connection.

`Outgoing` carries one `data_update` frame: its text, its UTF-8 bytes and, per WebSocket server
factory, the fully framed bytes (autobahn's PreparedMessage). Under Daphne a connection's write is
then a single `transport.write` of bytes shared by every client of the unit. Under any other ASGI
server the text goes through the standard ASGI `send`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any


class Outgoing:
    __slots__ = ("seq", "text", "_bytes", "_prepared")

    def __init__(self, seq: int, text: str) -> None:
        self.seq = seq
        self.text = text
        self._bytes: bytes | None = None
        self._prepared: dict[int, Any] = {}

    def prepared(self, factory: Any) -> Any:
        found = self._prepared.get(id(factory))
        if found is None:
            if self._bytes is None:
                self._bytes = self.text.encode()
            found = self._prepared[id(factory)] = factory.prepareMessage(self._bytes)
        return found


def daphne_protocol(send: Callable) -> Any | None:
    """The autobahn protocol behind an ASGI `send` under Daphne (a partial of handle_reply)."""
    if isinstance(send, functools.partial) and getattr(send.func, "__name__", "") == "handle_reply":
        protocol = send.args[0] if send.args else None
        if protocol is not None and hasattr(protocol, "sendPreparedMessage"):
            return protocol
    return None


class FrameWriter:
    """Writes text frames to one connection, in order, without awaiting per frame."""

    __slots__ = ("protocol", "send", "_pending")

    def __init__(self, send: Callable) -> None:
        self.send = send
        self.protocol = daphne_protocol(send)
        self._pending: asyncio.Future | None = None

    def write(self, frame: Outgoing | str) -> None:
        protocol = self.protocol
        if protocol is not None:
            if protocol.state != protocol.STATE_OPEN:
                return
            if isinstance(frame, Outgoing):
                protocol.sendPreparedMessage(frame.prepared(protocol.factory))
            else:
                protocol.sendMessage(frame.encode())
            return
        # Generic ASGI server: chain the sends so they stay in order.
        text = frame.text if isinstance(frame, Outgoing) else frame
        previous = self._pending
        self._pending = asyncio.ensure_future(self._send_after(previous, text))

    async def _send_after(self, previous: asyncio.Future | None, text: str) -> None:
        if previous is not None and not previous.done():
            await previous
        await self.send({"type": "websocket.send", "text": text})

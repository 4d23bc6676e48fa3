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

    def close_standard(self, code: int) -> bool:
        """Close with a standard code (1011, 1013, ...) under Daphne; False when not possible here.

        autobahn's public sendClose accepts only 1000 and 3000-4999 (it raises for the rest), so a
        standard code goes straight to sendCloseFrame, as Daphne itself does for its 1011."""
        protocol = self.protocol
        if protocol is None:
            return False
        if protocol.state == protocol.STATE_OPEN:
            protocol.sendCloseFrame(code=code, isReply=False)
        return True

    async def _send_after(self, previous: asyncio.Future | None, text: str) -> None:
        if previous is not None and not previous.done():
            await previous
        await self.send({"type": "websocket.send", "text": text})


class _RequestPath:
    """What Daphne still reads of the handshake request after it: the path, for its access log."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


# Handshake state Daphne and autobahn keep on the protocol for the connection's whole life,
# although nothing reads it after the upgrade.
_HANDSHAKE_ATTRIBUTES = ("clean_headers", "http_request_data", "http_request_params", "http_request_uri")


def release_handshake_state(protocol) -> None:
    """Drop the handshake's headers, raw request and query parameters from a Daphne connection.

    They cost a few KB per idle connection (docs/performance.md) and hold the credentials of the
    URL (`?token=` / `?ticket=`) in memory for as long as the socket is open."""
    if protocol is None:
        return
    request = getattr(protocol, "request", None)
    if request is not None and not isinstance(request, _RequestPath):
        protocol.request = _RequestPath(request.path)
    for attribute in _HANDSHAKE_ATTRIBUTES:
        if getattr(protocol, attribute, None) is not None:
            setattr(protocol, attribute, None)
    if getattr(protocol, "http_headers", None):
        protocol.http_headers = {}

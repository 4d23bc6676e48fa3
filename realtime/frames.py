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

from twisted.internet import tcp


class Outgoing:
    __slots__ = ("seq", "text", "_bytes", "_prepared", "meta", "_activity_text", "_activity")

    def __init__(self, seq: int, text: str, activity: str = "") -> None:
        self.seq = seq
        self.text = text
        self._bytes: bytes | None = None
        self._prepared: dict[int, Any] = {}
        # What a subscription filter matches on (realtime/subscriptions.py), read from the frame
        # once per process, on the first filtered connection that needs it.
        self.meta: tuple | None = None
        # The `activity` frames of this update (one per line), for `activity=1` connections: made
        # into Outgoing frames of their own once, on the first connection that wants them.
        self._activity_text = activity
        self._activity: tuple[Outgoing, ...] | None = None

    def activity(self) -> tuple[Outgoing, ...]:
        if self._activity is None:
            self._activity = tuple(Outgoing(self.seq, line) for line in self._activity_text.splitlines() if line)
        return self._activity

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
    """Writes text frames to one connection, in order, without awaiting per frame.

    Under Daphne it also keeps the connection's memory bounded: while Twisted holds the transport
    paused (its 64 KiB send buffer is full: the client is not reading), every byte written is
    counted, and past `budget` bytes `on_overflow` is called (the consumer closes with 4008) instead
    of buffering on. `drained()` lets a writer of many frames (a resume's replay) wait for the
    client instead."""

    __slots__ = ("protocol", "send", "_pending", "paused", "backlog", "budget", "on_overflow", "_drained", "_corked")

    def __init__(self, send: Callable, budget: int | None = None, on_overflow: Callable[[], None] | None = None) -> None:
        self.send = send
        self.protocol = daphne_protocol(send)
        self._pending: asyncio.Future | None = None
        self.paused = False
        self.backlog = 0  # bytes written since the transport was paused
        self.budget = budget
        self.on_overflow = on_overflow
        self._drained: asyncio.Event | None = None
        self._corked: list[bytes] | None = None  # frames held between cork() and uncork()

    def cork(self) -> None:
        """Hold this connection's next frames until `uncork()`, which writes them in one go (under
        Daphne; elsewhere each frame is an ASGI send anyway)."""
        if self.protocol is not None and self._corked is None:
            self._corked = []

    def uncork(self) -> None:
        self._send_corked()
        self._corked = None

    def _send_corked(self) -> None:
        """Write what is held, in one go, and keep holding what comes next."""
        corked = self._corked
        if not corked:
            return
        self._corked = []
        # (a connection closed meanwhile, say past its slow-reader budget, gets nothing more: its
        # resume with last_seq fills what it missed)
        if self.protocol.state == self.protocol.STATE_OPEN:
            send_now(self.protocol.transport, corked[0] if len(corked) == 1 else b"".join(corked))

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.backlog = 0
        if self._drained is not None:
            self._drained.set()

    async def drained(self, timeout: float) -> bool:
        """Wait until the client has read enough for the transport to take more; False on timeout."""
        if not self.paused:
            return True
        self._drained = asyncio.Event()
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._drained = None

    def write(self, frame: Outgoing | str) -> None:
        protocol = self.protocol
        if protocol is not None:
            if protocol.state != protocol.STATE_OPEN:
                return
            if isinstance(frame, Outgoing):
                prepared = frame.prepared(protocol.factory)
                size = len(frame.text)
            else:
                data = frame.encode()
                size = len(data)
            if self.paused and self.budget is not None:
                self.backlog += size
                if self.backlog > self.budget:
                    if self.on_overflow is not None:
                        self.on_overflow()
                    return
            if isinstance(frame, Outgoing) and protocol._perMessageCompress is None and not protocol.send_queue:
                if self._corked is not None:
                    self._corked.append(prepared.payloadHybi)
                else:
                    send_now(protocol.transport, prepared.payloadHybi)
                return
            self._send_corked()  # what was held goes first: the order of a connection's frames is kept
            if isinstance(frame, Outgoing):
                protocol.sendPreparedMessage(prepared)  # compressed per connection, or queued behind
            else:
                protocol.sendMessage(data)
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


def send_now(transport, data: bytes) -> None:
    """Write `data` to a connection's socket at once when nothing is waiting before it, else through
    Twisted's buffer (`transport.write`), which keeps the order and the producer's pause.

    Twisted's own write always buffers and asks the reactor to wait for the socket to be writable:
    under the asyncio reactor that is `add_writer` (an epoll_ctl and a Handle), a turn of the loop,
    the send, then `remove_writer` (another epoll_ctl), with Twisted's logging context around each
    step: most of a delivery's cost when one update goes to thousands of idle connections, whose
    kernel buffers are empty (docs/performance.md, "20,000 again"). autobahn's `sendData` adds a debug
    line it formats on every call. A TLS transport, or one with anything buffered or closing, takes
    the usual way."""
    if (
        not isinstance(transport, tcp.Connection)
        or transport.dataBuffer
        or transport._tempDataBuffer
        or not transport.connected
        or transport.disconnecting
        or transport._writeDisconnected
        or getattr(transport, "TLS", False)
    ):
        transport.write(data)
        return
    try:
        sent = transport.socket.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:
        transport.write(data)  # Twisted's write path meets the error and closes the connection
        return
    if sent < len(data):
        transport.write(data[sent:])


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

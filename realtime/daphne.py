"""`python -m realtime.daphne [daphne options] backend.config.asgi:application`

Daphne's own command line, with these changes:
- its access log goes through the same credential redaction as every other log line. Daphne writes
  the access log straight to a stream (not through `logging`), and an HTTP request line keeps its
  query string, so `?token=` / `?ticket=` would land in it verbatim;
- a WebSocket that breaks the protocol (a message over --websocket-max-message-size, say) is closed
  with the reason's code (1009 message too big, 1002 protocol error) instead of a bare TCP drop that
  clients can only report as 1006;
- a WebSocket application's receive queue is an `Inbox` (a few dozen bytes idle) instead of an
  `asyncio.Queue` (three deques and an Event: ~3.2 KB per idle connection);
- its passes over every connection (timeouts and pings; reaping finished applications) run in
  slices with the reactor free between them (`_in_slices`), the garbage collector is tuned
  (`tune_gc`, `freeze_startup`), and slices and collections that hold the event loop too long are
  logged (`watch_stalls`);
- a closed connection leaves no reference cycle behind (`break_upgrade_cycle`, `_ReleasingProtocol`,
  `_Pass`): its objects are freed when it closes, not at the next full collection (issue 34:
  ~70 objects and ~5 KB per connect/close cycle were kept until then; docs/performance.md,
  "Clients that come and go");
- `permessage-deflate` (RFC 7692) can be negotiated: WS_DEFLATE=off (the default), `on`,
  `no_context_takeover` or `small` (a 512-byte window). Daphne never turns it on itself. Off by default because of what it costs
  (docs/performance.md, "Compression"): a compressor per connection (hundreds of KB once it has
  sent a message) and a compression per delivery, where an uncompressed update is framed once for
  every client of the unit.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import os
import time
from concurrent.futures import CancelledError
from functools import partial

import daphne.cli
import daphne.http_protocol
import daphne.server
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from autobahn.websocket.protocol import WebSocketServerProtocol
from daphne.access import AccessLogGenerator
from daphne.ws_protocol import WebSocketFactory
from twisted.internet.defer import succeed
from twisted.internet.protocol import connectionDone

from backend.common.logging import redact

from . import census

logger = logging.getLogger("realtime.daphne")


class RedactingAccessLog(AccessLogGenerator):
    def write_entry(self, host, date, request, status=None, length=None, ident=None, user=None):
        super().write_entry(host, date, redact(request), status, length, ident, user)


DEFLATE_MODES = ("off", "on", "no_context_takeover", "small")
# What the server's compressor is made with, per mode: autobahn's default is a 32 KiB window and
# memLevel 8 (about 260 KiB per connection); `small` is a 512-byte window and memLevel 1 (about
# 9 KiB), which any client's decompressor reads (a smaller window needs no announcing).
DEFLATE_OPTIONS = {"on": {}, "no_context_takeover": {"no_context_takeover": True},
                   "small": {"window_bits": 9, "mem_level": 1}}


def deflate_accept(mode: str):
    """autobahn's `perMessageCompressionAccept` for WS_DEFLATE, or None for off: the first
    permessage-deflate offer is accepted (with the server's own context reset per message for
    `no_context_takeover`); a client that offers nothing gets plain frames."""
    if mode not in DEFLATE_MODES:
        raise SystemExit(f"WS_DEFLATE must be one of {', '.join(DEFLATE_MODES)}, not {mode!r}")
    if mode == "off":
        return None

    def accept(offers):
        for offer in offers:
            if isinstance(offer, PerMessageDeflateOffer):
                return PerMessageDeflateOfferAccept(offer, **DEFLATE_OPTIONS[mode])
        return None

    return accept


class _ReleasingProtocol:
    """Mixed into Daphne's WebSocket protocol (autobahn 26.10): autobahn fires the connection's
    `is_closed` Deferred with the protocol itself, so every closed protocol sat in a reference cycle
    (protocol -> is_closed -> its result, the protocol) with everything it held, until a full
    collection. Once the connection is lost, `is_closed` is a fired Deferred without it."""

    def connectionLost(self, reason=connectionDone):  # noqa: N802 - Twisted's name
        try:
            super().connectionLost(reason)
        finally:
            if getattr(self, "is_closed", None) is not None and self.is_closed.called:
                self.is_closed = succeed(None)


def break_upgrade_cycle(process):
    """Daphne 4.2's `WebRequest.process`, then, for a request it upgraded to a WebSocket, the
    request taken out of its HTTP channel's list: the channel (Twisted's HTTPChannel, which no
    longer has a transport) and the request point at each other, and the pair, with the handshake's
    headers and body, stayed in memory until a full collection."""

    def process_and_release(request) -> None:
        process(request)
        channel = getattr(request, "channel", None)
        if request.transport is None and channel is not None and request in channel.requests:
            channel.requests.remove(request)

    return process_and_release


class ClosingWebSocketFactory(WebSocketFactory):
    """Daphne's WebSocket factory, closing with a code on protocol errors, negotiating
    permessage-deflate when WS_DEFLATE says so, and sharing its options with its connections.

    autobahn copies the factory's 29 protocol options (ping interval, size limits, ...) into every
    connection's own attributes when it connects; with Daphne's and autobahn's own state that made
    100 attributes, one over what a 128-slot attribute table holds, so every connection carried a
    256-slot one (3.3 KB). Here the factory keeps them on a protocol class of its own, which each
    connection reads them from (autobahn copies only what a connection does not already have), and
    publishes them there whenever they change."""

    def __init__(self, *args, **kwargs):
        # before autobahn's __init__, which sets the defaults (resetProtocolOptions)
        # (CONFIG_ATTRS empty: autobahn's per-connection copy is skipped, and so is the pformat of
        # all 29 for a debug line that it built on every connect whether or not it was logged)
        self.protocol = type(self.protocol.__name__, (_ReleasingProtocol, self.protocol),
                             {"__module__": self.protocol.__module__, "CONFIG_ATTRS": ()})
        super().__init__(*args, **kwargs)
        # autobahn's default drops the TCP connection on a protocol error; Daphne's own options
        # (set after this) leave failByDrop alone.
        self.setProtocolOptions(failByDrop=False)
        accept = deflate_accept(os.environ.get("WS_DEFLATE", "off").strip().lower() or "off")
        if accept is not None:
            self.setProtocolOptions(perMessageCompressionAccept=accept)

    def resetProtocolOptions(self):  # noqa: N802 - autobahn's name
        super().resetProtocolOptions()
        self._publish_options()

    def setProtocolOptions(self, *args, **kwargs):  # noqa: N802
        super().setProtocolOptions(*args, **kwargs)
        self._publish_options()

    def _publish_options(self) -> None:
        for name in WebSocketServerProtocol.CONFIG_ATTRS:
            value = getattr(self, name)
            # a function (perMessageCompressionAccept) on a class would be bound to the connection
            setattr(self.protocol, name, staticmethod(value) if hasattr(type(value), "__get__") else value)


class Inbox:
    """The receive queue of one WebSocket application, in place of Daphne's `asyncio.Queue()`.

    An ASGI application has one reader, and an idle connection's queue is empty: asyncio.Queue still
    keeps three deques (items, getters, putters) and an Event with a fourth, ~3.2 KB per connection
    (15 % of what an idle connection cost at 20,000: docs/performance.md). This keeps a deque only
    while messages wait and one future while its reader does. No library offers this (janus and
    aioprocessing are for threads and processes); asyncio's own is the one it replaces. Like
    asyncio.Queue, a message handed to a reader that is cancelled before it runs stays for the next
    `get`."""

    __slots__ = ("_messages", "_waiter")

    def __init__(self) -> None:
        self._messages: collections.deque | None = None
        self._waiter: asyncio.Future | None = None

    def put_nowait(self, message) -> None:
        if self._messages is None:
            self._messages = collections.deque()
        self._messages.append(message)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self):
        while self._messages is None:
            if self._waiter is not None:
                raise RuntimeError("an application's receive queue has one reader: receive() is already waiting")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._messages.popleft()
        if not self._messages:
            self._messages = None
        return message


def create_application(server, protocol, scope):
    """Daphne 4.2's `Server.create_application`, with an `Inbox` for WebSocket connections (they stay
    open for hours; an HTTP request keeps asyncio's queue for the few milliseconds it lives)."""
    assert "application_instance" not in server.connections[protocol]
    input_queue = Inbox() if scope.get("type") == "websocket" else asyncio.Queue()
    scope.setdefault("asgi", {"version": "3.0"})
    application_instance = server.application(scope=scope, receive=input_queue.get,
                                              send=partial(server.handle_reply, protocol))
    if protocol not in server.connections:
        return None
    server.connections[protocol]["application_instance"] = asyncio.ensure_future(
        application_instance, loop=asyncio.get_event_loop(),
    )
    return input_queue


def tune_gc() -> None:
    """Thousands of long-lived connection objects (about 90 tracked by the collector per connection)
    make the collector's passes long, and they hold the event loop. CPython's defaults (700,10,10)
    put gen-2 passes of tens of milliseconds in the middle of HTTP requests (the API -> client p99
    in docs/performance.md), so generation 0 waits for 50,000 new objects; generation 1 is
    collected after every second young collection instead of every eleventh, because it holds
    everything that survived since then: a connect burst filled it with up to a million objects,
    and one pass took 604 ms. GC_THRESHOLD="700,10,10" restores CPython's defaults."""
    thresholds = [int(n) for n in os.environ.get("GC_THRESHOLD", "50000,1,100").split(",")]
    gc.set_threshold(*thresholds)


def freeze_startup() -> None:
    """Move what start-up made (Django, DRF, Twisted, the URL configuration and every view it
    imports: ~145,000 objects) out of the collector's sight with `gc.freeze()`: they live as long
    as the process, and every full collection walked them all. Run once the reactor is running,
    after Daphne has loaded the application."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - imports the URL configuration, and with it every view
    gc.collect()
    gc.freeze()


GC_GENERATIONS = ("generation-0", "generation-1", "full")  # how a collection is named in the log
# Connections per turn of the reactor in Daphne's passes over them all (`_in_slices`).
CONNECTION_SLICE = 500
_stall_limit: list[float] = []  # REALTIME_STALL_WARN_MS in seconds, once the settings are loaded
_watching = False  # watch_stalls() was called


def _over_limit(took: float) -> bool:
    """Whether a pass that held the loop `took` seconds is worth a warning. Never loads the settings:
    they must load after backend/config/asgi.py has set the web tier's environment (no persistent
    connections, the pool), not before it from here."""
    from django.conf import settings

    if not _watching:
        return False
    if not _stall_limit:
        if not settings.configured:
            return False
        _stall_limit.append(settings.REALTIME_STALL_WARN_MS / 1000 or float("inf"))
    return took > _stall_limit[0]


def _note_pass(name: str, started: float, connections: int) -> None:
    took = time.monotonic() - started
    if _over_limit(took):
        logger.warning("daphne's %s took %.0f ms over %d connections", name, took * 1000, connections)


class _Pass:
    """One of Daphne's passes over every connection (`step(protocol)` for each), CONNECTION_SLICE
    connections per turn of the reactor, each slice timed; `again` runs `again_in` seconds after
    the last slice, as Daphne schedules its own passes. (An object, not a closure that schedules
    itself: that closure was a reference cycle holding the pass's list of connections, closed ones
    included, until a full collection.)"""

    __slots__ = ("server", "name", "step", "again_in", "again", "protocols")

    def __init__(self, server, name: str, step, again_in: float, again) -> None:
        self.server, self.name, self.step, self.again_in, self.again = server, name, step, again_in, again
        self.protocols = list(server.connections)

    def run(self, start: int) -> None:
        began = time.monotonic()
        batch = self.protocols[start : start + CONNECTION_SLICE]
        for protocol in batch:
            if protocol in self.server.connections:  # closed and reaped since the pass began: nothing to do
                self.step(protocol)
        _note_pass(self.name, began, len(batch))
        if start + CONNECTION_SLICE < len(self.protocols):
            daphne.server.reactor.callLater(0, self.run, start + CONNECTION_SLICE)
        else:
            self.protocols = []
            daphne.server.reactor.callLater(self.again_in, self.again)


def _in_slices(server, name: str, step, again_in: float, again) -> None:
    _Pass(server, name, step, again_in, again).run(0)


def sliced_timeout_checker(server) -> None:
    """Daphne's timeout-and-ping pass (`daphne.server.Server.timeout_checker`: each connection's
    `check_timeouts`, then the same again in 2 s), in slices with the reactor free to write and read
    between them. Done in one go, it held the event loop for 62-82 ms at ~4,500 connections every
    2 s (docs/performance.md, "The server-side trace"), and every update to every client of the
    process waited behind it."""
    _in_slices(server, "timeout_checker", lambda protocol: protocol.check_timeouts(), 2, server.timeout_checker)


def sliced_application_checker(server) -> None:
    """Daphne's reaping pass (`daphne.server.Server.application_checker`, every second), in slices:
    at 10,000 connections its one pass held the loop ~60 ms every second."""
    _in_slices(server, "application_checker", lambda protocol: reap_application(server, protocol), 1,
               server.application_checker)


def reap_application(server, protocol) -> None:
    """Daphne 4.2's `application_checker` for one connection, unchanged: cancel an application
    that outlived its disconnect by `application_close_timeout`, log (and report to the protocol)
    the exception of one that failed, forget one that finished, and forget the connection once both
    it and its application are gone."""
    details = server.connections[protocol]
    disconnected = details.get("disconnected", None)
    application_instance = details.get("application_instance", None)
    if disconnected and time.time() - disconnected > server.application_close_timeout:
        if application_instance and not application_instance.done():
            daphne.server.logger.warning(
                "Application instance %r for connection %s took too long to shut down and was killed.",
                application_instance, repr(protocol),
            )
            application_instance.cancel()
    if application_instance and application_instance.done():
        try:
            exception = application_instance.exception()
        except (CancelledError, asyncio.CancelledError):
            pass  # a cancelled application: nothing to report
        else:
            if exception:
                if isinstance(exception, KeyboardInterrupt):
                    server.stop()  # the protocol asks the server to exit (tests)
                else:
                    daphne.server.logger.error("Exception inside application: %s", exception, exc_info=exception)
                    if not disconnected:
                        protocol.handle_exception(exception)
        del details["application_instance"]
        application_instance = None
    if not application_instance and disconnected:
        del server.connections[protocol]


def watch_stalls() -> None:
    """The server-side trace of a late update, Daphne's part (the hub watches the loop itself:
    realtime/hub.py `_watch_loop`): log each pass of Daphne's own over its connections (its
    application checker every second, each slice of its timeout and ping checker) and each garbage
    collection, of any generation, that kept the event loop longer than REALTIME_STALL_WARN_MS.
    A young collection is not always short: one of generation 1 walks every object that survived
    the last `GC_THRESHOLD[1]` young ones, and a connect burst leaves a lot of those."""
    global _watching
    _watching = True
    _stall_limit.clear()
    collecting = {}

    def on_gc(phase, info):
        if phase == "start":
            collecting["at"] = time.monotonic()
        elif "at" in collecting:
            took = time.monotonic() - collecting.pop("at")
            if _over_limit(took):
                logger.warning("a %s garbage collection took %.0f ms (%d objects collected)",
                               GC_GENERATIONS[info["generation"]], took * 1000, info["collected"])

    gc.callbacks.append(on_gc)


def main() -> None:
    deflate_accept(os.environ.get("WS_DEFLATE", "off").strip().lower() or "off")  # a bad value stops here
    tune_gc()
    daphne.server.reactor.callWhenRunning(freeze_startup)
    daphne.server.Server.timeout_checker = sliced_timeout_checker
    daphne.server.Server.application_checker = sliced_application_checker
    daphne.server.Server.create_application = create_application
    daphne.http_protocol.WebRequest.process = break_upgrade_cycle(daphne.http_protocol.WebRequest.process)
    watch_stalls()
    census.install(daphne.server.reactor)  # REALTIME_CENSUS: the opt-in memory census (realtime/census.py)
    daphne.cli.AccessLogGenerator = RedactingAccessLog
    daphne.server.WebSocketFactory = ClosingWebSocketFactory
    daphne.cli.CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()

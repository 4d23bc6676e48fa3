"""Daphne's internals we replace (Daphne 4.2.3, `daphne.server.Server`, `daphne.http_protocol`,
`daphne.cli`), installed by `install()` from realtime/daphne.py's `main`:

- `Server.create_application`: a WebSocket application's receive queue is an `Inbox` (a few dozen
  bytes idle) instead of an `asyncio.Queue` (~3.2 KB per idle connection);
- `Server.timeout_checker` and `Server.application_checker`: their passes over every connection
  run in slices with the reactor free between them, each slice timed (realtime/stalls.py);
- `WebRequest.process`: a request upgraded to a WebSocket leaves its HTTP channel's list, so the
  pair is freed when the connection closes, not at the next full collection;
- `cli.AccessLogGenerator`: the access log goes through the credential redaction of every other log
  line (`?token=` / `?ticket=` would land in it verbatim).
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import CancelledError
from functools import partial

import daphne.cli
import daphne.http_protocol
import daphne.server
from daphne.access import AccessLogGenerator

from backend.common.logging import redact
from backend.common.upstream import check_version

from ..stalls import note_pass

LIBRARY = "daphne"
WRITTEN_AGAINST = "4.2.3"
# The passes over every connection and the receive queue's size are design choices of Daphne, not
# bugs: they could be proposed upstream as options (a slice size, a queue factory); the reference
# cycles broken here could be reported as leaks with tests/realtime/test_churn_memory.py's numbers.
UPSTREAM = "not reported yet (docs/architecture.md, \"Replaced internals\")"

class RedactingAccessLog(AccessLogGenerator):
    def write_entry(self, host, date, request, status=None, length=None, ident=None, user=None):
        super().write_entry(host, date, redact(request), status, length, ident, user)

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


# Connections per turn of the reactor in Daphne's passes over them all (`_in_slices`).
CONNECTION_SLICE = 500

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
        note_pass(self.name, began, len(batch))
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


def install() -> None:
    check_version(LIBRARY, WRITTEN_AGAINST)
    daphne.server.Server.timeout_checker = sliced_timeout_checker
    daphne.server.Server.application_checker = sliced_application_checker
    daphne.server.Server.create_application = create_application
    daphne.http_protocol.WebRequest.process = break_upgrade_cycle(daphne.http_protocol.WebRequest.process)
    daphne.cli.AccessLogGenerator = RedactingAccessLog

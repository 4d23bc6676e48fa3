"""autobahn's internals we replace (autobahn 26.10.2, through Daphne's `WebSocketFactory`), installed
by `install()` as Daphne's WebSocket factory:

- a WebSocket that breaks the protocol (a message over --websocket-max-message-size, say) is closed
  with the reason's code (1009, 1002) instead of a bare TCP drop that clients report as 1006;
- the factory's 29 protocol options live on a protocol class of its own instead of being copied into
  every connection (3.3 KB per connection);
- a closed connection's `is_closed` Deferred no longer holds the protocol (a reference cycle);
- `permessage-deflate` (RFC 7692) is negotiated when WS_DEFLATE says so (Daphne never turns it on):
  `on`, `no_context_takeover` or `small` (a 512-byte window); off by default for what it costs, a
  compressor per connection and a compression per delivery (docs/performance.md, "Compression").
"""

from __future__ import annotations

import os

import daphne.server
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from autobahn.websocket.protocol import WebSocketServerProtocol
from daphne.ws_protocol import WebSocketFactory
from twisted.internet.defer import succeed
from twisted.internet.protocol import connectionDone

from backend.common.upstream import check_version

LIBRARY = "autobahn"
WRITTEN_AGAINST = "26.10.2"
# The per-connection copy of the options and the is_closed cycle could be reported upstream
# (crossbario/autobahn-python) with tests/realtime/test_connection_cost.py's measurements.
UPSTREAM = "not reported yet (docs/architecture.md, \"Replaced internals\")"

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


def install() -> None:
    check_version(LIBRARY, WRITTEN_AGAINST)
    daphne.server.WebSocketFactory = ClosingWebSocketFactory

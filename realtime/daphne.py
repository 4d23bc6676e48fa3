"""`python -m realtime.daphne [daphne options] backend.config.asgi:application`

Daphne's own command line, with two changes:
- its access log goes through the same credential redaction as every other log line. Daphne writes
  the access log straight to a stream (not through `logging`), and an HTTP request line keeps its
  query string, so `?token=` / `?ticket=` would land in it verbatim;
- a WebSocket that breaks the protocol (a message over --websocket-max-message-size, say) is closed
  with the reason's code (1009 message too big, 1002 protocol error) instead of a bare TCP drop that
  clients can only report as 1006;
- `permessage-deflate` (RFC 7692) can be negotiated: WS_DEFLATE=off (the default), `on`,
  `no_context_takeover` or `small` (a 512-byte window). Daphne never turns it on itself. Off by default because of what it costs
  (docs/performance.md, "Compression"): a compressor per connection (hundreds of KB once it has
  sent a message) and a compression per delivery, where an uncompressed update is framed once for
  every client of the unit.
"""

from __future__ import annotations

import os

import daphne.cli
import daphne.server
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from daphne.access import AccessLogGenerator
from daphne.ws_protocol import WebSocketFactory

from backend.common.logging import redact


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


class ClosingWebSocketFactory(WebSocketFactory):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # autobahn's default drops the TCP connection on a protocol error; Daphne's own options
        # (set after this) leave failByDrop alone.
        self.setProtocolOptions(failByDrop=False)
        accept = deflate_accept(os.environ.get("WS_DEFLATE", "off").strip().lower() or "off")
        if accept is not None:
            self.setProtocolOptions(perMessageCompressionAccept=accept)


def tune_gc() -> None:
    """Thousands of long-lived connection objects make every full garbage collection walk them all:
    with the default thresholds, gen-2 passes of tens of milliseconds land in the middle of HTTP
    requests (the API -> client p99 in docs/performance.md). A larger gen-0 threshold makes
    collections rarer; GC_THRESHOLD="700,10,10" restores CPython's defaults."""
    import gc
    import os

    thresholds = [int(n) for n in os.environ.get("GC_THRESHOLD", "50000,20,100").split(",")]
    gc.set_threshold(*thresholds)


def watch_stalls() -> None:
    """The server-side trace of a late update, Daphne's part (the hub watches the loop itself:
    realtime/hub.py `_watch_loop`): log each pass of Daphne's own over every connection (its
    application checker every second, its timeout and ping checker every two) and each full garbage
    collection that kept the event loop longer than REALTIME_STALL_WARN_MS."""
    import gc
    import logging
    import time

    logger = logging.getLogger("realtime.daphne")

    known: list[float] = []

    def limit() -> float:
        # Never loads the settings: they must load after backend/config/asgi.py has set the web
        # tier's environment (no persistent connections, the pool), not here before it.
        from django.conf import settings

        if not known:
            if not settings.configured:
                return float("inf")
            known.append(settings.REALTIME_STALL_WARN_MS / 1000 or float("inf"))
        return known[0]

    def timed(method):
        def run(server):
            started = time.monotonic()
            try:
                return method(server)
            finally:
                took = time.monotonic() - started
                if took > limit():
                    logger.warning("daphne's %s took %.0f ms over %d connections", method.__name__, took * 1000,
                                   len(server.connections))

        run.__name__ = method.__name__
        return run

    for name in ("application_checker", "timeout_checker"):
        setattr(daphne.server.Server, name, timed(getattr(daphne.server.Server, name)))

    collecting = {}

    def on_gc(phase, info):
        if info["generation"] != 2:
            return
        if phase == "start":
            collecting["at"] = time.monotonic()
        elif "at" in collecting:
            took = time.monotonic() - collecting.pop("at")
            if took > limit():
                logger.warning("a full garbage collection took %.0f ms (%d objects collected)", took * 1000,
                               info["collected"])

    gc.callbacks.append(on_gc)


def main() -> None:
    deflate_accept(os.environ.get("WS_DEFLATE", "off").strip().lower() or "off")  # a bad value stops here
    tune_gc()
    watch_stalls()
    daphne.cli.AccessLogGenerator = RedactingAccessLog
    daphne.server.WebSocketFactory = ClosingWebSocketFactory
    daphne.cli.CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()

"""`python -m realtime.daphne [daphne options] backend.config.asgi:application`

Daphne's own command line, with two changes:
- its access log goes through the same credential redaction as every other log line. Daphne writes
  the access log straight to a stream (not through `logging`), and an HTTP request line keeps its
  query string, so `?token=` / `?ticket=` would land in it verbatim;
- a WebSocket that breaks the protocol (a message over --websocket-max-message-size, say) is closed
  with the reason's code (1009 message too big, 1002 protocol error) instead of a bare TCP drop that
  clients can only report as 1006.
"""

from __future__ import annotations

import daphne.cli
import daphne.server
from daphne.access import AccessLogGenerator
from daphne.ws_protocol import WebSocketFactory

from backend.common.logging import redact


class RedactingAccessLog(AccessLogGenerator):
    def write_entry(self, host, date, request, status=None, length=None, ident=None, user=None):
        super().write_entry(host, date, redact(request), status, length, ident, user)


class ClosingWebSocketFactory(WebSocketFactory):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # autobahn's default drops the TCP connection on a protocol error; Daphne's own options
        # (set after this) leave failByDrop alone.
        self.setProtocolOptions(failByDrop=False)


def tune_gc() -> None:
    """Thousands of long-lived connection objects make every full garbage collection walk them all:
    with the default thresholds, gen-2 passes of tens of milliseconds land in the middle of HTTP
    requests (the API -> client p99 in docs/performance.md). A larger gen-0 threshold makes
    collections rarer; GC_THRESHOLD="700,10,10" restores CPython's defaults."""
    import gc
    import os

    thresholds = [int(n) for n in os.environ.get("GC_THRESHOLD", "50000,20,100").split(",")]
    gc.set_threshold(*thresholds)


def main() -> None:
    tune_gc()
    daphne.cli.AccessLogGenerator = RedactingAccessLog
    daphne.server.WebSocketFactory = ClosingWebSocketFactory
    daphne.cli.CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()

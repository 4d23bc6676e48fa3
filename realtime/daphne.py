"""`python -m realtime.daphne [daphne options] backend.config.asgi:application`

Daphne's own command line, with one change: its access log goes through the same credential
redaction as every other log line. Daphne writes the access log straight to a stream (not through
`logging`), and an HTTP request line keeps its query string, so `?token=` / `?ticket=` would land
in it verbatim.
"""

from __future__ import annotations

import daphne.cli
from daphne.access import AccessLogGenerator

from backend.common.logging import redact


class RedactingAccessLog(AccessLogGenerator):
    def write_entry(self, host, date, request, status=None, length=None, ident=None, user=None):
        super().write_entry(host, date, redact(request), status, length, ident, user)


def main() -> None:
    daphne.cli.AccessLogGenerator = RedactingAccessLog
    daphne.cli.CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()

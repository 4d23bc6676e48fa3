"""Container health check: `python compose/healthcheck.py [URL]` exits 0 when URL answers 200.

Without a URL it checks the web service: GET /healthz on the Daphne of this container. Django
answers only for a name in ALLOWED_HOSTS, so the request carries the first one as its Host
(`.example.com` -> `example.com`, `*` -> `localhost`). Standard library only: it runs in the image
without Django, many times a minute.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def web_host() -> str:
    allowed = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "").split(",") if h.strip()]
    host = allowed[0] if allowed else "localhost"
    return "localhost" if host == "*" else host.lstrip(".")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        request = urllib.request.Request(argv[1])
    else:
        port = os.environ.get("PORT", "8000")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/healthz", headers={"Host": web_host()})
    try:
        with urllib.request.urlopen(request, timeout=float(os.environ.get("HEALTHCHECK_TIMEOUT", "4"))) as answer:
            status = answer.status
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy; say which
        print(f"unhealthy: {request.full_url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: {request.full_url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

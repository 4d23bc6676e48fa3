"""The console page and the client module are served by Django itself (no build step, no CDN)."""

from __future__ import annotations

import re

from django.test import Client


def test_the_console_page_loads_its_modules_from_static_under_a_strict_csp():
    # when the root page is fetched
    response = Client().get("/", HTTP_HOST="127.0.0.1:8000")

    # then it is the console, loading same-origin files only
    assert response.status_code == 200
    html = response.content.decode()
    assert '<script type="module" src="/static/realtime/console.js"></script>' in html
    assert 'href="/static/realtime/console.css"' in html
    assert "<script>" not in html and "style=" not in html  # nothing inline: the CSP forbids it
    csp = response["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "style-src 'self';" in csp
    assert "connect-src 'self' ws://127.0.0.1:8000 wss://127.0.0.1:8000;" in csp
    assert response["Cache-Control"] == "no-store"


def test_the_client_module_is_served_as_javascript_at_its_documented_url():
    # when an SPA imports /static/realtime/updates-client.js
    response = Client().get("/static/realtime/updates-client.js")

    # then it is JavaScript (browsers refuse modules of any other type), exporting the documented API
    assert response.status_code == 200
    assert response["Content-Type"].split(";")[0] == "text/javascript"
    source = b"".join(response.streaming_content).decode()
    exported = set(re.findall(r"^export (?:class|function|const) (\w+)", source, re.MULTILINE))
    assert {
        "UpdatesClient", "invalidationKeys", "ALL_QUERY_KEYS", "backoffDelay", "backoffCeiling", "SeqTracker",
        "unpackUpdates", "closeAction", "buildSocketUrl", "STATUS", "CLOSE_CODES", "DEFAULTS",
    } <= exported

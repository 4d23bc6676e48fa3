"""The console page and the client kit's bundle are served by Django itself (no CDN; the bundle is built
from clients/js and committed, so serving it needs no Node: docs/client.md)."""

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


def served_module(path: str) -> str:
    response = Client().get(path)
    # JavaScript: browsers refuse modules of any other type
    assert response.status_code == 200, path
    assert response["Content-Type"].split(";")[0] == "text/javascript", path
    return b"".join(response.streaming_content).decode()


def exported_names(source: str) -> set[str]:
    """The names a (minified) ES module exports: `export{a as B,c}` clauses and `export class/function/const`."""
    names = set(re.findall(r"^export (?:class|function|const) (\w+)", source, re.MULTILINE))
    for clause in re.findall(r"export\s*\{([^}]*)\}", source):
        names |= {item.split(" as ")[-1].strip() for item in clause.split(",") if item.strip()}
    return names


def test_the_client_module_is_served_as_javascript_at_its_documented_url():
    # when an SPA imports the kit's bundle, or /static/realtime/updates-client.js (its old address)
    bundle = served_module("/static/realtime/kit/records-client.js")
    old_address = served_module("/static/realtime/updates-client.js")

    # then the bundle exports the documented API, and the old address re-exports the bundle whole
    assert {
        "UpdatesClient", "invalidationKeys", "ALL_QUERY_KEYS", "backoffDelay", "backoffCeiling", "SeqTracker",
        "unpackUpdates", "closeAction", "buildSocketUrl", "STATUS", "CLOSE_CODES", "DEFAULTS",
        "createRestClient", "readWatermark", "PROTOCOL_VERSION",
    } <= exported_names(bundle)
    assert "export * from './kit/records-client.js';" in old_address

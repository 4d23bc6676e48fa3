"""The console page and the client kit's bundle are served by Django itself (no CDN; the bundle is built
from clients/js and committed, so serving it needs no Node: docs/client.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from django.test import Client

from backend.accounts.vocabulary import ENTRY_WORDS as ACCOUNTS_WORDS
from backend.audit.vocabulary import action_words
from backend.records.actions import ACTIONS, SIGNED_ACTS, vocabulary
from backend.records.models import CrateStatus, RequestStatus


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


CONSOLE_SCRIPTS = sorted(Path("realtime/static/realtime").glob("console*.js")) + sorted(
    Path("realtime/static/realtime/console").glob("*.js")
) + [Path("realtime/static/realtime/records-qa.js")]


def test_the_console_gets_every_action_word_from_the_server_and_keeps_no_table_of_its_own():
    # when the console page is fetched
    html = Client().get("/", HTTP_HOST="127.0.0.1:8000").content.decode()

    # then it carries the server's vocabulary as data (json_script: no script runs, the CSP stands):
    # every spelling of each request action and signed act (backend/records/actions.py), and a word
    # for every action the audit trail can record (the trail refuses any other: tests/backend/audit/
    # test_vocabulary.py), user access changes and signatures included
    found = re.search(r'<script id="vocabulary" type="application/json">(.*?)</script>', html, re.DOTALL)
    received = json.loads(found.group(1))
    assert received == {**vocabulary(), "entries": action_words()}
    assert {a.past for a in (*ACTIONS.values(), *SIGNED_ACTS.values())} <= set(received["entries"])
    assert set(ACCOUNTS_WORDS) <= set(received["entries"]) and all(received["entries"].values())
    assert {"signature_not_applied", "signin_locked", "signin_unlocked", "reactivated"} <= set(received["entries"])
    assert {name: a["meaning"] for name, a in received["actions"].items()} == {n: a.meaning for n, a in ACTIONS.items()}
    # and the bulk box offers exactly the server's actions
    bulk_box = html.split('data-testid="bulk-action"')[1].split("</select>")[0]
    assert re.findall(r'<option value="(\w+)">', bulk_box) == list(ACTIONS)

    # and no script of the console spells an action itself: no table keyed by an action (a request
    # action, or an audit action that is not also a status), and no signature meaning written out
    statuses = {*RequestStatus.values, *CrateStatus.values}
    keys = (set(ACTIONS) | set(action_words())) - statuses
    table_row = re.compile(r"\b(" + "|".join(sorted(keys)) + r")\s*:\s*['\"`](?!(?:true|false)['\"`])")  # not a flag
    for script in CONSOLE_SCRIPTS:
        source = script.read_text()
        assert not table_row.findall(source), (script, table_row.findall(source))
        assert not re.search(r"\bmeaning\s*:\s*['\"`]", source), script
        assert not re.search(r"\b(ACTION_WORDS|DONE_WORD|MEANING|ACTION_LABEL|ACTION_PATH)\s*=\s*\{", source), script
        assert "'returned'" not in source and "filed this request, so" not in source, script

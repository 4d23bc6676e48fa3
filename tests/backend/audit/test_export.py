"""Exporting the audit trail (GET /api/audit-trail/export/, manage.py export_audit_trail): the same
entries as the API, in chain order, with the list's visibility and filters, streamed page by page."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.http import StreamingHttpResponse
from django.test import AsyncClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from backend.accounts.models import User
from backend.audit import export
from backend.audit.api import AuditEntrySerializer
from backend.audit.context import origin
from backend.audit.models import AuditEntry, Signature
from backend.audit.selectors import audit_verify
from backend.audit.services import Entry, journal_write
from tests.support.auth import access_token
from tests.support.factories import UnitFactory, unit_staff

pytestmark = pytest.mark.django_db


@pytest.fixture
def north():
    return unit_staff(UnitFactory(code="north"))


@pytest.fixture
def south():
    return unit_staff(UnitFactory(code="south"))


def write(actor, count=1, *, entity="crate", action="created", reason="", changes=None, signature=None,
          client=("10.0.0.7", "console/3")) -> list[AuditEntry]:
    """`count` entries by `actor` in their unit, written by the one writer (a real chain)."""
    drafts = [
        Entry(unit_id=actor.unit_id, entity=entity, record_id=uuid.uuid4(), record_number=f"CR-2026-{i:05d}",
              action=action, changes=changes if changes is not None else {"location": [None, f"Aisle {i}"]},
              reason=reason, version=1, signature_id=signature.id if signature else None)
        for i in range(count)
    ]
    with origin(client_ip=client[0], user_agent=client[1]), transaction.atomic():
        return journal_write(actor=actor, entries=drafts)


def sign(user, meaning="approved") -> Signature:
    return Signature.objects.create(
        unit_id=user.unit_id, signer_id=user.id, signer_username=user.username, signer_full_name="Ada Lovelace",
        meaning=meaning, action="approve", entity="withdrawal", signed_at=timezone.now(),
    )


def chain(unit_id=None):
    entries = AuditEntry.objects.select_related("signature").order_by("unit_id", "position")
    return list(entries.filter(unit_id=unit_id) if unit_id else entries)


def api_json(entries) -> list[dict]:
    """The entries exactly as the API's JSON shows them."""
    return json.loads(JSONRenderer().render(AuditEntrySerializer(entries, many=True).data))


def ndjson(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode()
    assert body.endswith("\n") or body == ""
    return [json.loads(line) for line in body.splitlines()]


def csv_rows(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode()
    reader = csv.reader(io.StringIO(body, newline=""))
    header = next(reader)
    assert tuple(header) == export.CSV_COLUMNS
    return [dict(zip(header, row, strict=True)) for row in reader]


# --- the document ------------------------------------------------------------------------------------


def test_entry_document_is_exactly_the_apis_entry_with_and_without_a_signature(north):
    signature = sign(north["approver"])
    plain = write(north["store"], changes={"location": ["Aisle 1", "Vault ü"], "n": [1, 2]})[0]
    signed = write(north["approver"], entity="withdrawal", action="approved", reason="ok", signature=signature)[0]

    for entry in AuditEntry.objects.select_related("signature").filter(id__in=[plain.id, signed.id]):
        document = export.entry_document(entry)
        (expected,) = api_json([entry])
        # the same fields, in the same order, with the same JSON values
        assert list(document) == list(AuditEntrySerializer(entry).data) == list(expected)
        assert document == expected
        assert json.loads(json.dumps(document)) == document  # JSON types only
    assert export.entry_document(AuditEntry.objects.get(id=signed.id))["signature"]["full_name"] == "Ada Lovelace"
    assert export.entry_document(AuditEntry.objects.get(id=plain.id))["signature"] is None


# --- the endpoint ------------------------------------------------------------------------------------


def test_ndjson_is_the_units_entries_oldest_first_in_chain_order(api, north, south):
    write(north["store"], 3)
    write(north["approver"], entity="withdrawal", action="approved", signature=sign(north["approver"]))
    write(south["store"], 2)  # another unit's

    response = api(north["requester"]).get("/api/audit-trail/export/?format=ndjson")

    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    assert re.fullmatch(
        r'attachment; filename="audit-trail-north-\d{8}T\d{6}Z\.ndjson"', response["Content-Disposition"]
    )
    documents = ndjson(response)
    assert documents == api_json(chain(north["store"].unit_id))
    assert [d["position"] for d in documents] == [1, 2, 3, 4]
    assert documents[3]["signature"]["meaning"] == "approved"


def test_csv_is_the_same_entries_flattened(api, north, south):
    signature = sign(north["approver"])
    write(north["store"], 2, reason="moved")
    write(north["approver"], entity="withdrawal", action="approved", signature=signature, reason="fine")
    write(south["store"], 1)

    response = api(north["admin"]).get("/api/audit-trail/export/", {"format": "csv"})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(r'attachment; filename="audit-trail-north-\d{8}T\d{6}Z\.csv"', response["Content-Disposition"])
    rows = csv_rows(response)
    expected = api_json(chain(north["store"].unit_id))
    assert len(rows) == len(expected) == 3
    for row, entry in zip(rows, expected, strict=True):
        sig = entry["signature"] or {}
        assert row == {
            "id": entry["id"], "unit": entry["unit"], "position": str(entry["position"]), "at": entry["at"],
            "actor_id": entry["actor"]["id"], "actor_username": entry["actor"]["username"],
            "actor_full_name": entry["actor"]["full_name"], "actor_role": entry["actor"]["role"],
            "entity": entry["entity"], "record_id": entry["record_id"], "record_number": entry["record_number"],
            "action": entry["action"], "version": str(entry["version"]),
            "changes": json.dumps(entry["changes"], separators=(",", ":"), sort_keys=True), "reason": entry["reason"],
            "signature_id": sig.get("id", ""), "signature_meaning": sig.get("meaning", ""),
            "signature_signed_at": sig.get("signed_at", ""), "signature_signer": sig.get("signer", ""),
            "signature_full_name": sig.get("full_name", ""), "job_id": "", "client_ip": "10.0.0.7",
            "user_agent": "console/3", "seq": "", "hash": entry["hash"], "prev_hash": entry["prev_hash"],
            "reviewed": "false",
        }
    assert rows[2]["signature_meaning"] == "approved" and rows[2]["signature_signer"] == north["approver"].username


def test_csv_is_the_default_and_accept_can_ask_for_ndjson(api, north):
    write(north["store"], 2)
    client = api(north["store"])

    default = client.get("/api/audit-trail/export/")
    accepted = client.get("/api/audit-trail/export/", HTTP_ACCEPT="application/x-ndjson")

    assert default["Content-Type"].startswith("text/csv") and len(csv_rows(default)) == 2
    assert accepted["Content-Type"].startswith("application/x-ndjson") and len(ndjson(accepted)) == 2


def test_the_exports_filters_are_the_lists(api, north):
    write(north["store"], 2)
    write(north["approver"], entity="withdrawal", action="approved")
    (watched,) = write(north["store"], action="relocated", changes={"location": ["A", "B"]})
    client = api(north["admin"])
    later = (timezone.now() + timedelta(hours=1)).isoformat()

    cases = {
        "entity": ({"entity": "withdrawal"}, {"action": "approved"}),
        "actor": ({"actor": north["approver"].username}, {"entity": "withdrawal"}),
        "action": ({"action": "relocated"}, {"record": str(watched.record_id)}),
        "record": ({"record": str(watched.record_id)}, {"action": "relocated"}),
        "since": ({"since": later}, {"until": "2000-01-01T00:00:00Z"}),
    }
    for name, (params, same_as) in cases.items():
        exported = ndjson(client.get("/api/audit-trail/export/", {"format": "ndjson", **params}))
        listed = client.get("/api/audit-trail/", {**params, "page_size": 500}).json()["results"]
        assert exported == list(reversed(listed)), name  # the list's entries, oldest first
        assert exported == ndjson(client.get("/api/audit-trail/export/", {"format": "ndjson", **same_as})), name
    until = ndjson(client.get("/api/audit-trail/export/", {"format": "ndjson", "until": later}))
    assert len(until) == 4


def test_another_units_entries_never_appear_and_a_superuser_exports_all_or_one(api, north, south):
    write(north["store"], 2)
    write(south["store"], 3)
    root = User.objects.create_superuser(username="root", password="x-2026-root-pass")

    theirs = ndjson(api(south["admin"]).get("/api/audit-trail/export/?format=ndjson"))
    # a unit's users cannot widen it with ?unit=
    widened = ndjson(api(south["admin"]).get(f"/api/audit-trail/export/?format=ndjson&unit={north['store'].unit_id}"))
    everything = api(root).get("/api/audit-trail/export/?format=ndjson")
    one = api(root).get(f"/api/audit-trail/export/?format=csv&unit={north['store'].unit_id}")

    assert {d["unit"] for d in theirs} == {str(south["store"].unit_id)} and len(theirs) == 3
    assert widened == []
    assert 'filename="audit-trail-all-' in everything["Content-Disposition"]
    # every unit, each unit's chain in order, units by id
    assert ndjson(everything) == api_json(chain())
    assert 'filename="audit-trail-north-' in one["Content-Disposition"]
    assert [r["position"] for r in csv_rows(one)] == ["1", "2"]


def test_anonymous_is_refused_401_in_json(api):
    response = api().get("/api/audit-trail/export/?format=csv")

    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_an_unknown_format_is_400_invalid(api, north, fmt):
    response = api(north["admin"]).get(f"/api/audit-trail/export/?format={fmt}")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == "invalid" and body["details"] == {"format": ["One of csv, ndjson."]}


def test_a_bad_filter_is_400_invalid_in_json(api, north):
    response = api(north["admin"]).get("/api/audit-trail/export/?format=csv&since=yesterday")

    assert (response.status_code, response["Content-Type"]) == (400, "application/json")
    assert response.json()["code"] == "invalid"


def test_formula_like_values_are_quoted_in_csv(api, north):
    for value in ("=HYPERLINK(\"http://x\")", "+1+1", "-2", "@SUM(A1)", "\tx", "\rx"):
        assert export.csv_cell(value) == "'" + value
    assert export.csv_cell("plain - text") == "plain - text" and export.csv_cell(None) == ""
    write(north["store"], reason="=cmd|' /C calc'!A0", changes={})
    north["store"].first_name, north["store"].last_name = "@evil", "x"
    north["store"].save()
    write(north["store"], reason="-1", client=("10.0.0.1", "+agent"))

    rows = csv_rows(api(north["admin"]).get("/api/audit-trail/export/?format=csv"))

    assert rows[0]["reason"] == "'=cmd|' /C calc'!A0"
    assert (rows[1]["reason"], rows[1]["actor_full_name"], rows[1]["user_agent"]) == ("'-1", "'@evil x", "'+agent")
    # (NDJSON is data, not a spreadsheet: its values are the entries' own)
    assert ndjson(api(north["admin"]).get("/api/audit-trail/export/?format=ndjson"))[0]["reason"] == "=cmd|' /C calc'!A0"


def test_the_export_streams_page_by_page(api, north, monkeypatch):
    monkeypatch.setattr(export, "EXPORT_PAGE", 3)
    write(north["store"], 10)
    client = api(north["admin"])

    with CaptureQueriesContext(connection) as answering:
        response = client.get("/api/audit-trail/export/?format=ndjson")
    with CaptureQueriesContext(connection) as streaming:
        chunks = list(response.streaming_content)

    # the view answers before reading a single entry; then each chunk is one page, one query
    reads = [q["sql"] for q in streaming.captured_queries if '"audit_auditentry"' in q["sql"]]
    assert not [q for q in answering.captured_queries if 'FROM "audit_auditentry"' in q["sql"]]
    assert isinstance(response, StreamingHttpResponse) and response.streaming
    assert [len(c.splitlines()) for c in chunks] == [3, 3, 3, 1]
    assert len(reads) == 4 and all("LIMIT 3" in sql for sql in reads)
    assert len(streaming.captured_queries) <= len(reads) + 1  # (+ the units)


def test_the_export_streams_asynchronously_under_asgi(north):
    write(north["store"], 5)
    token = access_token(north["admin"])

    async def fetch():
        response = await AsyncClient().get(
            "/api/audit-trail/export/?format=ndjson", headers={"Authorization": f"Bearer {token}"}
        )
        return response, [chunk async for chunk in response.streaming_content]

    response, chunks = async_to_sync(fetch)()

    assert response.status_code == 200 and response.is_async
    assert [json.loads(line) for line in b"".join(chunks).decode().splitlines()] == api_json(chain(north["store"].unit_id))


def hash_of(document: dict) -> str:
    """An entry's hash from its NDJSON line, as docs/audit.md ("Export") tells an inspector: without
    `hash` and `reviewed` (a review's fact, not the entry's) and `signature_digest` where it is null,
    `signature` as its id, `at` in UTC to the microsecond; SHA-256 of the sorted, compact JSON."""
    payload = {name: value for name, value in document.items() if name not in ("hash", "reviewed")}
    if payload["signature_digest"] is None:
        del payload["signature_digest"]
    payload["signature"] = document["signature"]["id"] if document["signature"] else None
    payload["at"] = datetime.fromisoformat(document["at"]).astimezone(UTC).isoformat(timespec="microseconds")
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def test_an_inspector_can_recompute_the_chain_from_the_file(api, north):
    write(north["store"], 3, changes={"note": ["", "naïve – ü"]})
    write(north["approver"], entity="withdrawal", action="approved", signature=sign(north["approver"]))
    documents = ndjson(api(north["admin"]).get("/api/audit-trail/export/?format=ndjson"))

    assert audit_verify([north["store"].unit_id]).ok and len(documents) == 4
    assert documents[0]["prev_hash"] == "0" * 64
    assert all(later["prev_hash"] == earlier["hash"] for earlier, later in pairwise(documents))
    assert [hash_of(d) for d in documents] == [d["hash"] for d in documents]


# --- the command -------------------------------------------------------------------------------------


def test_the_command_writes_the_same_export(north, south, tmp_path):
    write(north["store"], 2)
    write(south["store"], 3)
    out = io.StringIO()

    call_command("export_audit_trail", "--format", "ndjson", "--unit", "south", stdout=out, stderr=io.StringIO())
    call_command("export_audit_trail", "--format", "csv", "--output", str(tmp_path / "all.csv"), stderr=io.StringIO())

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines == api_json(chain(south["store"].unit_id))
    with (tmp_path / "all.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["unit"], r["position"]) for r in rows] == [(str(e.unit_id), str(e.position)) for e in chain()]
    assert not list(tmp_path.glob("*.part"))


def test_the_command_filters_by_time_and_refuses_unknown_units(north):
    write(north["store"], 2)
    now = timezone.now()
    out = io.StringIO()

    call_command("export_audit_trail", "--format", "ndjson", "--since", (now + timedelta(hours=1)).isoformat(),
                 stdout=out, stderr=io.StringIO())
    assert out.getvalue() == ""
    call_command("export_audit_trail", "--format", "ndjson", "--until", (now + timedelta(hours=1)).isoformat(),
                 stdout=out, stderr=io.StringIO())
    assert len(out.getvalue().splitlines()) == 2
    with pytest.raises(CommandError, match="no such unit: nowhere"):
        call_command("export_audit_trail", "--format", "csv", "--unit", "nowhere")
    with pytest.raises(CommandError, match="not a date"):
        call_command("export_audit_trail", "--format", "csv", "--since", "yesterday")

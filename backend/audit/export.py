"""The audit trail exported whole (or filtered) for an inspector: CSV or NDJSON, streamed in
constant memory, in chain order, by `GET /api/audit-trail/export/` and `manage.py
export_audit_trail` alike.

- Order: unit by unit (by unit id), each unit's entries by `position`, oldest first: the chain's own
  order, so whoever holds the file can recompute every hash and link (docs/audit.md, "Export").
- Memory: entries are read in keyset pages of `EXPORT_PAGE` (`position > last`, per unit): one
  query per page, no server-side cursor held open while a slow client downloads, and every page is
  encoded into one chunk and forgotten before the next is read.
- NDJSON: one `entry_document` per line, exactly the API's entry (AuditEntrySerializer; a test keeps
  them equal). CSV: the same entry flattened into `CSV_COLUMNS`, formula-injection guarded.
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import QuerySet
from rest_framework import serializers

from .models import AuditEntry

EXPORT_PAGE = 2000  # entries per read, and per chunk of the response
FORMATS = ("csv", "ndjson")
MEDIA_TYPES = {"csv": "text/csv", "ndjson": "application/x-ndjson"}

# The API's own datetime rendering (settings' timezone, `Z` for UTC): the export reads like the API.
_datetime = serializers.DateTimeField().to_representation


def _str(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def entry_document(entry: AuditEntry) -> dict[str, Any]:
    """One entry as the API shows it (the fields and order of AuditEntrySerializer, JSON types), built
    without a serializer: the export writes a million of them."""
    signature = None
    if entry.signature_id:
        sig = entry.signature
        signature = {
            "id": str(sig.id), "meaning": sig.meaning, "signed_at": _datetime(sig.signed_at),
            "signer": sig.signer_username, "full_name": sig.signer_full_name,
        }
    return {
        "id": str(entry.id),
        "unit": str(entry.unit_id),
        "position": entry.position,
        "at": _datetime(entry.at),
        "actor": {
            "id": _str(entry.actor_id), "username": entry.actor_username,
            "full_name": entry.actor_full_name, "role": entry.actor_role,
        },
        "entity": entry.entity,
        "record_id": str(entry.record_id),
        "record_number": entry.record_number,
        "action": entry.action,
        "version": entry.version,
        "changes": entry.changes,
        "reason": entry.reason,
        "signature": signature,
        "signature_digest": entry.signature_digest,
        "job_id": _str(entry.job_id),
        "client": {"ip": entry.client_ip, "user_agent": entry.user_agent},
        "seq": entry.seq,
        "hash": entry.hash,
        "prev_hash": entry.prev_hash,
        # Signed off by an audit-trail review (reviews.with_reviewed; False where not annotated).
        "reviewed": bool(getattr(entry, "reviewed", False)),
    }


CSV_COLUMNS = (
    "id", "unit", "position", "at", "actor_id", "actor_username", "actor_full_name", "actor_role",
    "entity", "record_id", "record_number", "action", "version", "changes", "reason",
    "signature_id", "signature_meaning", "signature_signed_at", "signature_signer", "signature_full_name",
    "job_id", "client_ip", "user_agent", "seq", "hash", "prev_hash", "reviewed",
)

# A cell a spreadsheet would read as a formula (OWASP, "CSV injection"): = + - @ and a leading tab or
# carriage return. Such a cell gets a leading single quote, which spreadsheets show as text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def entry_row(entry: AuditEntry) -> list[str]:
    """An entry flattened into CSV_COLUMNS: `changes` as compact JSON, empty cells for nulls."""
    doc = entry_document(entry)
    actor, client, sig = doc["actor"], doc["client"], doc["signature"] or {}
    values = (
        doc["id"], doc["unit"], doc["position"], doc["at"], actor["id"], actor["username"], actor["full_name"],
        actor["role"], doc["entity"], doc["record_id"], doc["record_number"], doc["action"], doc["version"],
        json.dumps(doc["changes"], ensure_ascii=False, separators=(",", ":"), sort_keys=True), doc["reason"],
        sig.get("id"), sig.get("meaning"), sig.get("signed_at"), sig.get("signer"), sig.get("full_name"),
        doc["job_id"], client["ip"], client["user_agent"], doc["seq"], doc["hash"], doc["prev_hash"],
        "true" if doc["reviewed"] else "false",
    )
    return [csv_cell(value) for value in values]


def entry_pages(entries: QuerySet[AuditEntry], page_size: int | None = None) -> Iterator[list[AuditEntry]]:
    """The entries of `entries` (any filters, any visibility) in chain order, a keyset page at a
    time: unit by unit (the units table is small), `position > last` within each."""
    size = page_size or EXPORT_PAGE
    units = AuditEntry._meta.get_field("unit").related_model.objects.values_list("id", flat=True)
    for unit_id in sorted(units):  # (sorted in Python: the same order on every engine)
        after = 0
        while True:
            page = list(entries.filter(unit_id=unit_id, position__gt=after).order_by("position")[:size])
            if page:
                yield page
            if len(page) < size:
                break
            after = page[-1].position


def export_chunks(
    entries: QuerySet[AuditEntry], fmt: str, *, page_size: int | None = None, progress: dict | None = None
) -> Iterator[bytes]:
    """The export as bytes: a CSV header (UTF-8, RFC 4180 lines) or nothing, then one chunk per page.
    `progress`, when given, counts `rows` and `bytes` as they go."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    progress = progress if progress is not None else {}
    progress.update(rows=0, bytes=0)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def flush() -> bytes:
        data = buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
        progress["bytes"] += len(data)
        return data

    if fmt == "csv":
        writer.writerow(CSV_COLUMNS)
        yield flush()
    for page in entry_pages(entries, page_size):
        if fmt == "csv":
            writer.writerows(entry_row(entry) for entry in page)
        else:
            buffer.writelines(
                json.dumps(entry_document(entry), ensure_ascii=False, separators=(",", ":")) + "\n" for entry in page
            )
        progress["rows"] += len(page)
        yield flush()


def _next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    return next(chunks, None)


async def achunks(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    """The same chunks for an ASGI server (Daphne): Django collects a synchronous iterator whole
    before serving it asynchronously, so each page is read and encoded in the request's own thread
    (thread-sensitive sync_to_async: its database connection) and handed over one at a time."""
    iterator = iter(chunks)
    step = sync_to_async(_next_chunk, thread_sensitive=True)
    while (chunk := await step(iterator)) is not None:
        yield chunk


def unit_code(unit_id: uuid.UUID | None) -> str | None:
    if unit_id is None:
        return None
    units = AuditEntry._meta.get_field("unit").related_model.objects
    return units.filter(id=unit_id).values_list("code", flat=True).first()


def export_filename(fmt: str, unit: str | None, now: datetime | None = None) -> str:
    """`audit-trail-<unit code or all>-<UTC time>.<csv|ndjson>`, safe in a header and on any disk."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", unit) if unit else "all"
    return f"audit-trail-{name}-{stamp}.{fmt}"

"""Printable reports of one record (21 CFR Part 11 §11.10(b): human-readable copies; §11.50(b): the
signatures manifested on them): a crate or a request as it is now, every signature on it with the
signer's printed name, date and time and meaning and whether the record changed after it, its
whole history (old → new, who, when in UTC and in the unit's time zone, why), and the chain
position and verification result at the moment of printing. Every page carries its number and a
footer with the print time and who printed it; the printing itself is an audit entry (`printed`).

Drawn with ReportLab's canvas, page by page (docs/audit.md, "Printed reports", says why ReportLab
and why the canvas): the history is read from the database in keyset chunks and drawn as it
comes, so the report holds one chunk of entries at a time; only the finished pages (compressed
content streams, which ReportLab keeps until it writes the file) grow with the history. "Page N of
M" is a form XObject referenced on every page and drawn once, at the end, when M is known.
"""

from __future__ import annotations

import os
import uuid
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from django.db.models import QuerySet
from django.utils import timezone
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.lib.utils import simpleSplit
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from backend.accounts.models import Unit, User
from backend.audit.chain import entry_hash
from backend.audit.models import AuditEntry, AuditVerification
from backend.audit.selectors import binding_matches, record_history, signatures_of
from backend.audit.services import Entry, chain_head, journal_write

from .lifecycle import RequestKind
from .models import BaseRequest, Crate, TransferRequest
from .services.journal import signed_content

HISTORY_CHUNK = 500  # entries read (and held) at a time
PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN = 16 * mm
BODY_WIDTH = PAGE_WIDTH - 2 * MARGIN
FOOTER_Y = 9 * mm
BOTTOM = 18 * mm

# Fonts: DejaVu Sans (Debian's fonts-dejavu-core: Latin, Greek, Cyrillic, arrows) when installed,
# else the Bitstream Vera that ReportLab ships (Latin only: an arrow is written "->").
_FONT_CANDIDATES = [
    ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"),
]
_fonts: tuple[str, str, str] | None = None


def _register_fonts() -> tuple[str, str, str]:
    """(regular, bold, arrow) once per process."""
    global _fonts
    if _fonts is None:
        import reportlab

        bundled = os.path.join(os.path.dirname(reportlab.__file__), "fonts")
        candidates = [*_FONT_CANDIDATES, (os.path.join(bundled, "Vera.ttf"), os.path.join(bundled, "VeraBd.ttf"))]
        regular, bold = next((r, b) for r, b in candidates if os.path.exists(r) and os.path.exists(b))
        pdfmetrics.registerFont(TTFont("ReportSans", regular))
        pdfmetrics.registerFont(TTFont("ReportSans-Bold", bold))
        face = pdfmetrics.getFont("ReportSans").face
        _fonts = ("ReportSans", "ReportSans-Bold", "→" if 0x2192 in face.charToGlyph else "->")
    return _fonts


@dataclass
class Subject:
    """What a report is about: one crate or one request, and the unit whose time zone it uses."""

    entity: str
    record: Crate | BaseRequest
    number: str
    title: str
    unit: Unit
    fields: list[tuple[str, str]]
    signatures: list[dict[str, Any]] = field(default_factory=list)


def _user_label(user: User | None) -> str:
    if user is None:
        return "—"
    name = (user.get_full_name() or "").strip()
    return f"{name} ({user.username})" if name else user.username


def _local(moment: datetime | None, zone: zoneinfo.ZoneInfo) -> str:
    if moment is None:
        return "—"
    utc = moment.astimezone(UTC)
    local = moment.astimezone(zone)
    return f"{utc:%Y-%m-%d %H:%M:%S} UTC · {local:%Y-%m-%d %H:%M:%S %Z} ({zone.key})"


def _zone(unit: Unit) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(unit.timezone or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def _text(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value) or "—"
    return str(value)


def crate_subject(crate: Crate) -> Subject:
    unit = crate.unit
    zone = _zone(unit)
    fields = [
        ("Crate number", crate.crate_number), ("Unit", f"{unit.code} — {unit.name}"), ("Status", crate.status),
        ("Location", crate.location), ("Destruction due", _text(crate.destruction_due)),
        ("On legal hold", _text(crate.on_hold)), ("Version", str(crate.version)),
        ("Created", _local(crate.created_at, zone)), ("Last changed", _local(crate.updated_at, zone)),
    ]
    if crate.deleted_at:
        fields += [("Deleted", _local(crate.deleted_at, zone)), ("Deleted by", _user_label(crate.deleted_by)),
                   ("Why deleted", crate.delete_reason)]
    # A crate's signatures are those of the signed acts in its history (legal holds placed and
    # released); the record changed after one when its version moved past the entry's.
    signed = (
        AuditEntry.objects.filter(record_id=crate.id, signature__isnull=False).select_related("signature")
        .order_by("at", "position")
    )
    signatures = [
        {"signature": e.signature, "what": e.action.replace("_", " "), "version": e.version,
         "changed_after": (e.version or 0) < crate.version}
        for e in signed
    ]
    return Subject("crate", crate, crate.crate_number, f"Crate {crate.crate_number}", unit, fields, signatures)


def request_subject(kind: RequestKind, request: BaseRequest) -> Subject:
    unit = request.unit
    zone = _zone(unit)
    crates = list(request.crates.order_by("crate_number"))
    fields = [
        ("Request number", request.request_number), ("Kind", f"{kind.entity} request"),
        ("Unit", f"{unit.code} — {unit.name}"), ("Status", request.status), ("Reason", request.reason),
        ("Crates", ", ".join(c.crate_number for c in crates) or "—"),
    ]
    if isinstance(request, TransferRequest):
        fields.append(("Destination unit", request.destination_unit.code))
    fields += [
        ("Filed by", _user_label(request.created_by)), ("Filed", _local(request.created_at, zone)),
        ("Decided by", _user_label(request.decided_by)), ("Decided", _local(request.decided_at, zone)),
        ("Decision reason", _text(request.decision_reason)), ("Version", str(request.version)),
        ("Last changed", _local(request.updated_at, zone)),
    ]
    if request.deleted_at:
        fields += [("Deleted", _local(request.deleted_at, zone)), ("Deleted by", _user_label(request.deleted_by)),
                   ("Why deleted", request.delete_reason)]
    content = signed_content(request, [c.id for c in crates])
    signatures = [
        {"signature": row.signature, "what": f"{row.signature.action.replace('_', ' ')} of {request.request_number}",
         "version": row.version,
         "changed_after": not binding_matches(row, version=request.version, content=content)}
        for row in signatures_of([request.id]).get(request.id, [])
    ]
    return Subject(kind.entity, request, request.request_number,
                   f"{kind.entity.capitalize()} request {request.request_number}", unit, fields, signatures)


def _history_chunks(record_id: uuid.UUID) -> Iterator[list[AuditEntry]]:
    """The record's entries oldest first, `HISTORY_CHUNK` at a time (keyset on (at, position, id))."""
    entries: QuerySet[AuditEntry] = record_history(record_id)
    last = None
    while True:
        page = entries
        if last is not None:
            at, position, pk = last
            from django.db.models import Q

            page = page.filter(Q(at__gt=at) | Q(at=at, position__gt=position) | Q(at=at, position=position, id__gt=pk))
        chunk = list(page.order_by("at", "position", "id")[:HISTORY_CHUNK])
        if not chunk:
            return
        yield chunk
        last = (chunk[-1].at, chunk[-1].position, chunk[-1].id)
        if len(chunk) < HISTORY_CHUNK:
            return


def _previous_hashes(chunk: list[AuditEntry]) -> dict[tuple[uuid.UUID, int], str]:
    """{(unit, position - 1): hash} for the entries of `chunk`: their links, in a query per unit."""
    wanted: dict[uuid.UUID, set[int]] = {}
    for entry in chunk:
        wanted.setdefault(entry.unit_id, set()).add(entry.position - 1)
    found = {}
    for unit_id, positions in wanted.items():
        rows = AuditEntry.objects.filter(unit_id=unit_id, position__in=positions).values_list("position", "hash")
        found.update({(unit_id, p): h for p, h in rows})
    return found


@dataclass
class Printed:
    by: User
    at: datetime
    entry: AuditEntry


class _Writer:
    """A top-down text layout on a ReportLab canvas: wraps, breaks pages, numbers them."""

    def __init__(self, out: IO[bytes], subject: Subject, printed: Printed):
        self.font, self.bold, self.arrow = _register_fonts()
        self.canvas = Canvas(out, pagesize=A4, pageCompression=1, invariant=0)
        self.canvas.setTitle(f"{subject.title}: record report")
        self.canvas.setAuthor(f"printed by {printed.by.username}")
        self.subject, self.printed = subject, printed
        self.page = 0
        self.y = 0.0
        self._begin_page()

    # --- pages ------------------------------------------------------------------------------
    def _begin_page(self) -> None:
        self.page += 1
        self.y = PAGE_HEIGHT - MARGIN
        if self.page > 1:
            self.canvas.setFont(self.font, 7.5)
            self.canvas.setFillGray(0.35)
            self.canvas.drawString(MARGIN, self.y, f"{self.subject.title}: record report (continued)")
            self.canvas.setFillGray(0)
            self.y -= 14

    def _end_page(self) -> None:
        c = self.canvas
        c.setFont(self.font, 7.5)
        c.setFillGray(0.35)
        printer = self.printed.by
        who = f"{(printer.get_full_name() or '').strip() or printer.username} ({printer.username})"
        c.drawString(MARGIN, FOOTER_Y, f"Printed {self.printed.at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC by {who} · "
                                        f"{self.subject.number} · audit entry #{self.printed.entry.position}")
        label = f"Page {self.page} of "
        x = PAGE_WIDTH - MARGIN - 22
        c.drawRightString(x, FOOTER_Y, label)
        c.saveState()
        c.translate(x, FOOTER_Y)
        c.doForm("page_total")
        c.restoreState()
        c.setFillGray(0)
        c.showPage()

    def _room(self, height: float) -> None:
        if self.y - height < BOTTOM:
            self._end_page()
            self._begin_page()

    def finish(self) -> None:
        self._end_page()
        c = self.canvas
        c.beginForm("page_total")
        c.setFont(self.font, 7.5)
        c.setFillGray(0.35)
        c.drawString(0, 0, str(self.page))
        c.endForm()
        c.save()

    # --- text -------------------------------------------------------------------------------
    def lines(self, text: str, *, size: float = 9, bold: bool = False, indent: float = 0, gray: float = 0) -> None:
        font = self.bold if bold else self.font
        leading = size * 1.3
        for line in simpleSplit(text.replace("→", self.arrow), font, size, BODY_WIDTH - indent) or [""]:
            self._room(leading)
            self.canvas.setFont(font, size)
            self.canvas.setFillGray(gray)
            self.canvas.drawString(MARGIN + indent, self.y - size, line)
            self.y -= leading
        self.canvas.setFillGray(0)

    def heading(self, text: str, size: float = 12) -> None:
        self._room(size * 3)
        self.y -= size * 0.6
        self.lines(text, size=size, bold=True)
        self.canvas.setLineWidth(0.4)
        self.canvas.line(MARGIN, self.y + 2, PAGE_WIDTH - MARGIN, self.y + 2)
        self.y -= 4

    def pair(self, label: str, value: str) -> None:
        size, leading = 9, 9 * 1.3
        value_lines = simpleSplit(_text(value), self.font, size, BODY_WIDTH - 42 * mm) or ["—"]
        for i, line in enumerate(value_lines):
            self._room(leading)
            if i == 0:
                self.canvas.setFont(self.bold, size)
                self.canvas.drawString(MARGIN, self.y - size, label)
            self.canvas.setFont(self.font, size)
            self.canvas.drawString(MARGIN + 42 * mm, self.y - size, line)
            self.y -= leading

    def gap(self, points: float = 5) -> None:
        self.y -= points


def _changes_text(changes: dict, arrow: str) -> list[str]:
    return [f"{name}: {_text(old)} {arrow} {_text(new)}" for name, (old, new) in
            ((k, v if isinstance(v, list | tuple) and len(v) == 2 else [None, v]) for k, v in (changes or {}).items())]


def _signature_line(signature, zone) -> str:
    name = signature.signer_full_name or "(no printed name)"
    return f"{name} ({signature.signer_username}) · meaning: {signature.meaning} · {_local(signature.signed_at, zone)}"


def report_print(*, subject: Subject, reader: User, out: IO[bytes]) -> dict[str, Any]:
    """Audit the printing (`printed`, in the reader's unit's trail) and write the PDF into `out`.
    Returns what it found: {entries, pages, hash_mismatches, link_mismatches}."""
    from django.db import transaction

    with transaction.atomic():
        (entry,) = journal_write(actor=reader, entries=[Entry(
            unit_id=reader.unit_id or subject.unit.id, entity=subject.entity, record_id=subject.record.id,
            record_number=subject.number, action="printed", version=subject.record.version,
            reason="record report printed (PDF)",
        )])
    printed = Printed(by=reader, at=entry.at, entry=entry)
    zone = _zone(subject.unit)
    writer = _Writer(out, subject, printed)
    arrow = writer.arrow

    writer.lines(f"{subject.title}", size=16, bold=True)
    writer.lines("Record report: the record as it is now, its signatures and its complete audit history",
                 size=9, gray=0.3)
    writer.lines(f"Printed {_local(printed.at, zone)} by {_user_label(reader)}", size=9, gray=0.3)
    writer.gap(6)

    writer.heading("The record as it is now")
    for label, value in subject.fields:
        writer.pair(label, value)

    writer.heading("Electronic signatures")
    if not subject.signatures:
        writer.lines("No electronic signature has been applied to this record.", gray=0.3)
    for n, shown in enumerate(subject.signatures, 1):
        sig = shown["signature"]
        writer.lines(f"{n}. {_signature_line(sig, zone)}", bold=True)
        state = ("CHANGED after signing: the signature no longer covers the record as it is now"
                 if shown["changed_after"] else "unchanged since signing")
        writer.lines(f"Signed: {shown['what']}, at version {shown['version']} · record {state}", indent=12)
        writer.gap(2)

    head_position, head_hash = chain_head(subject.unit.id)
    state = AuditVerification.objects.filter(unit_id=subject.unit.id).first()
    writer.heading("Audit trail: chain position and verification at printing")
    writer.pair("Unit chain head", f"#{head_position} ({head_hash[:16]}…) of unit {subject.unit.code}")
    writer.pair("This printing", f"audit entry #{entry.position} ({entry.hash[:16]}…)")
    if state is None:
        writer.pair("Scheduled verification", "not run yet")
    else:
        verdict = "intact" if state.ok else f"BROKEN: {(state.first_bad or {}).get('rule', '?')}"
        writer.pair("Scheduled verification", f"{verdict}, last run {_local(state.checked_at, zone)}")

    writer.heading("History (oldest first)")
    count = mismatched = broken_links = 0
    for chunk in _history_chunks(subject.record.id):
        previous = _previous_hashes(chunk)
        for item in chunk:
            count += 1
            ok_hash = entry_hash(item) == item.hash
            prev = previous.get((item.unit_id, item.position - 1))
            ok_link = item.position == 1 and item.prev_hash == "0" * 64 or prev is None or prev == item.prev_hash
            mismatched += not ok_hash
            broken_links += not ok_link
            who = item.actor_full_name or item.actor_username
            role = f", {item.actor_role}" if item.actor_role else ""
            title = f"#{item.position} · {item.action.replace('_', ' ')}"
            if item.version is not None:
                title += f" · version {item.version}"
            writer._room(40)
            writer.lines(title, bold=True, size=9)
            writer.lines(f"When: {_local(item.at, zone)}", indent=12, size=8.5)
            writer.lines(f"Who: {who} ({item.actor_username}{role})", indent=12, size=8.5)
            for line in _changes_text(item.changes, arrow):
                writer.lines(f"Change: {line}", indent=12, size=8.5)
            if item.reason:
                writer.lines(f"Why: {item.reason}", indent=12, size=8.5)
            if item.signature_id:
                writer.lines(f"Signed: {_signature_line(item.signature, zone)}", indent=12, size=8.5)
            if not (ok_hash and ok_link):
                writer.lines("CHAIN CHECK FAILED for this entry (hash or link)", indent=12, size=8.5, bold=True)
            writer.gap(3)
        del chunk
    if count == 0:
        writer.lines("No audit entries.", gray=0.3)

    writer.heading("Verified at printing")
    writer.lines(f"{count} history entries: {count - mismatched} match their hash, "
                 f"{count - broken_links} link to the entry before them in the chain.")
    verdict = "PASSED" if not (mismatched or broken_links) else "FAILED"
    writer.lines(f"Record history check: {verdict}.", bold=True)
    writer.finish()
    return {"entries": count, "pages": writer.page, "hash_mismatches": mismatched, "link_mismatches": broken_links,
            "printed_entry": entry.position, "printed_at": timezone.localtime(printed.at)}

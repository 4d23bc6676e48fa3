"""Reading the audit trail: scoped lists, one record's history, and the chain check."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from .chain import GENESIS, binding_hash, entry_hash
from .models import AuditEntry, AuditPurge, SignedRecord


def entries_visible_to(user) -> QuerySet[AuditEntry]:
    """A unit's trail for its users; every unit's for a superuser."""
    entries = AuditEntry.objects.select_related("signature")
    if getattr(user, "is_superuser", False):
        return entries
    return entries.filter(unit_id=getattr(user, "unit_id", None))


def unit_ids_by_code(codes: list[str]) -> dict[str, uuid.UUID]:
    """{code: id} of the units named (those that exist). The unit model is reached through the
    entries' foreign key: audit sits below accounts and does not import it."""
    units = AuditEntry._meta.get_field("unit").related_model.objects
    return dict(units.filter(code__in=codes).values_list("code", "id"))


def signatures_of(record_ids) -> dict[uuid.UUID, list[SignedRecord]]:
    """{record id: its signatures (SignedRecord with .signature), oldest first}, in one query."""
    found: dict[uuid.UUID, list[SignedRecord]] = {}
    rows = SignedRecord.objects.filter(record_id__in=list(record_ids)).select_related("signature")
    for row in rows.order_by("signature__signed_at", "id"):
        found.setdefault(row.record_id, []).append(row)
    return found


def binding_matches(signed: SignedRecord, *, version: int, content: dict[str, Any]) -> bool:
    """Does the record, as it is now (`version`, `content`), still carry what was signed?"""
    return signed.version == version and signed.binding == binding_hash(
        signed.signature, entity=signed.entity, record_id=signed.record_id, version=version, content=content
    )


def record_history(record_id: uuid.UUID) -> QuerySet[AuditEntry]:
    """Every entry about one record, oldest first, whichever unit's chain holds it (a transferred
    crate's history is in both units' chains; the entries one change wrote share its moment). The
    caller checks the record is visible."""
    return AuditEntry.objects.filter(record_id=record_id).select_related("signature").order_by("at", "position")


def entries_since_version(record_id: uuid.UUID, version: int) -> list[AuditEntry]:
    """What changed a record after the version a client saw (the 409 answer shows it)."""
    return list(record_history(record_id).filter(version__gt=version))


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    first_bad: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "first_bad": self.first_bad}


def audit_verify(unit_ids: list[uuid.UUID] | None = None, chunk_size: int = 2000) -> Verification:
    """Recompute every chain (of `unit_ids`, or all units) and report the first broken link:
    an entry whose content no longer matches its hash, whose `prev_hash` is not the previous
    entry's hash, or a missing position. Streams the entries (constant memory)."""
    units = AuditEntry.objects.values_list("unit_id", flat=True).distinct()
    if unit_ids is not None:
        units = units.filter(unit_id__in=unit_ids)
    checked = 0
    for unit_id in sorted(set(units), key=str):
        purge = AuditPurge.objects.filter(unit_id=unit_id).order_by("-through_position").first()
        position, prev_hash = (purge.through_position, purge.through_hash) if purge else (0, GENESIS)
        entries = AuditEntry.objects.filter(unit_id=unit_id, position__gt=position).order_by("position")
        for entry in entries.iterator(chunk_size=chunk_size):
            checked += 1
            bad = None
            if entry.position != position + 1:
                bad = f"entries {position + 1} to {entry.position - 1} of the unit's chain are missing"
            elif entry.prev_hash != prev_hash:
                bad = "its prev_hash is not the previous entry's hash (an entry was removed, inserted or edited)"
            elif entry_hash(entry) != entry.hash:
                bad = "its content does not match its hash (the entry was edited)"
            if bad is not None:
                first_bad = {"id": str(entry.id), "unit": str(unit_id), "position": entry.position, "reason": bad}
                return Verification(False, checked, first_bad)
            position, prev_hash = entry.position, entry.hash
    return Verification(True, checked, None)

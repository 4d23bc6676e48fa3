"""Reading the audit trail: scoped lists, one record's history, and the chain check."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet

from .chain import binding_hash
from .models import AuditCheckpoint, AuditEntry, SignedRecord
from .reviews import with_reviewed
from .verify import Verification, audit_verify

__all__ = [
    "Verification", "audit_verify", "binding_matches", "checkpoints_visible_to", "entries_since_version",
    "entries_visible_to", "record_history", "signatures_of", "unit_ids_by_code",
]


def entries_visible_to(user) -> QuerySet[AuditEntry]:
    """A unit's trail for its users; every unit's for a superuser (each entry annotated `reviewed`)."""
    entries = with_reviewed(AuditEntry.objects.select_related("signature"))
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
    entries = AuditEntry.objects.filter(record_id=record_id).select_related("signature")
    return with_reviewed(entries).order_by("at", "position")


def entries_since_version(record_id: uuid.UUID, version: int) -> list[AuditEntry]:
    """What changed a record after the version a client saw (the 409 answer shows it)."""
    return list(record_history(record_id).filter(version__gt=version))


def checkpoints_visible_to(user) -> QuerySet[AuditCheckpoint]:
    """The signed checkpoints of the user's unit, newest first (every unit's, for a superuser)."""
    checkpoints = AuditCheckpoint.objects.order_by("-at", "-position")
    if getattr(user, "is_superuser", False):
        return checkpoints
    return checkpoints.filter(unit_id=getattr(user, "unit_id", None))

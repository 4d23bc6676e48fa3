"""The one writer of the audit trail.

`journal_write` is what every service that changes a record calls, once, inside its transaction:
it writes the change's outbox events (`backend.events.outbox_write`) and its audit entries
together, under the units' counter locks, so an entry exists exactly when its change committed
(a rolled-back change leaves neither), and each unit's chain is extended by one writer at a time.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backend.common.errors import ValidationFailed
from backend.events.services import Change, outbox_write, units_lock

from .chain import GENESIS, entry_hash, plain
from .context import current_origin
from .models import AuditEntry, AuditPurge


class Actor(Protocol):
    """A user as the audit trail copies it (accounts.User)."""

    id: uuid.UUID
    username: str
    role: str

    def get_full_name(self) -> str: ...


SYSTEM = "system"  # the actor of changes no person made


@dataclass
class Entry:
    """An audit entry to write: what changed on which record. `change` is the update clients see
    for it (its seq is recorded, for the activity feed); None when clients see none."""

    unit_id: uuid.UUID
    entity: str
    record_id: uuid.UUID
    record_number: str
    action: str
    changes: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    version: int | None = None
    change: Change | None = None
    signature_id: uuid.UUID | None = None


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """`{field: [old, new]}` for the fields whose value differs."""
    return {
        name: [plain(before.get(name)), plain(after.get(name))]
        for name in after
        if plain(before.get(name)) != plain(after.get(name))
    }


def journal_write(*, actor: Actor | None, changes: Iterable[Change] = (), entries: Iterable[Entry] = ()) -> list[AuditEntry]:
    """Write `changes` (outbox events) and `entries` (audit entries by `actor`) in the caller's
    transaction. Returns the audit entries written."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("journal_write() must run inside the transaction that makes the change")
    changes, entries = list(changes), list(entries)
    units_lock([c.unit_id for c in changes] + [e.unit_id for e in entries])
    events = outbox_write(changes)
    seq_of = {id(change): event.seq for change, event in zip(changes, events, strict=True)}
    if not entries:
        return []
    now = timezone.now()
    origin = current_origin()
    who = _actor_fields(actor)
    by_unit: dict[uuid.UUID, list[Entry]] = defaultdict(list)
    for entry in entries:
        by_unit[entry.unit_id].append(entry)
    rows: list[AuditEntry] = []
    for unit_id in sorted(by_unit, key=str):
        position, prev_hash = chain_head(unit_id)
        for draft in by_unit[unit_id]:
            position += 1
            row = AuditEntry(
                unit_id=unit_id, position=position, at=now, **who,
                entity=draft.entity, record_id=draft.record_id, record_number=draft.record_number or "",
                action=draft.action, version=draft.version, changes=plain(draft.changes),
                reason=(draft.reason or "").strip(), signature_id=draft.signature_id,
                job_id=origin.job_id, client_ip=origin.client_ip, user_agent=origin.user_agent,
                seq=seq_of.get(id(draft.change)) if draft.change is not None else None,
                prev_hash=prev_hash,
            )
            row.hash = prev_hash = entry_hash(row)
            rows.append(row)
    AuditEntry.objects.bulk_create(rows)
    return rows


def chain_head(unit_id: uuid.UUID) -> tuple[int, str]:
    """The position and hash the unit's next entry follows (call with the unit locked)."""
    last = AuditEntry.objects.filter(unit_id=unit_id).order_by("-position").values_list("position", "hash").first()
    if last is not None:
        return last
    purge = AuditPurge.objects.filter(unit_id=unit_id).order_by("-through_position").first()
    return (purge.through_position, purge.through_hash) if purge else (0, GENESIS)


def _actor_fields(actor: Actor | None) -> dict[str, Any]:
    if actor is None:
        return {"actor_id": None, "actor_username": SYSTEM, "actor_full_name": "", "actor_role": ""}
    return {
        "actor_id": actor.id,
        "actor_username": actor.username,
        "actor_full_name": (actor.get_full_name() or "").strip(),
        "actor_role": "superuser" if getattr(actor, "is_superuser", False) else actor.role,
    }


def retention_horizon(now: datetime | None = None) -> datetime:
    """Entries at or after this moment are inside AUDIT_RETENTION_YEARS and can never be purged."""
    now = now or timezone.now()
    return now - timedelta(days=round(365.25 * settings.AUDIT_RETENTION_YEARS))


@transaction.atomic
def audit_purge(*, before: datetime, purged_by: str, reason: str) -> list[AuditPurge]:
    """Delete the entries older than `before`, unit by unit, recording each purge first (the
    database deletes only what a purge record covers). Refused for anything inside retention."""
    if not (reason or "").strip():
        raise ValidationFailed("A purge needs a reason.", code="reason_required")
    horizon = retention_horizon()
    if before > horizon:
        raise ValidationFailed(
            f"Refused: entries after {horizon:%Y-%m-%d} are inside the audit retention of "
            f"{settings.AUDIT_RETENTION_YEARS} years (AUDIT_RETENTION_YEARS).",
            code="inside_retention",
        )
    purges = []
    unit_ids = AuditEntry.objects.filter(at__lt=before).values_list("unit_id", flat=True).distinct()
    units = sorted(set(unit_ids), key=str)
    units_lock(units)
    for unit_id in units:
        # The purge takes a prefix of the chain: up to the first entry that must be kept.
        young = AuditEntry.objects.filter(unit_id=unit_id, at__gte=before).order_by("position")
        kept = young.values_list("position", flat=True).first()
        old = AuditEntry.objects.filter(unit_id=unit_id, at__lt=before)
        if kept is not None:
            old = old.filter(position__lt=kept)
        last = old.order_by("-position").values_list("position", "hash").first()
        if last is None:
            continue
        count = old.count()
        purge = AuditPurge.objects.create(
            unit_id=unit_id, through_position=last[0], through_hash=last[1], entries=count,
            before=before, purged_by=purged_by, reason=reason.strip(), at=timezone.now(),
        )
        AuditEntry.objects.filter(unit_id=unit_id, position__lte=last[0]).delete()
        purges.append(purge)
    return purges

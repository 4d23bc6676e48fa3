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

from backend.common.errors import SignatureRequired, ValidationFailed
from backend.events import schema
from backend.events.services import Change, outbox_insert, outbox_prepare, units_lock

from . import db as audit_db
from .chain import GENESIS, binding_hash, entry_hash, plain, signature_digest
from .checkpoints import checkpoints_write
from .context import Origin, current_origin
from .export import entry_document
from .models import AuditEntry, AuditPurge, Signature, SignedRecord
from .vocabulary import action_known


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
    # Who made this entry and where from, when not the call's actor and the current origin: a batch
    # of jobs (issue 30) journals several people's changes in one write, each with its own job.
    by: Actor | None = None
    origin: Origin | None = None


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
    unknown = sorted({e.action for e in entries if not action_known(e.action)})
    if unknown:  # every action in the trail has a word people read it by (backend/audit/vocabulary.py)
        raise ValueError(f"audit actions not registered: {', '.join(map(repr, unknown))}")
    locked = units_lock([c.unit_id for c in changes] + [e.unit_id for e in entries])
    events = outbox_prepare(changes, locked)
    event_of = {id(change): event for change, event in zip(changes, events, strict=True)}
    seq_of = {key: event.seq for key, event in event_of.items()}
    if not entries:
        outbox_insert(events)
        return []
    signatures = Signature.objects.in_bulk({e.signature_id for e in entries if e.signature_id})
    # Each signed entry's binding to its record (written before it: signature_apply, then this).
    bound = {(s.signature_id, s.record_id): s for s in SignedRecord.objects.filter(
        signature_id__in=list(signatures), record_id__in={e.record_id for e in entries if e.signature_id})}
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
            source = draft.origin or origin
            row = AuditEntry(
                unit_id=unit_id, position=position, at=now, **(who if draft.by is None else _actor_fields(draft.by)),
                entity=draft.entity, record_id=draft.record_id, record_number=draft.record_number or "",
                action=draft.action, version=draft.version, changes=plain(draft.changes),
                reason=(draft.reason or "").strip(),
                signature=signatures[draft.signature_id] if draft.signature_id else None,
                job_id=source.job_id, client_ip=source.client_ip, user_agent=source.user_agent,
                seq=seq_of.get(id(draft.change)) if draft.change is not None else None,
                prev_hash=prev_hash,
            )
            if draft.signature_id:
                row.signature_digest = signature_digest(signatures[draft.signature_id],
                                                        bound.get((draft.signature_id, draft.record_id)))
            row.hash = prev_hash = entry_hash(row)
            rows.append(row)
            if draft.change is not None:  # the activity feed: this entry, right after its update
                event = event_of[id(draft.change)]
                event.activity = "\n".join(filter(None, [event.activity, activity_frame(row)]))
    outbox_insert(events)
    AuditEntry.objects.bulk_create(rows)
    return rows


# What an activity frame leaves out of an entry: where the client was, and the chain's hashes (and digests).
ACTIVITY_OMITS = ("client", "hash", "prev_hash", "signature_digest")


def activity_frame(entry: AuditEntry) -> str:
    """The `activity` frame of an entry, encoded once (like a data_update's frame)."""
    document = {k: v for k, v in entry_document(entry).items() if k not in ACTIVITY_OMITS}
    return schema.encode(schema.activity(entry=document, seq=entry.seq))


@dataclass
class Binding:
    """A record a signature is applied to, as the decision left it."""

    entity: str
    record_id: uuid.UUID
    record_number: str
    version: int
    content: dict[str, Any]


def signature_for(signature_id: uuid.UUID | str | None, *, signer_id: uuid.UUID, action: str, entity: str) -> Signature:
    """The signature a decision was submitted with: it must exist and be the decider's own, given
    for this action on this kind of record. Anything else refuses the decision."""
    signature = Signature.objects.filter(id=signature_id).first() if signature_id else None
    if signature is None or (signature.signer_id, signature.action, signature.entity) != (signer_id, action, entity):
        raise SignatureRequired(f"This {entity} {action.replace('_', ' ')} carries no signature of its decider.")
    return signature


def signature_apply(signature: Signature, bindings: Iterable[Binding]) -> list[SignedRecord]:
    """Bind `signature` to each record it decided (in the decision's transaction)."""
    rows = [
        SignedRecord(
            signature=signature, entity=b.entity, record_id=b.record_id, record_number=b.record_number,
            version=b.version,
            binding=binding_hash(signature, entity=b.entity, record_id=b.record_id, version=b.version, content=b.content),
        )
        for b in bindings
    ]
    return SignedRecord.objects.bulk_create(rows)


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
    # The triggers enforce the retention configured now (db.py), and refuse the purge otherwise.
    audit_db.retention_write(transaction.get_connection(), settings.AUDIT_RETENTION_YEARS)
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
    if purges:  # signed, so that verify can tell this purge from a forged one
        checkpoints_write([p.unit_id for p in purges], purged={p.unit_id: p.through_position for p in purges})
    return purges

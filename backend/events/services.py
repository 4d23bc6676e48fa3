"""The only writer of outbox events, and the one seam that publishes them.

Domain services call `outbox_write` inside their transaction; it takes the unit's next seqs and,
once that transaction commits, hands the events to the outbox's publish (`outbox.outbox_publish`), as Zulip's
`send_event_on_commit` does. Nothing else in the domain talks to the channel layer.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from . import schema
from .models import OutboxEvent, UnitSequence
from .outbox import outbox_publish


@dataclass(frozen=True)
class Change:
    """One update a unit's clients must see: becomes one `data_update` with that unit's next seq."""

    unit_id: uuid.UUID
    entity: str
    action: str
    data: dict[str, Any]

    def __post_init__(self) -> None:
        if self.entity not in schema.ENTITIES or self.action not in schema.ACTIONS:
            raise ValueError(f"unknown event {self.entity}.{self.action}")


def unit_sequence_ensure(unit_id: uuid.UUID) -> None:
    UnitSequence.objects.bulk_create([UnitSequence(unit_id=unit_id)], ignore_conflicts=True)


def units_lock(unit_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Lock the units' counter rows until COMMIT, in ascending id order (the order every writer
    takes them in). Whoever holds a unit's row is the only writer of its seqs and of its audit
    chain until COMMIT. Returns each unit's last seq as locked (for `outbox_prepare`)."""
    ids = sorted(set(unit_ids), key=str)
    if not ids:
        return {}
    rows = UnitSequence.objects.select_for_update().filter(unit_id__in=ids).order_by("unit_id")
    found = dict(rows.values_list("unit_id", "last_seq"))
    if len(found) < len(ids):
        for unit_id in ids:
            if unit_id not in found:
                unit_sequence_ensure(unit_id)
        found = dict(rows.values_list("unit_id", "last_seq"))
    return found


def _allocate(unit_id: uuid.UUID, count: int, locked: dict[uuid.UUID, int]) -> int:
    """Reserve `count` seqs for `unit_id`; returns the first. Holds the counter row until COMMIT.
    A unit in `locked` (units_lock's answer, in this transaction) is already held: one UPDATE."""
    if unit_id in locked:
        first = locked[unit_id] + 1
        UnitSequence.objects.filter(unit_id=unit_id).update(last_seq=first + count - 1)
        locked[unit_id] = first + count - 1
        return first
    counter = UnitSequence.objects.select_for_update().filter(unit_id=unit_id).first()
    if counter is None:
        unit_sequence_ensure(unit_id)
        counter = UnitSequence.objects.select_for_update().get(unit_id=unit_id)
    first = counter.last_seq + 1
    counter.last_seq += count
    counter.save(update_fields=["last_seq"])
    return first


def outbox_write(changes: Iterable[Change]) -> list[OutboxEvent]:
    """Write `changes` as outbox events in the caller's transaction; publish them after COMMIT.
    Returns the events in the order of `changes`."""
    return outbox_insert(outbox_prepare(changes))


def outbox_prepare(changes: Iterable[Change], locked: dict[uuid.UUID, int] | None = None) -> list[OutboxEvent]:
    """The outbox events of `changes`, in their order, with their seqs taken (the units' counters
    are locked and advanced) but not yet inserted: the caller may add what depends on the seq (the
    audit trail's activity frames) before `outbox_insert`. `locked`: what `units_lock` returned in
    this transaction, if the caller already holds the counters.

    Counters are locked in ascending unit-id order, so two transactions touching the same pair of
    units (a transfer each way) always queue instead of deadlocking.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("outbox_write() must run inside the transaction that makes the change")
    changes = list(changes)
    by_unit: dict[uuid.UUID, list[int]] = defaultdict(list)
    for index, change in enumerate(changes):
        by_unit[change.unit_id].append(index)
    if not by_unit:
        return []
    now = timezone.now()
    rows: list[OutboxEvent | None] = [None] * len(changes)
    for unit_id in sorted(by_unit, key=str):
        indexes = by_unit[unit_id]
        first = _allocate(unit_id, len(indexes), {} if locked is None else locked)
        for offset, index in enumerate(indexes):
            change, seq = changes[index], first + offset
            message = schema.data_update(
                entity=change.entity, action=change.action, data=change.data, timestamp=now, seq=seq
            )
            rows[index] = OutboxEvent(
                unit_id=unit_id,
                seq=seq,
                entity=change.entity,
                action=change.action,
                object_id=change.data["id"],
                frame=schema.encode(message),
                created_at=now,
            )
    return rows


def outbox_insert(rows: list[OutboxEvent]) -> list[OutboxEvent]:
    """Insert prepared events (`outbox_prepare`) and publish them once the transaction commits."""
    if not rows:
        return rows
    # Inserted (and published) in (unit, seq) order.
    ordered = sorted(rows, key=lambda row: (str(row.unit_id), row.seq))
    OutboxEvent.objects.bulk_create(ordered)
    # Publish what was just written, from memory (ids come back from the bulk INSERT on PostgreSQL
    # and SQLite >= 3.35): no second read of the outbox on the hot path.
    committed = [
        {"id": r.id, "unit_id": r.unit_id, "seq": r.seq, "frame": r.frame, "activity": r.activity,
         "created_at": r.created_at}
        for r in ordered
    ]
    transaction.on_commit(lambda: outbox_publish(committed))
    return rows

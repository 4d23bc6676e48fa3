"""Reads of the outbox and the unit counters: what a unit's clients have been sent, and can resume."""

from __future__ import annotations

from .models import OutboxEvent, UnitSequence


def unit_current_seq(unit_id: str) -> int:
    return UnitSequence.objects.filter(unit_id=unit_id).values_list("last_seq", flat=True).first() or 0


def units_current_seq(unit_ids: list[str]) -> dict[str, int]:
    rows = UnitSequence.objects.filter(unit_id__in=unit_ids).values_list("unit_id", "last_seq")
    return {str(unit_id): seq for unit_id, seq in rows}


def unit_stream(unit_id: str) -> tuple[int, str]:
    """(last seq, epoch) of the unit's stream; (0, "") before its counter exists."""
    row = UnitSequence.objects.filter(unit_id=unit_id).values_list("last_seq", "epoch").first()
    return row if row is not None else (0, "")


def units_stream(unit_ids: list[str]) -> dict[str, tuple[int, str]]:
    rows = UnitSequence.objects.filter(unit_id__in=unit_ids).values_list("unit_id", "last_seq", "epoch")
    return {str(unit_id): (seq, epoch) for unit_id, seq, epoch in rows}


def outbox_created_at(unit_id: str, seq: int):
    """When the unit's update `seq` was written (None when it is not, or no longer, in the outbox)."""
    return OutboxEvent.objects.filter(unit_id=unit_id, seq=seq).values_list("created_at", flat=True).first()


def outbox_frames(
    unit_id: str, *, after: int, upto: int | None = None, limit: int = 1000, activity: bool = False
) -> list[tuple]:
    """Committed frames of a unit with seq in (after, upto], oldest first: `(seq, frame)`, or
    `(seq, frame, activity)` with the update's activity frames (one per line, often empty)."""
    rows = OutboxEvent.objects.filter(unit_id=unit_id, seq__gt=after)
    if upto is not None:
        rows = rows.filter(seq__lte=upto)
    fields = ("seq", "frame", "activity") if activity else ("seq", "frame")
    return list(rows.order_by("seq").values_list(*fields)[:limit])

"""Database reads of the realtime tier, each run in a worker thread (never on the event loop)."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from backend.events.models import OutboxEvent, UnitSequence

from .db import realtime_db


@realtime_db
def unit_current_seq(unit_id: str) -> int:
    return UnitSequence.objects.filter(unit_id=unit_id).values_list("last_seq", flat=True).first() or 0


@realtime_db
def units_current_seq(unit_ids: list[str]) -> dict[str, int]:
    rows = UnitSequence.objects.filter(unit_id__in=unit_ids).values_list("unit_id", "last_seq")
    return {str(unit_id): seq for unit_id, seq in rows}


@realtime_db
def outbox_frames(unit_id: str, *, after: int, upto: int | None = None, limit: int = 1000) -> list[tuple[int, str]]:
    """Committed frames of a unit with seq in (after, upto], oldest first."""
    rows = OutboxEvent.objects.filter(unit_id=unit_id, seq__gt=after)
    if upto is not None:
        rows = rows.filter(seq__lte=upto)
    return list(rows.order_by("seq").values_list("seq", "frame")[:limit])


@realtime_db
def users_access(user_ids: list[str]) -> dict[str, tuple[bool, str | None]]:
    """user id -> (is_active, unit id), for re-validating live connections."""
    rows = get_user_model().objects.filter(id__in=user_ids).values_list("id", "is_active", "unit_id")
    return {str(uid): (active, str(unit) if unit else None) for uid, active, unit in rows}

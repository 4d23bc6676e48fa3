"""Reads of a user's notifications: only ever their own."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import F, Q, QuerySet

from .models import Notification

# A greeting's count covers the unread notifications committed before it; a frame of one of them
# may still be on its way (sent after its COMMIT). The ids of those created this recently are read
# with the count, so the connection can drop such a frame instead of counting it twice.
RECENT = timedelta(minutes=5)
RECENT_LIMIT = 500


def _mine(user_id) -> QuerySet[Notification]:
    """The user's notifications about the unit they are in now (a moved user's old ones stay behind)."""
    same_unit = Q(unit_id=F("user__unit_id")) | Q(unit__isnull=True, user__unit__isnull=True)
    return Notification.objects.filter(same_unit, user_id=user_id)


def user_notifications(user_id, *, unread: bool = False) -> QuerySet[Notification]:
    rows = _mine(user_id)
    return rows.filter(read_at__isnull=True) if unread else rows


def unread_count(user_id) -> int:
    return _mine(user_id).filter(read_at__isnull=True).count()


def unread_state(user_id, now: datetime | None = None) -> tuple[int, set[str]]:
    """(the user's unread count, the ids of the unread ones created within RECENT): a greeting's."""
    from django.utils import timezone

    unread = _mine(user_id).filter(read_at__isnull=True)
    since = (now or timezone.now()) - RECENT
    # The recent ids first, then the count of the older ones: one committed between the two reads
    # is in neither (its frame then counts it), never in the count without its id.
    recent = {str(pk) for pk in unread.filter(created_at__gte=since).values_list("id", flat=True)[:RECENT_LIMIT]}
    if len(recent) >= RECENT_LIMIT:  # a flood (a bulk decision): count them all; a frame may count twice
        return unread.count(), recent
    return len(recent) + unread.filter(created_at__lt=since).count(), recent


# A reconnecting client is sent at most this many of the unread notifications it may have missed.
OWED_LIMIT = 100
# A resume owes what committed after the update at its `last_seq` (the client was connected then).
# A notification's created_at, though, is taken when it is written, before its COMMIT, and on the
# writing host's clock: one written up to OWED_MARGIN before that update, in a transaction that
# committed after the client left, is owed too. The client de-duplicates by id, so the margin costs
# at most a few frames it already had (docs/realtime.md, "Resuming").
OWED_MARGIN = timedelta(minutes=5)


def unread_since(user_id, since: datetime | None, limit: int = OWED_LIMIT) -> list[Notification]:
    """The user's unread notifications about their current unit created at or after `since` less
    OWED_MARGIN (all of them without it), the newest `limit`, oldest first: what a resuming
    connection may have missed."""
    rows = _mine(user_id).filter(read_at__isnull=True)
    if since is not None:
        rows = rows.filter(created_at__gte=since - OWED_MARGIN)
    return list(reversed(rows.order_by("-created_at", "-id")[:limit]))

"""The one writer of notifications.

A service that causes notifications calls `notify` inside its transaction, with plain ids (this
app sits below records, jobs and accounts and imports none of them): the rows commit with the
change, or not at all, and each is sent to its user's sockets only after COMMIT (like every event:
`backend.events.broadcast.notifications_send`). A chunk's notifications are one bulk INSERT.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from backend.events import schema
from backend.events.broadcast import notification_read_send, notifications_send

from .models import Kind, Notification

__all__ = ["Draft", "Kind", "notification_document", "notifications_mark_read", "notify"]

ID_CHUNK = 900  # ids per `IN (...)` when checking which rows an insert-ignore kept


@dataclass(frozen=True)
class Draft:
    """A notification to write: for `user_id`, about `link_entity` `link_id` of `unit_id` (the unit
    it is about; None: the recipient's own). A recipient no longer in that unit is not notified."""

    user_id: uuid.UUID | str
    kind: str
    title: str
    body: str
    link_entity: str
    link_id: uuid.UUID | str
    threshold: int | None = None
    unit_id: uuid.UUID | str | None = None


def notification_document(row: Notification) -> dict[str, Any]:
    """`{id, kind, title, body, link: {entity, id}, created_at, read}`: the API's and the frame's."""
    return {
        "id": str(row.id), "kind": row.kind, "title": row.title, "body": row.body,
        "link": {"entity": row.link_entity, "id": str(row.link_id)},
        "created_at": schema.utc_timestamp(row.created_at), "read": row.read_at is not None,
    }


def notify(drafts: Iterable[Draft], *, once: bool = False) -> list[Notification]:
    """Write `drafts` in the caller's transaction (one INSERT) and send each to its user after
    COMMIT. `once`: rows that would break a unique constraint (destruction_due's crate, threshold,
    user) are skipped, atomically (INSERT … ON CONFLICT DO NOTHING), and not sent. Returns the rows
    written."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("notify() must run inside the transaction that causes the notifications")
    now = timezone.now()
    drafts = list(drafts)
    units = _units_of({d.user_id for d in drafts})
    rows = [
        Notification(
            id=uuid.uuid4(), user_id=d.user_id, unit_id=d.unit_id or units.get(str(d.user_id)), kind=Kind(d.kind),
            title=d.title[:200], body=d.body, link_entity=d.link_entity, link_id=d.link_id, threshold=d.threshold,
            created_at=now,
        )
        for d in drafts
        # Notifications stay in the unit they are about: a user who moved gets none of the old one's.
        if d.unit_id is None or str(d.unit_id) == str(units.get(str(d.user_id)))
    ]
    if not rows:
        return rows
    Notification.objects.bulk_create(rows, ignore_conflicts=once, batch_size=1000)
    if once:
        # Our own uncommitted rows are visible to us; a conflicting row was not inserted, so its
        # (fresh) id is not there. A concurrent writer of the same key waits for our COMMIT, then skips.
        ids = [row.id for row in rows]
        kept: set[uuid.UUID] = set()
        for start in range(0, len(ids), ID_CHUNK):
            kept.update(Notification.objects.filter(id__in=ids[start : start + ID_CHUNK]).values_list("id", flat=True))
        rows = [row for row in rows if row.id in kept]
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_user[str(row.user_id)].append(notification_document(row))
    if by_user:
        transaction.on_commit(lambda: notifications_send(by_user))
    return rows


def _units_of(user_ids) -> dict[str, uuid.UUID | None]:
    """{user id: their unit now}, in one query (the user model by relation: this app imports no
    accounts code)."""
    users = Notification._meta.get_field("user").related_model
    return {str(pk): unit for pk, unit in users.objects.filter(id__in=list(user_ids)).values_list("id", "unit_id")}


def notifications_mark_read(*, user_id: uuid.UUID | str, notification_id: uuid.UUID | str | None = None) -> int:
    """Mark one of the user's notifications read (or all of them, without `notification_id`).
    Returns how many were unread. Another user's notification is not found (0)."""
    rows = Notification.objects.filter(user_id=user_id, read_at__isnull=True)
    if notification_id is not None:
        rows = rows.filter(id=notification_id)
    marked = rows.update(read_at=timezone.now())
    if marked:
        # The user's other tabs and devices mark them read too (`notification_read`), after COMMIT.
        frame = schema.notification_read(ids=[str(notification_id)] if notification_id is not None else None,
                                         all_read=notification_id is None)
        transaction.on_commit(lambda: notification_read_send(user_id, frame))
    return marked

"""The domain reads the realtime tier makes, each run on the realtime thread pool (realtime/db.py),
never on the event loop."""

from __future__ import annotations

from backend.accounts import selectors as accounts
from backend.events import selectors as events
from backend.notifications import selectors as notifications

from .db import realtime_db

unit_current_seq = realtime_db(events.unit_current_seq)
units_current_seq = realtime_db(events.units_current_seq)
units_stream = realtime_db(events.units_stream)
unit_stream = realtime_db(events.unit_stream)
outbox_frames = realtime_db(events.outbox_frames)
users_access = realtime_db(accounts.users_access)
user_for_socket = realtime_db(accounts.user_for_socket)


def _greeting_state(unit_id: str, user_id: str) -> tuple[int, int, set[str], str]:
    """What a connection's greeting needs, read in one trip to the pool (each trip is a checkout,
    its health check and its return): the unit's current seq, then the user's unread notifications
    (count, ids counted), and the stream's epoch (read with the seq). The seq first: the connection
    has joined the hub already, so an event committed after this read reaches it live."""
    seq, epoch = events.unit_stream(unit_id)
    return (seq, *notifications.unread_state(user_id), epoch)


greeting_state = realtime_db(_greeting_state)


def _presence_profile(user_id: str) -> tuple[str, str, str] | None:
    """(username, full name, role) of a presence-enabled connection's user."""
    from backend.accounts.models import User

    row = User.objects.filter(id=user_id).values_list("username", "first_name", "last_name", "role").first()
    if row is None:
        return None
    username, first, last, role = row
    return username, f"{first} {last}".strip(), role


def _mine_request_ids(user_id: str, unit_id: str, limit: int) -> set[str]:
    """Ids of the unit's requests the user created or last decided, and of those they sent back
    (a resubmit clears `decided_by`; the send-back record keeps who): a `mine` filter's start. At
    most `limit` ids in all: each query reads only what the ones before it left of the budget."""
    from django.db.models import Q

    from backend.records.models import DestructionRequest, SendBackRecord, TransferRequest, WithdrawalRequest

    ids: set[str] = set()
    mine = Q(created_by_id=user_id) | Q(decided_by_id=user_id)
    for model in (WithdrawalRequest, DestructionRequest, TransferRequest):
        in_unit = Q(unit_id=unit_id)
        if model is TransferRequest:
            in_unit |= Q(destination_unit_id=unit_id)
        if len(ids) >= limit:
            return ids
        rows = model.objects.filter(mine & in_unit).order_by("-created_at").values_list("id", flat=True)
        ids.update(str(pk) for pk in rows[: limit - len(ids)])
    if len(ids) < limit:
        sent_back = (
            SendBackRecord.objects.filter(created_by_id=user_id, unit_id=unit_id)
            .order_by("-created_at").values_list("request_id", flat=True)
        )
        ids.update(str(pk) for pk in sent_back[: limit - len(ids)])
    return ids


presence_profile = realtime_db(_presence_profile)
mine_request_ids = realtime_db(_mine_request_ids)


def _owed_on_resume(unit_id: str, user_id: str, last_seq: int) -> tuple[list[dict], list[dict]]:
    """What a resuming connection's user may have missed while away (realtime/resuming.py): the
    state of their queued and running jobs, and their unread notifications created since the
    update at `last_seq` committed (all unread ones when that update is not in the outbox)."""
    from backend.jobs.selectors import user_unfinished_jobs
    from backend.notifications.services import notification_document

    since = events.outbox_created_at(unit_id, last_seq) if last_seq > 0 else None
    owed = notifications.unread_since(user_id, since)
    return user_unfinished_jobs(user_id), [notification_document(row) for row in owed]


owed_on_resume = realtime_db(_owed_on_resume)

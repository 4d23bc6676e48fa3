"""The domain reads the realtime tier makes, each run on the realtime thread pool (realtime/db.py),
never on the event loop."""

from __future__ import annotations

from backend.accounts import selectors as accounts
from backend.events import selectors as events
from backend.jobs.selectors import user_unfinished_jobs
from backend.notifications import selectors as notifications
from backend.notifications.services import notification_document
from backend.records import selectors as records

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


presence_profile = realtime_db(accounts.presence_profile)
mine_request_ids = realtime_db(records.mine_request_ids)


def _owed_on_resume(unit_id: str, user_id: str, last_seq: int) -> tuple[list[dict], list[dict]]:
    """What a resuming connection's user may have missed while away (realtime/resuming.py): the
    state of their queued and running jobs of the unit, and their unread notifications (about their current
    unit) created since the update at `last_seq` committed, less a margin (all unread ones when
    that update is not in the outbox): backend/notifications/selectors.py, OWED_MARGIN."""
    since = events.outbox_created_at(unit_id, last_seq) if last_seq > 0 else None
    owed = notifications.unread_since(user_id, since)
    return user_unfinished_jobs(user_id, unit_id), [notification_document(row) for row in owed]


owed_on_resume = realtime_db(_owed_on_resume)

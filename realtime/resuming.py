"""What a connection resumes from, and what a resuming client is owed (docs/realtime.md, "Resuming").

Kept out of consumers.py, which owns the connection's lifecycle; this module owns the rules:
- `resume_point`: continue after `last_seq`, or tell the client to refetch (`resync_required`) and why;
- `send_owed`: after the replay, the state of the user's queued and running jobs (`job_update`) and
  the unread notifications created since the update at `last_seq`, with a margin (`notification`).
"""

from __future__ import annotations

import logging

from django.conf import settings

from backend.events import schema

from . import selectors
from .frames import Outgoing

logger = logging.getLogger(__name__)


def resume_point(requested: str | None, requested_epoch: str | None, current: int, epoch: str) -> tuple[int, str | None]:
    """(the seq to replay after, None) or (the current seq, the reason to resync instead).

    `requested_epoch` is optional (seed clients know none): without it, only the seq is checked.
    With it, a resume across a new epoch is refused first: its seqs count something else."""
    if requested is None:
        return current, None
    try:
        last_seq = int(requested)
        if last_seq < 0:
            raise ValueError
    except ValueError:
        return current, "invalid_last_seq"
    if requested_epoch is not None and epoch and requested_epoch != epoch:
        return current, "epoch_changed"
    if last_seq > current:
        # The client saw seqs this unit never had (a restored database?): start over.
        return current, "last_seq_ahead"
    if current - last_seq > settings.REALTIME_REPLAY_LIMIT:
        return current, "history_limit"
    return last_seq, None


async def send_owed(connection, last_seq: int) -> None:
    """Frames a resuming client may have missed while away that the outbox does not replay.
    Jobs: their state now (a final `job_update` missed while away shows as the job's notification).
    Notifications: unread ones about the user's current unit created since the update at `last_seq`,
    less OWED_MARGIN (all unread ones when that update is no longer in the outbox), at most
    OWED_LIMIT; the client de-duplicates by id."""
    jobs, notes = await selectors.owed_on_resume(connection.unit_id, connection.user_id, last_seq)
    for job in jobs:
        connection.job_frame(Outgoing(0, schema.encode(schema.job_update(job=job))))
    for note in notes:
        # `counted`: the greeting's unread_notifications already includes it.
        connection.user_frame(Outgoing(0, schema.encode(schema.notification(notification=note, counted=True))))

"""Channel-layer group names and message types: defined here and nowhere else."""

from __future__ import annotations

import uuid


def unit_group_name(unit_id: uuid.UUID | str) -> str:
    """Every change a unit's clients may see is sent here (as in the seed: `unit_{unit_id}`)."""
    return f"unit_{unit_id}"


def user_group_name(user_id: uuid.UUID | str) -> str:
    """Messages for one user's connections: job progress, and the order to close (4003)."""
    return f"user_{user_id}"


# The channel-layer message types the domain sends (backend/events/broadcast.py) and the realtime
# tier dispatches on (realtime/hub.py, realtime/consumers.py). Channels routes a type `a.b` to the
# consumer's handler `a_b`.
UNIT_EVENTS = "unit.events"  # a unit's committed events (pre-encoded frames), once per process
UNIT_EPOCH = "unit.epoch"  # a unit's stream got a new epoch
JOB_UPDATE = "job.update"  # a job's progress, for its user's connections
USER_NOTIFICATIONS = "user.notifications"  # a user's new notifications
USER_FRAME = "user.frame"  # a pre-encoded frame for a user's connections (notification_read)
USER_CLOSE = "user.close"  # close a user's connections (4003: access revoked)
MESSAGE_TYPES = (UNIT_EVENTS, UNIT_EPOCH, JOB_UPDATE, USER_NOTIFICATIONS, USER_FRAME, USER_CLOSE)

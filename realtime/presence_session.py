"""The consumer's presence (`presence=1`, realtime/presence.py): online before the greeting, the
unit's snapshot after it, deltas held until the snapshot is sent, and the client's viewing /
editing / idle messages. Presence is advisory: without Redis the connection still serves updates.

A mixin of `UpdatesConsumer` (realtime/consumers.py).
"""

from __future__ import annotations

import logging

from . import selectors
from .closing import (
    TRANSIENT_ERRORS,
)
from .frames import Outgoing
from .presence import ConnectionPresence, parse_target, presence, presence_frame, profile_json

logger = logging.getLogger(__name__)


class Presence:
    # This connection's state, and the snapshot's version (None until the snapshot is sent; deltas
    # wait in presence_buffer meanwhile).
    presence: ConnectionPresence | None = None
    presence_wanted = False
    presence_joined = False
    presence_floor: int | None = None
    presence_buffer: list | None = None
    presence_start = 0  # the unit's presence version just before this connection went online

    async def _presence_guarded(self, step) -> None:
        try:
            await step
        except TRANSIENT_ERRORS:
            # Presence is advisory: without Redis the connection still serves its updates.
            logger.warning("presence unavailable for a websocket of user %s", self.user_id, exc_info=True)
            self.presence, self.presence_buffer = None, None
            await presence.leave(self)

    async def _presence_online(self, slot: str) -> None:
        """This connection online (its user `joined` when it is their first), deltas from now on
        held until the snapshot is sent (`presence_floor`: those at or below it are dropped)."""
        profile = await selectors.presence_profile(self.user_id)
        if profile is None or self.closing:
            return
        self.presence_buffer = []
        self.presence_joined = True
        self.presence = ConnectionPresence(self.unit_id, self.user_id, slot, profile_json(*profile))
        self.presence_start = await presence.join(self)

    async def _presence_snapshot(self) -> None:
        """The unit's online users (every connection greeted before this one read it), then the deltas."""
        users = await presence.snapshot_for(self)
        self.writer.write(presence_frame(users))
        self.presence_floor = self.presence_start
        buffered, self.presence_buffer = self.presence_buffer, None
        for buffered_version, event in buffered:
            self.presence_deliver(buffered_version, event)
        self.presence.want("", "")

    def presence_deliver(self, version: int, event: Outgoing) -> None:
        """A presence_update (called by the presence hub, encoded and framed once per process)."""
        if self.closing:
            return
        if self.presence_floor is None:
            if self.presence_buffer is not None:
                self.presence_buffer.append((version, event))
            return
        if version > self.presence_floor:
            self.writer.write(event)

    def _presence_message(self, message: dict) -> None:
        if self.presence is None:
            return self._error("invalid_message", "Presence messages need presence=1 on the connection.")
        if message["type"] == "idle":
            return self.presence.want("", "")
        target = parse_target(message)
        if isinstance(target, str):
            return self._error("invalid_message", target)
        value = f"{target[0]}:{target[1]}"
        # Editing a record is viewing it too.
        self.presence.want(value, value if message["type"] == "editing" else "")


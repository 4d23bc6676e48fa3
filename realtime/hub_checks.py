"""The hub's periodic checks, each on a timer of its own and each failing alone: fill what the push
missed (`_catch_up`), follow a unit's new stream epoch, re-validate the users behind the connections
(4003), re-join the groups before they expire, unregister connections whose socket closed under
them, and report this process's numbers for /metrics.

A mixin of `Hub` (realtime/hub.py): the state it reads (`units`, `users`, the counters) is the hub's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

from django.conf import settings

from backend.events import groups
from backend.events.groups import unit_group_name, user_group_name
from backend.events.metrics import CLOSE_FIELD, UNIT_FIELD, realtime_snapshot_save

from . import connections, selectors

logger = logging.getLogger("realtime.hub")

# Group memberships expire in the channel layer (group_expiry); re-add them well before that.
GROUP_REFRESH_SECONDS = 600


class PeriodicChecks:
    async def _maintenance(self) -> None:
        """Every REALTIME_REVALIDATE_SECONDS: fill what the push missed, re-validate users. Each check
        runs on its own: one failing (a unit's fill, say) never skips the other."""
        interval = settings.REALTIME_REVALIDATE_SECONDS
        since_refresh = 0.0
        while True:
            await asyncio.sleep(interval)
            since_refresh += interval
            checks = [self._catch_up, self._revalidate_users]
            if since_refresh >= GROUP_REFRESH_SECONDS:
                since_refresh = 0.0
                checks.append(self._refresh_groups)
            for check in checks:
                try:
                    await check()
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - try again next tick
                    logger.warning("hub %s failed", check.__name__, exc_info=True)

    async def _housekeeping(self) -> None:
        """Every REALTIME_REPORT_SECONDS: keep this process's connection slots alive (its heartbeat),
        unregister closed connections, report this process's numbers."""
        interval = settings.REALTIME_REPORT_SECONDS
        while True:
            await asyncio.sleep(interval)
            try:
                await connections.heartbeat()
                await self._reap_closed()
                await self._report_metrics(ttl=max(interval * 5, 10))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - try again next tick
                logger.warning("hub housekeeping failed", exc_info=True)

    async def _reap_closed(self) -> None:
        """Drop connections whose transport has closed but which are still registered.

        Daphne tells a consumer its socket closed, and the consumer leaves; this is the net under
        that: a connection seen closed at two housekeeping ticks in a row is unregistered here."""
        # One walk over the units' sets: every registered connection is in its unit's (join adds it
        # there first, leave removes it from both before any await), so the users' sets add nothing
        # but time (the walk is O(connections) on the event loop, every REALTIME_REPORT_SECONDS).
        started = time.monotonic()
        closed = {
            listener for unit in self.units.values() for listener in unit.listeners if not listener.is_open()
        }
        self._timed("reap closed", started)
        stale, self._closed_seen = closed & self._closed_seen, closed
        for listener in stale:
            logger.warning("unregistering a closed connection of user %s the consumer did not release", listener.user_id)
            self.reaped_total += 1
            await self.leave(listener)

    def _new_epoch(self, unit_id: str, unit, epoch: str, seq: int) -> None:  # unit: the hub's _Unit
        """The unit's stream has a new epoch (reset, or restored): its seqs count afresh from `seq`.
        Every connection is told to refetch (`epoch_changed`); delivery continues from there."""
        if not epoch or epoch == unit.epoch:
            return
        if not unit.epoch:  # joined before the unit's stream existed: this is its first epoch
            unit.epoch = epoch
            return
        logger.warning("unit %s has a new stream epoch (seq %s); its connections resync", unit_id, seq)
        unit.epoch, unit.delivered = epoch, seq
        for listener in tuple(unit.listeners):
            try:
                listener.resync("epoch_changed", seq, epoch)
            except Exception:  # noqa: BLE001 - one broken connection must not starve the others
                listener.broken()

    async def _catch_up(self) -> None:
        if not self.units:
            return
        streams = await selectors.units_stream(list(self.units))
        for unit_id, (seq, epoch) in streams.items():
            unit = self.units.get(unit_id)
            if unit is not None and epoch != unit.epoch:
                async with unit.lock:
                    self._new_epoch(unit_id, unit, epoch, seq)
            elif unit is not None and seq > unit.delivered:
                try:
                    async with unit.lock:
                        await self._fill(unit_id, unit, upto=seq)
                except Exception:  # noqa: BLE001 - one unit's failed fill must not hold up the others
                    logger.warning("catch-up of unit %s failed", unit_id, exc_info=True)

    async def _revalidate_users(self) -> None:
        if not self.users:
            return
        # Judge only the users whose state was read: a user who connected while the read waited
        # (behind a burst of handshakes, say) has just been authenticated, and is checked next tick.
        user_ids = list(self.users)
        states = await selectors.users_access(user_ids)
        started = time.monotonic()
        for user_id in user_ids:
            active, unit_id = states.get(user_id, (False, None))
            for listener in list(self.users.get(user_id, ())):
                if not active or unit_id != listener.unit_id:
                    await listener.user_message(
                        {"type": groups.USER_CLOSE, "code": 4003, "reason": "access_revoked"}
                    )
        self._timed("revalidate users", started)

    async def _report_metrics(self, ttl: float) -> None:
        """This process's WebSocket numbers, for /metrics (labelled by process, or summed across
        processes there): counters, connections in all and per unit, the commit-to-client histogram's
        buckets and sum, closes by code."""
        connections = self._connections()
        numbers = {
            "connections": connections,
            "delivered": self.delivered_total,
            "filled": self.filled_total,
            "reaped": self.reaped_total,
            **self.commit_to_client.fields(),
        }
        for unit_id, unit in self.units.items():
            if unit.listeners:
                numbers[f"{UNIT_FIELD}{unit_id}"] = len(unit.listeners)
        for code, count in self.error_closes.items():
            numbers[f"{CLOSE_FIELD}{code}"] = count
        await realtime_snapshot_save(f"{socket.gethostname()}:{os.getpid()}", numbers, ttl=ttl)

    async def _refresh_groups(self) -> None:
        if self.channel_name is None:
            return
        try:
            for unit_id in list(self.units):
                await self._group_add(unit_group_name(unit_id))
            for user_id in list(self.users):
                await self._group_add(user_group_name(user_id))
        except Exception:  # noqa: BLE001
            logger.warning("re-joining groups failed; will retry", exc_info=True)

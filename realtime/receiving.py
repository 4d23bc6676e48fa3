"""A process's own channel-layer channel, started on the running event loop and read for as long
as the process runs: the hub's (`unit.events`, `job.update`, ...) and presence's
(`presence.update`) are each one of these; both register connections per unit (`join_unit`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)


class ProcessChannel:
    """Owns a channel on the layer (named `channel_prefix` + a random part) and the background tasks
    that serve it, started lazily on the running loop, and again on a new loop (a test's, say):
    `_on_new_loop` forgets what belonged to the old one, `_background` starts the tasks."""

    channel_prefix = "process."
    group_ops_concurrency = 8

    def __init__(self) -> None:
        self.layer = None
        self.channel_name: str | None = None
        self._tasks: list[asyncio.Task] = []
        self._start_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._group_ops: asyncio.Semaphore | None = None

    def _on_new_loop(self) -> None:
        """Forget the state of the previous event loop."""

    def _background(self, loop: asyncio.AbstractEventLoop) -> list[asyncio.Task]:
        raise NotImplementedError

    async def _ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop and self.channel_name is not None:
            return
        if self._start_lock is None or self._loop is not loop:
            self._start_lock = asyncio.Lock()
            self._group_ops = asyncio.Semaphore(self.group_ops_concurrency)
            self._loop = loop
            self.channel_name = None
            self._on_new_loop()
        async with self._start_lock:
            if self.channel_name is not None:
                return
            self.layer = get_channel_layer()
            self.channel_name = await self.layer.new_channel(self.channel_prefix)
            self._tasks = self._background(loop)


class UnitRecord(Protocol):
    """What `join_unit` needs of a process's record of one unit."""

    joined: bool
    listeners: set
    lock: asyncio.Lock


async def join_unit(
    units: dict[str, UnitRecord], unit_id: str, make: Callable[[], UnitRecord], listener,
    first_join: Callable[[UnitRecord], Awaitable[None]],
) -> UnitRecord:
    """Register `listener` on `units[unit_id]` (made by `make` if the process has none), after
    `first_join(unit)` if the unit has not joined its group yet (under the unit's lock, so concurrent
    connections of one unit join once). Race-safe against the last listener leaving meanwhile (the
    record it waited on is gone: start over); a first join that fails leaves no husk behind, so the
    next connection of the unit starts over."""
    while True:
        unit = units.get(unit_id)
        if unit is None:
            unit = units[unit_id] = make()
        async with unit.lock:
            if units.get(unit_id) is not unit:
                continue  # the last listener left while we waited: start over
            if not unit.joined:
                try:
                    await first_join(unit)
                except BaseException:
                    if not unit.listeners and units.get(unit_id) is unit:
                        del units[unit_id]
                    raise
                unit.joined = True
            unit.listeners.add(listener)
            return unit


async def receive_forever(
    layer, channel_name: str, dispatch: Callable[[dict], Awaitable[None] | None],
    rejoin: Callable[[], Awaitable[None]], what: str,
) -> None:
    """Hand every message to `dispatch`; one that fails is logged and never stops the reading. A
    receive that fails (Redis restarted or unreachable) is retried after a backoff of 0.1 s doubling
    up to 5 s, and `rejoin` re-adds the channel to its groups (a restarted Redis forgot them)."""
    backoff = 0.1
    while True:
        try:
            message = await layer.receive(channel_name)
            backoff = 0.1
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - Redis restarted or unreachable: wait, re-join
            logger.warning("%s receive failed; retrying in %.1fs", what, backoff, exc_info=True)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            await rejoin()
            continue
        try:
            result = dispatch(message)
            if asyncio.iscoroutine(result):
                await result
        except Exception:  # noqa: BLE001 - one bad message must not stop the reading
            logger.exception("%s failed to dispatch %s", what, message.get("type"))

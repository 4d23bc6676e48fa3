"""The per-process fan-out hub.

Standard Channels would give every WebSocket its own channel-layer channel and send every unit
event once per connection: a Redis message, a consumer dispatch and a re-encode per client. The hub
is the process's one channel-layer client instead. It joins `unit_<id>` (and `user_<id>`) groups on
behalf of the connections in this process, receives each unit event once, and hands the frame —
encoded once, by the publisher — to every local connection of that unit.

It also makes delivery gap-free per unit, whatever the transport did:
- it tracks the last seq it delivered per unit and drops anything at or below it (duplicates from
  the sweeper or a re-publish);
- when an event arrives ahead of the next expected seq (publishers race, a message was dropped at
  channel-layer capacity, Redis restarted), it reads the missing events from the outbox first. They
  are guaranteed to be there: a seq is taken under the unit's counter lock, so when seq n is
  visible, every seq below n has committed;
- every few seconds it compares each unit's committed seq with what it delivered and fills the
  difference from the outbox (nothing is lost even if a publish never reaches this process);
- the same tick re-validates the users behind the connections (deactivated / moved -> 4003).

Its periodic checks are in realtime/hub_checks.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from datetime import datetime
from typing import Protocol

from django.conf import settings

from backend.common.faults import afault_point
from backend.common.trace import trace_handed_over
from backend.events import groups, schema
from backend.events.groups import unit_group_name, user_group_name
from backend.events.metrics import LatencyHistogram

from . import selectors
from .frames import Outgoing
from .hub_checks import PeriodicChecks
from .receiving import ProcessChannel, join_unit, receive_forever

logger = logging.getLogger(__name__)

# How often the stall watch looks at the event loop (REALTIME_STALL_WARN_MS is the threshold).
STALL_PROBE_SECONDS = 0.02
# group_add / group_discard calls in flight at once: each holds a Redis connection, and a burst of
# (dis)connects by distinct users must not need hundreds of them.
GROUP_OPS_CONCURRENCY = 32

# Commit-to-client latency (records_commit_to_client_seconds) starts at the event's `timestamp`, the
# outbox row's created_at, written in the committing transaction: the last `"timestamp":"` of a
# data_update frame is its own (it comes after `data`, and a quote inside a JSON string is escaped).
_STAMP = '"timestamp":"'
_STAMP_START = len(_STAMP)
_STAMP_END = _STAMP_START + len("2026-01-15T10:30:00.000Z")
_stamp_seconds: dict[str, float | None] = {}
_UNSEEN = object()


def _stamp(frame: str) -> str | None:
    at = frame.rfind(_STAMP)
    return frame[at + _STAMP_START : at + _STAMP_END] if at >= 0 else None


def _commit_seconds(stamp: str) -> float | None:
    """Unix time of a frame's `timestamp` (cached: the events of one transaction share it)."""
    seconds = _stamp_seconds.get(stamp, _UNSEEN)
    if seconds is _UNSEEN:
        try:
            seconds = datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            seconds = None
        if len(_stamp_seconds) >= 4096:
            _stamp_seconds.clear()
        _stamp_seconds[stamp] = seconds
    return seconds


class Listener(Protocol):
    user_id: str
    unit_id: str

    def deliver(self, event: Outgoing) -> None: ...

    def deliver_all(self, events: tuple[Outgoing, ...]) -> None: ...

    def resync(self, reason: str, seq: int, epoch: str | None = None) -> None: ...

    def broken(self) -> None: ...

    def is_open(self) -> bool: ...

    def job_frame(self, frame: Outgoing) -> None: ...

    def user_frame(self, frame: Outgoing) -> None: ...

    def notification_frame(self, notification_id: str, frame: Outgoing) -> None: ...

    async def user_message(self, message: dict) -> None: ...


class _Unit:
    __slots__ = ("listeners", "delivered", "lock", "joined", "epoch")

    def __init__(self) -> None:
        self.joined = False
        self.listeners: set[Listener] = set()
        self.delivered = 0  # last seq handed to listeners, contiguous from the baseline
        self.epoch = ""  # the stream's epoch `delivered` counts in
        self.lock = asyncio.Lock()  # held while joining and while filling from the outbox


class Hub(PeriodicChecks, ProcessChannel):
    channel_prefix = "hub."
    group_ops_concurrency = GROUP_OPS_CONCURRENCY

    def __init__(self) -> None:
        super().__init__()
        self.units: dict[str, _Unit] = {}
        self.users: dict[str, set[Listener]] = defaultdict(set)
        self.delivered_total = 0  # frames handed to connections, for /metrics
        self.reaped_total = 0  # connections dropped because their transport had closed under us
        # Events delivered from the outbox rather than by the channel layer's push (a gap, a missed
        # message, the catch-up tick): near zero while the push path is healthy.
        self.filled_total = 0
        # From each event's commit to its frame handed to the connections, weighted by connections.
        self.commit_to_client = LatencyHistogram()
        # Connections this process closed with an error or application code, by code (for /metrics).
        self.error_closes: dict[int, int] = {}
        self._reporting: asyncio.Task | None = None  # the housekeeping task, which reports them
        self._closed_seen: set[Listener] = set()  # closed at the last tick, still registered
        self.stalls_total = 0  # event-loop stalls over REALTIME_STALL_WARN_MS (logged)
        self._longest_pass: tuple[str, float] = ("", 0.0)

    # --- lifecycle ------------------------------------------------------------------------

    def _on_new_loop(self) -> None:
        self.units.clear()
        self.users.clear()
        self._closed_seen.clear()

    def _background(self, loop: asyncio.AbstractEventLoop) -> list[asyncio.Task]:
        tasks = [
            loop.create_task(self._reader(), name="realtime-hub-reader"),
            loop.create_task(self._maintenance(), name="realtime-hub-maintenance"),
        ]
        if settings.REALTIME_STALL_WARN_MS > 0:
            tasks.append(loop.create_task(self._watch_loop(), name="realtime-hub-stall-watch"))
        self._ensure_reporting()
        return tasks

    # --- the server-side trace of a late update ----------------------------------------------

    async def _watch_loop(self) -> None:
        """Warn when the event loop could not run for longer than REALTIME_STALL_WARN_MS: every
        update to this process's clients waited that long. The warning names the longest periodic
        pass over the connections that ran meanwhile (`_timed`), if any; a stall with none was
        something else (a garbage collection, Daphne's own passes: realtime/daphne.py logs those)."""
        limit = settings.REALTIME_STALL_WARN_MS / 1000
        while True:
            before = time.monotonic()
            self._longest_pass = ("", 0.0)
            await asyncio.sleep(STALL_PROBE_SECONDS)
            late = time.monotonic() - before - STALL_PROBE_SECONDS
            if late > limit:
                self.stalls_total += 1
                name, took = self._longest_pass
                logger.warning(
                    "event loop stalled %.0f ms with %d connections%s", late * 1000, self._connections(),
                    f" (longest pass meanwhile: {name}, {took * 1000:.0f} ms)" if name else "",
                )

    def _timed(self, name: str, started: float) -> None:
        """Note how long a synchronous pass over the connections took (since `started`)."""
        took = time.monotonic() - started
        if took > self._longest_pass[1]:
            self._longest_pass = (name, took)

    def _connections(self) -> int:
        return sum(len(unit.listeners) for unit in self.units.values())

    def _ensure_reporting(self) -> None:
        """Run the housekeeping (which reports this process's numbers) on the running loop. Also
        started by a close before any connection joined: a process that only refuses connections
        (a JWT key rotation: every client gets 4001) must report those closes too."""
        loop = asyncio.get_running_loop()
        task = self._reporting
        if task is None or task.done() or task.get_loop() is not loop:
            self._reporting = loop.create_task(self._housekeeping(), name="realtime-hub-housekeeping")

    def closed_with(self, code: int) -> None:
        """Count a connection the server closes with `code` (records_ws_error_closes_total)."""
        self.error_closes[code] = self.error_closes.get(code, 0) + 1
        self._ensure_reporting()

    # --- membership (called by consumers) -------------------------------------------------

    async def join(self, listener: Listener) -> None:
        """Register a connection. Its unit's events reach `listener.deliver` from now on, in
        seq order, starting after the unit's seq as of this call (the caller replays older ones)."""
        await self._ensure_started()

        async def first_join(unit: _Unit) -> None:
            await self._group_add(unit_group_name(listener.unit_id))
            # Baseline read after the subscription: every later seq arrives by message (or is
            # filled from the outbox); every earlier one is the caller's replay.
            unit.delivered, unit.epoch = await selectors.unit_stream(listener.unit_id)

        await join_unit(self.units, listener.unit_id, _Unit, listener, first_join)
        users = self.users[listener.user_id]
        first = not users
        # Registered before the await, so a concurrent leave of this user's other connection
        # never sees an empty set and drops the entry (and the group) from under this one.
        users.add(listener)
        if first:
            await self._group_add(user_group_name(listener.user_id))

    async def leave(self, listener: Listener) -> None:
        """Unregister a connection. Safe to call for one that never (fully) joined, and twice.

        The connection is forgotten before the first await, so a leave that is cancelled or whose
        group_discard fails never leaves it registered (delivering to a dead socket, counted in
        /metrics); only the group clean-up is awaited."""
        self._closed_seen.discard(listener)
        unit = self.units.get(listener.unit_id)
        users = self.users.get(listener.user_id)
        if unit is not None:
            unit.listeners.discard(listener)
        if users is not None:
            users.discard(listener)
            if not users:
                del self.users[listener.user_id]
        if unit is not None and not unit.listeners:
            async with unit.lock:  # not while a join of this unit is half-way
                if not unit.listeners and self.units.get(listener.unit_id) is unit:
                    del self.units[listener.unit_id]
                    await self._discard(unit_group_name(listener.unit_id), lambda: listener.unit_id in self.units)
        if users is not None and not users:
            await self._discard(user_group_name(listener.user_id), lambda: listener.user_id in self.users)

    async def _group_add(self, group: str) -> None:
        async with self._group_ops:
            await afault_point("hub.group_add", group=group)
            await self.layer.group_add(group, self.channel_name)

    async def _discard(self, group: str, wanted_again) -> None:
        """Leave `group`, unless a new connection wanted it again while this waited its turn (its
        join has sent, or is about to send, the group_add that this discard would undo)."""
        try:
            async with self._group_ops:
                if not wanted_again():
                    await self.layer.group_discard(group, self.channel_name)
        except Exception:  # noqa: BLE001 - membership expires by itself; never fail a disconnect
            logger.warning("group_discard %s failed", group, exc_info=True)

    # --- receiving ------------------------------------------------------------------------

    async def _reader(self) -> None:
        await receive_forever(self.layer, self.channel_name, self._dispatch, self._refresh_groups, "hub")

    async def _dispatch(self, message: dict) -> None:
        kind = message.get("type")
        if kind == groups.UNIT_EVENTS:
            await self._unit_events(message["unit_id"], message["events"])
            if "trace" in message and message["unit_id"] in self.units:  # the request trace (issue 33)
                trace_handed_over(message["trace"], message["unit_id"], message["events"][0][0],
                                  events=len(message["events"]))
        elif kind in (groups.JOB_UPDATE, groups.USER_NOTIFICATIONS, groups.USER_FRAME):
            self._to_user(message)
        elif kind == groups.UNIT_EPOCH:
            unit = self.units.get(message.get("unit_id", ""))
            if unit is not None:
                async with unit.lock:
                    self._new_epoch(message["unit_id"], unit, message["epoch"], int(message["seq"]))
        elif kind == groups.USER_CLOSE:
            for listener in list(self.users.get(message.get("user_id", ""), ())):
                await listener.user_message(message)

    def _to_user(self, message: dict) -> None:
        """A user's job_update or notifications, each encoded and framed once for all of the
        user's connections in this process, as a unit's events are (a user with many tabs, or
        one account on many screens, would otherwise cost a JSON encoding and a frame each)."""
        listeners = tuple(self.users.get(message.get("user_id", ""), ()))
        if not listeners:
            return
        if message["type"] == groups.USER_FRAME:
            frame = Outgoing(0, schema.encode(message["message"]))
            for listener in listeners:
                listener.user_frame(frame)
            return
        if message["type"] == groups.JOB_UPDATE:
            frame = Outgoing(0, schema.encode(schema.job_update(job=message["job"])))
            notes = None
        else:
            notes = [(note.get("id"), Outgoing(0, schema.encode(schema.notification(notification=note))))
                     for note in message.get("notifications", ())]
        unit_id = message.get("unit_id") if notes is None else None
        for listener in listeners:
            try:
                if notes is None:
                    if unit_id is None or listener.unit_id == unit_id:  # (a moved user: not the old unit's)
                        listener.job_frame(frame)
                else:
                    for notification_id, note_frame in notes:
                        listener.notification_frame(notification_id, note_frame)
            except Exception:  # noqa: BLE001 - one broken connection must not starve the others
                logger.exception("a user's frame could not be written; closing the connection")
                listener.broken()

    async def _unit_events(self, unit_id: str, events: list) -> None:
        unit = self.units.get(unit_id)
        if unit is None:
            return
        # An event is [seq, frame] or [seq, frame, activity frames] (backend.events.broadcast).
        fresh = [event for event in events if event[0] > unit.delivered]
        if not fresh:
            return
        if fresh[0][0] != unit.delivered + 1:
            async with unit.lock:
                await self._fill(unit_id, unit, upto=fresh[0][0] - 1)
            fresh = [event for event in fresh if event[0] > unit.delivered]
        self._deliver(unit, fresh)

    def _deliver(self, unit: _Unit, events: list[tuple[int, str]]) -> None:
        listeners = tuple(unit.listeners)
        before = unit.delivered
        outgoing = []
        for seq, frame, *activity in events:
            if seq != before + len(outgoing) + 1:
                # Publishers send each unit's events in seq order, so this cannot happen; if it
                # ever does, stop: the next outbox fill delivers the rest in order.
                logger.error("hub got seq %s after %s; leaving it to the outbox fill", seq, before + len(outgoing))
                break
            outgoing.append(Outgoing(seq, frame, activity[0] if activity else ""))  # encoded and framed once for all
        if not outgoing:
            return
        outgoing = tuple(outgoing)
        # Connection by connection, all of the message's events at once: a connection's frames of
        # one change (a request and its crates) leave in one write, one system call, not one each.
        for listener in listeners:
            try:
                listener.deliver_all(outgoing)
            except Exception:  # noqa: BLE001 - one broken connection must not starve the others
                logger.exception("delivering seqs %s-%s to a connection failed; closing it",
                                 outgoing[0].seq, outgoing[-1].seq)
                listener.broken()
        unit.delivered = outgoing[-1].seq
        self.delivered_total += len(listeners) * len(outgoing)
        if listeners:
            self._observe(events, len(outgoing), len(listeners))

    def _observe(self, events: list[tuple[int, str]], delivered: int, listeners: int) -> None:
        """Commit-to-client latency of the first `delivered` events, each handed to `listeners`
        connections. Nothing per event on the usual path: the events of one message come from one
        transaction and share their commit timestamp, so when the first and the last agree it is one
        observation of weight events x connections; otherwise one per event. One clock read for the
        whole delivery: the frames reach the sockets when the event loop next runs (Twisted writes a
        transport's buffer then), after this call."""
        now = time.time()
        first = _stamp(events[0][1])
        if delivered == 1 or first == _stamp(events[delivered - 1][1]):
            stamps = ((first, delivered),)
        else:
            stamps = tuple((_stamp(frame), 1) for _, frame in events[:delivered])
        for stamp, count in stamps:
            committed = _commit_seconds(stamp) if stamp else None
            if committed is not None:
                self.commit_to_client.observe(now - committed, count * listeners)

    async def _fill(self, unit_id: str, unit: _Unit, upto: int | None) -> None:
        """Deliver committed events after `unit.delivered` (up to `upto`) read from the outbox.
        Called with `unit.lock` held."""
        while upto is None or unit.delivered < upto:
            after = unit.delivered
            rows = await selectors.outbox_frames(unit_id, after=after, upto=upto, limit=1000, activity=True)
            if not rows:
                return
            if rows[0][0] != after + 1:
                logger.error("outbox lacks seq %s of unit %s (pruned?)", after + 1, unit_id)
                for listener in tuple(unit.listeners):
                    listener.resync("history_unavailable", rows[0][0] - 1)
                unit.delivered = rows[0][0] - 1
            self.filled_total += len(rows)
            self._deliver(unit, rows)
            if len(rows) < 1000:
                return


hub = Hub()

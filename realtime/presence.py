"""Presence: who of the unit is online, and what they are viewing or editing (docs/realtime.md,
"Presence"). Advisory: not audited, not in the outbox, no seq.

Design (chosen by measurement, see the docs): the state is shared in the keys Redis, with the
liveness of each Daphne process taken from realtime/connections.py's heartbeat keys; changes travel
to the unit's processes over the channel layer, on a channel and group of their own
(`presence_<unit>`), so presence traffic never queues in front of data updates.

Per unit `U`, under `pr:U:`:

| key | type | holds |
| --- | --- | --- |
| `c:<user>` | hash | one field per connection, `<process>|<connection>` -> `<ms>|<viewing>|<editing>` |
| `u` | set | users with connections or an unpublished change |
| `p` | hash | user -> the state last published, `<version>|<since ms>|<viewing>|<editing>` |
| `t` | hash | user -> when a change of the user was last published (the throttle) |
| `i` | hash | user -> profile JSON (username, full_name, role) |
| `v` | string | the unit's presence version, incremented by every publish |

One Lua script applies a connection's change and decides, atomically, whether to publish: a
user's state is the merge of their connections (the most recent non-empty `viewing` and
`editing`), so two tabs are one user; a publish happens only when the merged state changed. What
a user views or edits is published at most once per REALTIME_PRESENCE_INTERVAL_MS per user (the
latest state goes out when the interval has passed: a trailing flush); joining and leaving are
published at once. A connection goes online before it is greeted, and the snapshot it gets is the
published state, so it lists every connection greeted before it; deltas at or below the version
read before it went online are dropped for that connection. A
killed process's connections go with its heartbeat key: every process sweeps the units it serves
every REALTIME_PRESENCE_SWEEP_SECONDS and publishes whoever left.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from datetime import UTC, datetime

from django.conf import settings

from backend.common.redis import keys_client_async
from backend.events import schema

from . import connections
from .frames import Outgoing
from .presence_scripts import APPLY as _APPLY
from .presence_scripts import SNAPSHOT as _SNAPSHOT
from .receiving import ProcessChannel, join_unit, receive_forever

logger = logging.getLogger(__name__)

PREFIX = "pr:"
STATES = schema.PRESENCE_STATES
ENTITIES = frozenset(schema.ENTITIES)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Presence keys live this long after the unit's last presence change or sweep.
KEY_TTL = 86_400
# A sweep removes this process's own field of a connection it no longer holds only once the field is
# this old (a connection registering while the sweep runs is never taken for a leftover).
OWN_FIELD_GRACE_MS = 5_000


def presence_group_name(unit_id: str) -> str:
    return f"presence_{unit_id}"


def unit_prefix(unit_id: str) -> str:
    return f"{PREFIX}{unit_id}:"


_scripts: dict[tuple[int, str], object] = {}


def _script(source: str):
    """The script registered on the running loop's keys client (EVALSHA, loaded on first use)."""
    client = keys_client_async()
    key = (id(client), source)
    found = _scripts.get(key)
    if found is None:
        found = _scripts[key] = client.register_script(source)
    return found


# --- the frames ------------------------------------------------------------------------------------


def _target(value: str) -> dict | None:
    if not value:
        return None
    entity, _, object_id = value.partition(":")
    return {"entity": entity, "id": object_id}


def _since(ms: int) -> str:
    return schema.utc_timestamp(datetime.fromtimestamp(ms / 1000, UTC))


def user_object(user_id: str, profile: str | bytes, viewing: str, editing: str, since_ms: int) -> dict:
    try:
        info = json.loads(profile) if profile else {}
    except ValueError:
        info = {}
    return {
        "id": user_id,
        "username": info.get("username", ""),
        "full_name": info.get("full_name", ""),
        "role": info.get("role", ""),
        "viewing": _target(viewing),
        "editing": _target(editing),
        "since": _since(since_ms),
    }


def presence_update_frame(user: dict, state: str) -> str:
    return schema.encode(schema.presence_update(user=user, state=state))


def presence_frame(users: list[dict]) -> str:
    return schema.encode(schema.presence(users=users))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- validating client messages ---------------------------------------------------------------------


def parse_target(message: dict) -> tuple[str, str] | str:
    """(entity, id) of a `viewing` / `editing` message, or the reason it is not valid."""
    entity, object_id = message.get("entity"), message.get("id")
    if not isinstance(entity, str) or entity not in ENTITIES:
        return f'"entity" must be one of {", ".join(schema.ENTITIES)}.'
    if not isinstance(object_id, str) or not _UUID.match(object_id.lower()):
        return '"id" must be a record id (a UUID).'
    return entity, object_id.lower()


# --- one connection's presence ------------------------------------------------------------------------


class ConnectionPresence:
    """A presence-enabled connection's state in Redis. Changes are applied one at a time, latest
    wins: while one is in flight, further ones only replace the wanted state (a burst collapses)."""

    def __init__(self, unit_id: str, user_id: str, slot: str, profile: str) -> None:
        self.unit_id, self.user_id, self.profile = unit_id, user_id, profile
        self.field = f"{connections.PROCESS}|{slot}"
        self.slot = slot
        self.wanted: tuple[str, str] | None = ("", "")  # (viewing, editing) as "entity:id" or ""
        self.applied: tuple[str, str] | None = None
        self.task: asyncio.Task | None = None

    async def register(self) -> None:
        """Put this connection online now, before it is greeted: its user is in the published state
        when this returns (a join is never throttled), so every snapshot read after lists them."""
        await presence.apply(self.unit_id, self.user_id, "set", self.field, "|", self.profile)
        self.applied = ("", "")

    def want(self, viewing: str, editing: str) -> None:
        self.wanted = (viewing, editing)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while self.wanted is not None and self.wanted != self.applied:
            state = self.wanted
            try:
                await presence.apply(
                    self.unit_id, self.user_id, "set", self.field, f"{state[0]}|{state[1]}",
                    self.profile if self.applied is None else "",
                )
                self.applied = state
            except Exception:  # noqa: BLE001 - advisory: the next change or sweep corrects it
                logger.warning("presence change of user %s failed", self.user_id, exc_info=True)
                return

    async def close(self) -> None:
        self.wanted = None
        task = self.task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 5)
            except Exception:  # noqa: BLE001
                pass
        if self.applied is None:
            return
        try:
            await presence.apply(self.unit_id, self.user_id, "del", self.field, "", "")
        except Exception:  # noqa: BLE001 - the sweep removes a field whose connection is gone
            logger.warning("presence leave of user %s failed", self.user_id, exc_info=True)


# --- the process's presence hub ---------------------------------------------------------------------


class _PresenceUnit:
    __slots__ = ("listeners", "seen", "lock", "joined")

    def __init__(self) -> None:
        self.listeners: set = set()
        self.seen: dict[str, int] = {}  # user -> the highest version delivered here
        self.lock = asyncio.Lock()
        self.joined = False


class PresenceHub(ProcessChannel):
    """The process's presence traffic: one channel-layer channel (separate from the data hub's),
    the `presence_<unit>` groups of the units whose presence-enabled connections it holds, the
    periodic sweep, and the throttle's trailing flushes."""

    channel_prefix = "presence."

    def __init__(self) -> None:
        super().__init__()
        self.units: dict[str, _PresenceUnit] = {}
        self.timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self.published_total = 0
        self.delivered_total = 0

    def _on_new_loop(self) -> None:
        self.units.clear()
        self.timers.clear()

    def _background(self, loop: asyncio.AbstractEventLoop) -> list[asyncio.Task]:
        return [
            loop.create_task(self._reader(), name="realtime-presence-reader"),
            loop.create_task(self._sweeper(), name="realtime-presence-sweeper"),
        ]

    # --- Redis ---------------------------------------------------------------------------------

    async def apply(self, unit_id: str, user_id: str, mode: str, field: str, value: str, profile: str) -> None:
        script = _script(_APPLY)
        result = await script(
            args=[
                unit_prefix(unit_id), connections.PROCESS_KEY, settings.REALTIME_PRESENCE_INTERVAL_MS, KEY_TTL,
                mode, user_id, field, value, profile,
            ]
        )
        await self._publish(unit_id, result)

    async def _sweep_unit(self, unit_id: str) -> None:
        unit = self.units.get(unit_id)
        own = [listener.presence.slot for listener in (unit.listeners if unit else ()) if listener.presence is not None]
        script = _script(_APPLY)
        result = await script(
            args=[
                unit_prefix(unit_id), connections.PROCESS_KEY, settings.REALTIME_PRESENCE_INTERVAL_MS, KEY_TTL,
                "sweep", connections.PROCESS, OWN_FIELD_GRACE_MS, *own,
            ]
        )
        await self._publish(unit_id, result)

    async def _flush(self, unit_id: str, user_id: str) -> None:
        self.timers.pop((unit_id, user_id), None)
        try:
            await self.apply(unit_id, user_id, "flush", "", "", "")
        except Exception:  # noqa: BLE001 - the sweep flushes it later
            logger.warning("presence flush of user %s failed", user_id, exc_info=True)

    async def _publish(self, unit_id: str, result: list) -> None:
        for record in result or ():
            user_id, kind = _text(record[0]), _text(record[1])
            if kind == "wait":
                self._schedule_flush(unit_id, user_id, int(record[2]) / 1000)
                continue
            version, state, viewing, editing, since, profile = record[2:8]
            user = user_object(user_id, profile, _text(viewing), _text(editing), int(since))
            self.published_total += 1
            await self.layer.group_send(
                presence_group_name(unit_id),
                {
                    "type": "presence.update", "unit_id": unit_id, "user_id": user_id, "version": int(version),
                    "frame": presence_update_frame(user, _text(state)),
                },
            )

    def _schedule_flush(self, unit_id: str, user_id: str, delay: float) -> None:
        key = (unit_id, user_id)
        if key in self.timers:
            return
        loop = asyncio.get_running_loop()
        self.timers[key] = loop.call_later(
            max(delay, 0.0) + 0.005, lambda: asyncio.ensure_future(self._flush(unit_id, user_id))
        )

    async def snapshot(self, unit_id: str) -> tuple[int, list[dict]]:
        version, published, profiles = await _script(_SNAPSHOT)(args=[unit_prefix(unit_id)])
        info = {_text(profiles[i]): profiles[i + 1] for i in range(0, len(profiles), 2)}
        users = []
        for i in range(0, len(published), 2):
            user_id = _text(published[i])
            _, since, viewing, editing = _text(published[i + 1]).split("|", 3)
            users.append(user_object(user_id, info.get(user_id, b""), viewing, editing, int(since)))
        users.sort(key=lambda user: (user["username"], user["id"]))
        return int(version), users

    # --- membership ----------------------------------------------------------------------------

    async def join(self, listener) -> int:
        """Register a presence-enabled connection (its `presence_deliver` gets the unit's deltas
        from now on) and put it online; returns the version deltas are new after.

        The connection goes online (awaited) before it is greeted, so any snapshot read after that
        lists it. The version is read before it went online, so its own `joined` (and anything in
        between) still reaches it as a delta; a delta that repeats what its snapshot shows is
        harmless (deltas are states)."""
        await self._ensure_started()

        async def first_join(_unit: _PresenceUnit) -> None:
            async with self._group_ops:
                await self.layer.group_add(presence_group_name(listener.unit_id), self.channel_name)

        await join_unit(self.units, listener.unit_id, _PresenceUnit, listener, first_join)
        floor = int(await keys_client_async().get(unit_prefix(listener.unit_id) + "v") or 0)
        await listener.presence.register()
        return floor

    async def snapshot_for(self, listener) -> list[dict]:
        """The unit's online users (its own included) for a joined connection."""
        _, users = await self.snapshot(listener.unit_id)
        return users

    async def leave(self, listener) -> None:
        unit = self.units.get(listener.unit_id)
        if unit is None:
            return
        unit.listeners.discard(listener)
        if not unit.listeners:
            async with unit.lock:
                if not unit.listeners and self.units.get(listener.unit_id) is unit:
                    del self.units[listener.unit_id]
                    try:
                        async with self._group_ops:
                            if listener.unit_id not in self.units:
                                await self.layer.group_discard(presence_group_name(listener.unit_id), self.channel_name)
                    except Exception:  # noqa: BLE001 - membership expires by itself
                        logger.warning("presence group_discard failed", exc_info=True)

    # --- receiving -----------------------------------------------------------------------------

    async def _reader(self) -> None:
        await receive_forever(self.layer, self.channel_name, self._dispatch, self._refresh_groups, "presence")

    def _dispatch(self, message: dict) -> None:
        if message.get("type") == "presence.update":
            self._deliver(message["unit_id"], message["user_id"], int(message["version"]), message["frame"])

    def _deliver(self, unit_id: str, user_id: str, version: int, frame: str) -> None:
        unit = self.units.get(unit_id)
        if unit is None:
            return
        # Publishers race (two tabs on two processes): an older state of a user never follows a newer one.
        if version <= unit.seen.get(user_id, 0):
            return
        unit.seen[user_id] = version
        event = Outgoing(0, frame)  # framed once for every local connection
        for listener in tuple(unit.listeners):
            try:
                listener.presence_deliver(version, event)
                self.delivered_total += 1
            except Exception:  # noqa: BLE001
                logger.exception("delivering presence to a connection failed")

    async def _sweeper(self) -> None:
        interval = settings.REALTIME_PRESENCE_SWEEP_SECONDS
        since_refresh = 0.0
        while True:
            await asyncio.sleep(interval)
            since_refresh += interval
            if since_refresh >= 600:
                since_refresh = 0.0
                await self._refresh_groups()
            for unit_id in list(self.units):
                try:
                    await self._sweep_unit(unit_id)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - try again next tick
                    logger.warning("presence sweep of unit %s failed", unit_id, exc_info=True)

    async def _refresh_groups(self) -> None:
        try:
            for unit_id in list(self.units):
                async with self._group_ops:
                    await self.layer.group_add(presence_group_name(unit_id), self.channel_name)
        except Exception:  # noqa: BLE001
            logger.warning("re-joining presence groups failed; will retry", exc_info=True)


presence = PresenceHub()


def profile_json(username: str, full_name: str, role: str) -> str:
    return schema.encode({"username": username, "full_name": full_name, "role": role})


"""Helpers for the realtime tests: a scene of units, committed changes through the services, a
redis-server of our own, and WebSocket clients that keep their place in a unit's seq stream."""

from __future__ import annotations

import asyncio
import itertools
import json
import resource
import time
from dataclasses import dataclass, field

import redis
import websockets
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import connection

from backend.accounts.models import Role, Unit, User
from backend.events.models import UnitSequence
from backend.records import services
from backend.records.models import Crate
from bench import processes
from tests.support.auth import access_token
from tests.support.factories import CrateFactory, UnitFactory, UserFactory
from tests.support.ws import connect

_codes = itertools.count()


# --- the scene --------------------------------------------------------------------------------


@dataclass
class UnitWorld:
    unit: Unit
    store: User  # relocates crates: one committed change, one seq
    requester: User
    approver: User
    crates: list[Crate]

    @property
    def id(self) -> str:
        return str(self.unit.id)

    def token(self, user: User | None = None) -> str:
        return access_token(user or self.approver)


def make_world(name: str, crates: int = 3) -> UnitWorld:
    unit = UnitFactory(code=f"rt{name}{next(_codes)}")
    return UnitWorld(
        unit=unit,
        store=UserFactory(unit=unit, role=Role.STORE),
        requester=UserFactory(unit=unit, role=Role.REQUESTER),
        approver=UserFactory(unit=unit, role=Role.APPROVER),
        crates=[CrateFactory(unit=unit) for _ in range(crates)],
    )


def make_users(world: UnitWorld, count: int) -> list[User]:
    """`count` more users of the unit, inserted in one statement (crowds for load tests)."""
    password = make_password("unused")
    return User.objects.bulk_create(
        User(username=f"{world.unit.code}.crowd{i}", unit=world.unit, role=Role.REQUESTER, password=password)
        for i in range(count)
    )


def unit_seq(world: UnitWorld) -> int:
    return UnitSequence.objects.get(unit_id=world.unit.id).last_seq


def relocate(world: UnitWorld, count: int, pause: float = 0.0) -> list[int]:
    """`count` crate relocations, one transaction (so one seq) each; returns the seqs they took.
    Each commits and then publishes to the channel layer from this process, as a worker would.
    Safe to run in a worker thread: it closes that thread's database connection when done."""
    try:
        seqs = []
        for i in range(count):
            crate = world.crates[i % len(world.crates)]
            services.crate_relocate(actor=world.store, crate_id=crate.id, location=f"Bay {i}")
            seqs.append(unit_seq(world))
            if pause:
                time.sleep(pause)
        return seqs
    finally:
        connection.close()


async def relocate_async(world: UnitWorld, count: int, pause: float = 0.0) -> list[int]:
    return await asyncio.to_thread(relocate, world, count, pause)


def _closing(function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    finally:
        connection.close()


async def in_thread(function, *args, **kwargs):
    """Run a (database-touching) service from async test code, in a thread that closes its connection."""
    return await asyncio.to_thread(_closing, function, *args, **kwargs)


def raise_open_files_limit(wanted: int = 8192) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# --- the channel layer --------------------------------------------------------------------------

CORE_LAYER = "channels_redis.core.RedisChannelLayer"
PUBSUB_LAYER = "channels_redis.pubsub.RedisPubSubChannelLayer"


def joined_groups(names: list[str], url: str | None = None, backend: str | None = None) -> list[str]:
    """Which of these channel-layer groups some process has joined. The core layer keeps a group as
    a sorted set `asgi:group:<name>`; the pub/sub layer subscribes to `asgi__group__<name>`."""
    client = redis.Redis.from_url(url or settings.CHANNEL_LAYER_URL)
    try:
        if (backend or settings.CHANNEL_LAYER_BACKEND) == PUBSUB_LAYER:
            counts = dict(client.pubsub_numsub(*(f"asgi__group__{name}" for name in names)))
            return [name for name in names if counts.get(f"asgi__group__{name}".encode(), 0) > 0]
        return [name for name in names if client.exists(f"asgi:group:{name}")]
    finally:
        client.close()


def wait_for_groups(names: list[str], joined: bool, timeout: float, **where) -> list[str]:
    """joined_groups(names), once all of them are joined (or none, with joined=False) or `timeout` passed."""
    deadline = time.monotonic() + timeout
    while True:
        found = joined_groups(names, **where)
        if len(found) == (len(names) if joined else 0) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


# --- clients ----------------------------------------------------------------------------------


async def failed_connection(port: int, **query) -> tuple[list[dict], int | None]:
    """Open a socket that must be refused after the handshake: (messages before the close, close code)."""
    ws = await connect(port, **query)
    messages = []
    try:
        while True:
            messages.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    except websockets.ConnectionClosed:
        pass
    return messages, ws.close_code


@dataclass
class SeqClient:
    """One logical client of a unit: remembers the last seq it saw and resumes from it after any
    disconnect, recording every data_update seq it receives (batches flattened), in arrival order."""

    port: int
    token: str
    batch: bool = False
    start: int | None = None  # the seq in the first connection_established
    last_seq: int | None = None
    seqs: list[int] = field(default_factory=list)
    resyncs: list[dict] = field(default_factory=list)
    closes: list[int | None] = field(default_factory=list)
    connects: int = 0
    ws: object = None

    async def open(self, retry_for: float = 0.0) -> dict:
        deadline = time.monotonic() + retry_for
        while True:
            try:
                self.ws = await connect(
                    self.port, token=self.token, last_seq=self.last_seq, batch=1 if self.batch else None
                )
                hello = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
                break
            except (OSError, websockets.InvalidHandshake, websockets.ConnectionClosed, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        assert hello["type"] == "connection_established", hello
        self.connects += 1
        if self.start is None:
            self.start = self.last_seq = hello["seq"]
        return hello

    def _take(self, message: dict) -> None:
        if message["type"] == "data_update":
            updates = [message]
        elif message["type"] == "data_update_batch":
            updates = message["updates"]
        else:
            if message["type"] == "resync_required":
                self.resyncs.append(message)
                self.last_seq = message["seq"]
            return
        for update in updates:
            self.seqs.append(update["seq"])
            self.last_seq = update["seq"]

    async def follow(self, until, timeout: float = 30.0, reconnect: bool = True) -> None:
        """Read, resuming after any close, until the seq `until` has been seen. `until` may be a
        callable that returns the seq to reach, or None while that is not known yet."""
        target = until if callable(until) else (lambda: until)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (goal := target()) is None or self.last_seq is None or self.last_seq < goal:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"reached seq {self.last_seq}, not {goal}; closes {self.closes}")
            try:
                message = await asyncio.wait_for(self.ws.recv(), min(remaining, 0.5))
            except TimeoutError:
                continue
            except websockets.ConnectionClosed:
                self.closes.append(self.ws.close_code)
                if not reconnect:
                    raise
                await self.open(retry_for=max(deadline - loop.time(), 0))
                continue
            self._take(json.loads(message))

    async def read_for(self, seconds: float) -> None:
        """Take whatever arrives for `seconds` (the connection must stay open)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (remaining := deadline - loop.time()) > 0:
            try:
                self._take(json.loads(await asyncio.wait_for(self.ws.recv(), remaining)))
            except TimeoutError:
                return

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    def assert_exactly(self, first: int, last: int) -> None:
        """Every seq in [first, last] arrived exactly once, in order, and nothing else."""
        assert self.seqs == list(range(first, last + 1)), (
            f"expected {first}..{last}, got {len(self.seqs)} seqs: gaps "
            f"{sorted(set(range(first, last + 1)) - set(self.seqs))[:10]}, "
            f"duplicates {sorted({s for s in self.seqs if self.seqs.count(s) > 1})[:10]}"
        )


# --- what a Daphne's hub reports ------------------------------------------------------------------


def hub_snapshot(proc: processes.LiveProcess, url: str | None = None) -> dict[str, int] | None:
    """The numbers a Daphne process's hub last wrote for /metrics (None before its first tick), in
    the keys Redis at `url` (the test settings' by default)."""
    client = redis.Redis.from_url(url or settings.KEYS_REDIS_URL)
    try:
        for key in client.scan_iter("metrics:realtime:*"):
            if key.decode().rsplit(":", 1)[-1] == str(proc.popen.pid):
                return {k.decode(): int(float(v)) for k, v in client.hgetall(key).items()}
        return None
    finally:
        client.close()


def wait_for_hub_connections(proc: processes.LiveProcess, expected: int, timeout: float = 10.0) -> int | None:
    """The hub's reported connection count, once it equals `expected` or `timeout` passed."""
    deadline = time.monotonic() + timeout
    while True:
        snapshot = hub_snapshot(proc)
        count = None if snapshot is None else snapshot.get("connections")
        if count == expected or time.monotonic() > deadline:
            return count
        time.sleep(0.2)


def fresh_hub_snapshot(proc: processes.LiveProcess, timeout: float = 5.0, absent_wait: float = 2.0) -> dict[str, int] | None:
    """The numbers of a report the Daphne made after this call began, without a fixed wait: each
    report replaces the process's key and sets its TTL afresh, so a TTL higher than the lowest read
    since marks the next report (half a REALTIME_REPORT_SECONDS on average). (Not higher than the
    first read: a first read in the millisecond of a report is already the highest TTL there is, and
    no later report exceeds it.) None when the process has made no report within `absent_wait` (its
    hub never started: no connection, no fill)."""
    client = redis.Redis.from_url(settings.KEYS_REDIS_URL)
    try:
        key = next((k for k in client.scan_iter("metrics:realtime:*")
                    if k.decode().rsplit(":", 1)[-1] == str(proc.popen.pid)), None)
        deadline = time.monotonic() + absent_wait
        while key is None:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)
            key = next((k for k in client.scan_iter("metrics:realtime:*")
                        if k.decode().rsplit(":", 1)[-1] == str(proc.popen.pid)), None)
        lowest = client.pttl(key)
        deadline = time.monotonic() + timeout
        while (ttl := client.pttl(key)) <= lowest:
            assert ttl != -2 and time.monotonic() < deadline, f"the Daphne (pid {proc.popen.pid}) stopped reporting"
            lowest = ttl
            time.sleep(0.05)
        return {k.decode(): int(float(v)) for k, v in client.hgetall(key).items()}
    finally:
        client.close()


def hub_filled(proc_or_port: processes.LiveProcess | int, settle: float = 2.5, url: str | None = None) -> int:
    """The hub's `filled` counter (events it read from the outbox because the push did not bring
    them), from a report made after this call began (test Daphnes report every second). A live
    delivery test asserts it did not move: an update that came by the outbox fill proves nothing
    about the push path."""
    proc = processes.DAPHNES[proc_or_port] if isinstance(proc_or_port, int) else proc_or_port
    time.sleep(settle)
    snapshot = hub_snapshot(proc, url)
    assert snapshot is not None, "the Daphne has not reported yet"
    return snapshot["filled"]


async def close_code(ws, timeout: float = 15.0) -> tuple[list[dict], int | None]:
    """(messages until the server closed the socket, close code)."""
    messages = []
    try:
        while True:
            messages.append(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
    except websockets.ConnectionClosed:
        return messages, ws.close_code

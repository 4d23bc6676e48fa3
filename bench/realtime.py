"""`make bench`: the realtime path measured end to end on this machine.

Starts the real stack (Daphne with the production flags, Celery workers) on a database and Redis
databases of its own, seeds units and users at scale, opens WebSocket clients from this one Python
process, and reports (JSON in bench-results/ and a table):

- connect rate and server memory per idle connection (at --connections and at --big-connections);
- single approvals: commit-to-client and API-request-to-client latency p50/p99 (every client of the
  unit, every approval);
- burst client deliveries per second (a bulk approval in every unit at once, plain clients);
- a --bulk-item bulk approval: submit -> job succeeded, and submit -> last client receipt, with
  --bulk-clients clients of that unit connected (batch=1: one Python client process could not parse
  two million single frames fast enough to measure the server);
- the machine and the versions it ran on.

With --client-processes K > 1 the big idle phase's clients live in K child processes (spawned), each
reading every frame and reporting its receipts and its own CPU, so commit -> client at that scale
measures the server rather than one Python process parsing every frame. Once the servers run, the
client processes put themselves under SCHED_BATCH (--client-scheduling), so a frame's arrival at a
client does not preempt a Daphne in the middle of a fan-out.

Usage: make bench [BENCH_ARGS="--connections 1000 --units 10 --big-connections 10000"]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import sys
import time
from collections import defaultdict
from datetime import datetime
from importlib import metadata
from pathlib import Path

from bench import wsclient

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench-results"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="make bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--units", type=int, default=10)
    p.add_argument("--big-connections", type=int, default=10_000, help="0 skips the large idle phase")
    p.add_argument("--approvals", type=int, default=100, help="single approvals measured one by one")
    p.add_argument("--burst", type=int, default=50, help="requests approved per unit in the burst")
    p.add_argument("--bulk", type=int, default=10_000, help="items in the big bulk approval (0 skips)")
    p.add_argument("--bulk-clients", type=int, default=100)
    p.add_argument("--daphnes", type=int, default=1, help="Daphne processes (clients spread round robin)")
    p.add_argument("--workers", type=int, default=2, help="Celery worker concurrency")
    p.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    p.add_argument("--redis-db-base", type=int, default=int(os.environ.get("BENCH_REDIS_DB_BASE", "7")))
    p.add_argument("--channel-layer", default=os.environ.get("CHANNEL_LAYER_BACKEND"),
                   help="channel layer backend (default: the settings default, the pub/sub layer)")
    p.add_argument("--fanout-seconds", type=float, default=8.0, help="sustained fan-out phase (0 skips)")
    p.add_argument("--profile", action="store_true", help="py-spy the Daphne process during the fan-out phase")
    p.add_argument("--deflate", choices=["off", "on", "no_context_takeover", "small"], default="off",
                   help="WS_DEFLATE for the Daphnes; clients offer permessage-deflate unless off")
    p.add_argument("--ping-interval", type=int, default=20,
                   help="the Daphnes' --ping-interval in seconds (20: the Procfile's); what a server's "
                        "idle connections cost in pings and pongs")
    p.add_argument("--label", default="", help="a note stored with the results")
    p.add_argument("--presence", action="store_true",
                   help="clients connect with presence=1, each as a user of its own, and each tells a "
                        "`viewing` of a random record every --presence-every seconds")
    p.add_argument("--presence-every", type=float, default=2.0, help="0: presence clients stay idle")
    p.add_argument("--client-scheduling", choices=["batch", "normal"], default="batch",
                   help="the client processes' Linux scheduling policy once the servers run: batch (SCHED_BATCH: "
                        "a frame's arrival does not preempt a server mid-fan-out, as remote clients would not) "
                        "or normal (they compete for the cores like any process)")
    p.add_argument("--client-processes", type=int, default=1,
                   help="the big phase's clients are opened and read by this many child processes "
                        "(1: by this process, as before)")
    return p.parse_args(argv)


# --- environment ----------------------------------------------------------------------------


def _postgres_available() -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
        return True
    except OSError:
        return False


def prepare_environment(args) -> dict[str, str]:
    redis = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
    base = args.redis_db_base
    db_url = args.database_url
    if not db_url:
        db_url = (
            "postgres://postgres@127.0.0.1:5432/records_bench"
            if _postgres_available()
            else f"sqlite:///{ROOT / 'var' / 'bench.sqlite3'}"
        )
    env = {
        "DJANGO_SETTINGS_MODULE": "backend.config.settings.base",
        "DATABASE_URL": db_url,
        "CELERY_BROKER_URL": f"{redis}/{base}",
        "CHANNEL_LAYER_URL": f"{redis}/{base + 1}",
        "KEYS_REDIS_URL": f"{redis}/{base + 2}",
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        "JWT_ACCESS_MINUTES": "240",
        # One approver per unit signs every approval of the run, faster than any person would.
        "SIGNATURE_RATE": "100000/min",
        "WS_DEFLATE": args.deflate,
        # The bench opens all of a unit's sockets with one user's token (up to 1,000 of them); the
        # per-user cap (WS_MAX_CONNECTIONS_PER_USER, docs/security.md) is not what it measures.
        "WS_MAX_CONNECTIONS_PER_USER": "100000",
        "PYTHONUNBUFFERED": "1",
    }
    if args.channel_layer:
        env["CHANNEL_LAYER_BACKEND"] = args.channel_layer
    os.environ.update(env)
    return {**os.environ, **env}


def django_bench_env(name: str, database_url: str | None) -> dict[str, str]:
    """The environment of an in-process bench (audit, report) on a database of its own: `database_url`,
    else PostgreSQL's `records_bench_<name>` when one answers, else `var/bench-<name>.sqlite3`; the
    base settings, quiet, on Redis databases 7-9 of REDIS_URL."""
    url = database_url or (
        f"postgres://postgres@127.0.0.1:5432/records_bench_{name}" if _postgres_available()
        else f"sqlite:///{ROOT / 'var' / f'bench-{name}.sqlite3'}"
    )
    redis = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
    return {
        "DJANGO_SETTINGS_MODULE": "backend.config.settings.base", "DATABASE_URL": url, "DEBUG": "false",
        "LOG_LEVEL": "WARNING", "CELERY_BROKER_URL": f"{redis}/7", "CHANNEL_LAYER_URL": f"{redis}/8",
        "KEYS_REDIS_URL": f"{redis}/9", "ALLOWED_HOSTS": "testserver,localhost",
    }


def reset_stores(env: dict[str, str]) -> None:
    import redis

    for key in ("CELERY_BROKER_URL", "CHANNEL_LAYER_URL", "KEYS_REDIS_URL"):
        redis.Redis.from_url(env[key]).flushdb()
    url = env["DATABASE_URL"]
    if url.startswith("postgres"):
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    else:
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def seed(args) -> dict:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from backend.accounts.models import Role, Unit, User
    from backend.accounts.tokens import UnitTokenObtainPairSerializer
    from backend.records import services
    from backend.records.models import RequestStatus, WithdrawalRequest

    call_command("migrate", verbosity=0)
    per_unit = args.approvals // args.units + 2 + args.burst
    started = time.monotonic()
    call_command("seed_demo", units=args.units, crates=10, requests=0, pending=per_unit, quiet_logins=True, force=True)
    units = list(Unit.objects.order_by("code"))[: args.units]
    bulk_unit = units[0]
    if args.bulk:
        requester = User.objects.get(username=f"{bulk_unit.code}.requester")
        for start in range(0, args.bulk, 2000):
            services.requests_create_bulk(entity="withdrawal", actor=requester, count=min(2000, args.bulk - start))
    tokens, watch_tokens, pending, crates = {}, {}, {}, {}
    from backend.records.models import Crate

    for unit in units:
        in_storage = Crate.objects.filter(unit=unit, status="in_storage").order_by("id")
        crates[str(unit.id)] = str(in_storage.values_list("id", flat=True)[0])
        approver = User.objects.get(username=f"{unit.code}.{Role.APPROVER}")
        tokens[str(unit.id)] = str(UnitTokenObtainPairSerializer.get_token(approver).access_token)
        # The sockets watch the unit as someone other than the approver, as a site's screens do:
        # the approver's own job_updates and notifications go to the approver's connections only
        # (before 2026-12-02 every socket was the approver's, so each approval also sent every
        # socket its job's `running` and `succeeded`).
        watcher, _ = User.objects.get_or_create(
            username=f"{unit.code}.watcher", defaults={"unit": unit, "role": Role.REQUESTER, "password": "!"}
        )
        watch_tokens[str(unit.id)] = str(UnitTokenObtainPairSerializer.get_token(watcher).access_token)
        ids = list(
            WithdrawalRequest.objects.filter(unit=unit, status=RequestStatus.PENDING)
            .order_by("created_at", "request_number")
            .values_list("id", flat=True)
        )
        pending[str(unit.id)] = [str(i) for i in ids]
    user_tokens: dict[str, list[str]] = {}
    if args.presence:
        # one user per presence client (--connections spread over the units), so presence is per user
        count = max(args.connections // args.units, 1)
        for unit in units:
            users = User.objects.bulk_create(
                User(username=f"{unit.code}.present{i}", unit=unit, role=Role.APPROVER, password="!")
                for i in range(count)
            )
            user_tokens[str(unit.id)] = [
                str(UnitTokenObtainPairSerializer.get_token(user).access_token) for user in users
            ]
    return {"units": [str(u.id) for u in units], "tokens": tokens, "watch_tokens": watch_tokens,
            "pending": pending, "crates": crates,
            "bulk_unit": str(bulk_unit.id), "seconds": time.monotonic() - started, "user_tokens": user_tokens,
            # Approvals are signed: the approver's password (seed_demo's) and the meaning.
            "signature": {"password": settings.DEMO_PASSWORD, "meaning": "approved"}}


# --- processes ------------------------------------------------------------------------------


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_stack(args, env):
    from bench.processes import LOGS, LiveProcess, free_port, wait_for_port

    LOGS.mkdir(parents=True, exist_ok=True)
    daphnes = []
    for _ in range(args.daphnes):
        port = free_port()
        cmd = [
            sys.executable, "-m", "realtime.daphne", "-e", f"tcp:port={port}:interface=127.0.0.1:backlog=4096",
            "--ping-interval", str(args.ping_interval), "--ping-timeout", "30",
            "--websocket-max-message-size", "65536", "--websocket-max-frame-size", "65536",
            "--application-close-timeout", "10", "-v", "0", "backend.config.asgi:application",
        ]
        proc = LiveProcess(f"bench-daphne-{port}", cmd, env)
        wait_for_port(port, proc=proc)
        daphnes.append((proc, port))
    worker = LiveProcess(
        "bench-worker",
        [sys.executable, "-m", "celery", "-A", "workers.celery", "worker", "-l", "warning", "-Q", "default,bulk",
         "--concurrency", str(args.workers), "-n", "bench@%h", "--without-gossip", "--without-mingle"],
        env,
    )
    deadline = time.monotonic() + 60
    while "ready" not in worker.output() and time.monotonic() < deadline:
        if not worker.alive:
            raise RuntimeError(worker.output())
        time.sleep(0.2)
    return daphnes, worker


def cpu_seconds(processes) -> float:
    """CPU time of the processes, all their threads, to the nanosecond where Linux tells it: the
    kernel's per-process CPU clock (clock id `(~pid << 3) | 2`, what clock_getcpuclockid(3) returns);
    /proc's user + system times count 10 ms ticks, too coarse for a burst of a few thousand
    deliveries at a few µs each."""
    import psutil

    total = 0.0
    for proc, _ in processes:
        pid = proc.popen.pid
        try:
            total += time.clock_gettime((~pid << 3) | 2)
        except (AttributeError, OSError):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def rss(processes) -> int:
    import psutil

    total = 0
    for proc, _ in processes:
        total += psutil.Process(proc.popen.pid).memory_info().rss
    return total


# --- clients --------------------------------------------------------------------------------


class Fleet:
    """Many WebSocket clients in this process, each reading in its own task."""

    def __init__(self, presence: dict[str, list[str]] | None = None, presence_every: float = 2.0) -> None:
        self.presence = presence or {}  # unit -> one token per presence client (--presence)
        self.presence_every = presence_every
        self.clients: list[dict] = []
        self.by_unit: dict[str, list[dict]] = defaultdict(list)
        self.watch: dict[str, Watch] = {}
        self.counters: dict[str, Counter] = {}
        self.compression: str | None = None  # "deflate": clients offer permessage-deflate (--deflate)

    async def open(self, ports, units, tokens, count, batch=False, concurrency=200) -> float:
        gate = asyncio.Semaphore(concurrency)
        started = time.perf_counter()

        async def one(i):
            unit = units[i % len(units)]
            port = ports[i % len(ports)]
            token = tokens[unit]
            present = self.presence.get(unit)
            if present:
                token = present[(i // len(units)) % len(present)]
            url = f"ws://127.0.0.1:{port}/ws/updates/?token={token}" + ("&batch=1" if batch else "")
            if present:
                url += "&presence=1"
            client = {"unit": unit, "presence": 0}
            async with gate:
                for attempt in range(5):
                    try:
                        ws = await wsclient.connect(
                            url, lambda raw, now: self._on_text(client, raw, now),
                            origin="http://127.0.0.1", compression=self.compression,
                            on_hello=lambda hello: client.update(seq=hello["seq"]),
                        )
                        break
                    except (TimeoutError, OSError, wsclient.WebSocketRefused):
                        if attempt == 4:
                            raise
                        await asyncio.sleep(0.2 * (attempt + 1))
            client["ws"] = ws
            if present and self.presence_every > 0:
                client["activity"] = asyncio.create_task(self._activity(client))
            self.clients.append(client)
            self.by_unit[unit].append(client)

        await asyncio.gather(*(one(i) for i in range(count)))
        return time.perf_counter() - started

    async def _activity(self, client) -> None:
        """A presence client flicks to another record every --presence-every seconds (jittered)."""
        import random
        import uuid

        try:
            await asyncio.sleep(random.uniform(0, self.presence_every))
            while True:
                await client["ws"].send(json.dumps({"type": "viewing", "entity": "crate", "id": str(uuid.uuid4())}))
                await asyncio.sleep(self.presence_every)
        except Exception:  # noqa: BLE001 - closed at the end of a phase
            pass

    def _on_text(self, client, raw: str, now: float) -> None:
        unit = client["unit"]
        message = json.loads(raw)
        kind = message["type"]
        if kind == "data_update":
            self._update(client, unit, message, now)
        elif kind == "data_update_batch":
            for update in message["updates"]:
                self._update(client, unit, update, now)
        elif kind in ("presence", "presence_update"):
            client["presence"] += 1

    def _update(self, client, unit, update, now) -> None:
        client["seq"] = update["seq"]
        watch = self.watch.get(update["data"]["id"])
        if watch is not None:
            watch.hit(now, update)
        counter = self.counters.get(unit)
        if counter is not None:
            counter.hit(client, update["seq"], now)

    async def close(self, clients=None) -> None:
        clients = self.clients if clients is None else clients
        await asyncio.gather(*(c["ws"].close() for c in clients), return_exceptions=True)
        for c in clients:
            if "activity" in c:
                c["activity"].cancel()
            self.by_unit[c["unit"]].remove(c)
        self.clients = [c for c in self.clients if c not in clients]


class Watch:
    """Every client of a unit receiving one particular update."""

    def __init__(self, expected: int, api_started: float) -> None:
        self.expected, self.api_started = expected, api_started
        self.commit_latency: list[float] = []
        self.api_latency: list[float] = []
        self.done = asyncio.Event()

    def hit(self, now: float, update: dict) -> None:
        committed = datetime.fromisoformat(update["timestamp"].replace("Z", "+00:00")).timestamp()
        self.commit_latency.append(now - committed)
        self.api_latency.append(now - self.api_started)
        if len(self.api_latency) >= self.expected:
            self.done.set()


class Counter:
    """Deliveries to a unit's clients until each reaches `target` seq."""

    def __init__(self, clients: list[dict], target: int) -> None:
        self.pending = {id(c) for c in clients if c["seq"] < target}
        self.target = target
        self.deliveries = 0
        self.first = self.last = None
        self.done = asyncio.Event()
        if not self.pending:
            self.done.set()

    def hit(self, client, seq, now) -> None:
        self.deliveries += 1
        self.first = self.first or now
        self.last = now
        if seq >= self.target and id(client) in self.pending:
            self.pending.discard(id(client))
            if not self.pending:
                self.done.set()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# --- phases ---------------------------------------------------------------------------------


async def phase_connect(fleet, ports, world, count, daphnes) -> dict:
    before = rss(daphnes)
    seconds = await fleet.open(ports, world["units"], world["watch_tokens"], count)
    await asyncio.sleep(3)  # idle: let allocations settle
    after = rss(daphnes)
    return {
        "connections": count,
        "connect_seconds": round(seconds, 3),
        "connects_per_second": round(count / seconds, 1),
        "server_rss_mb": round(after / 2**20, 1),
        "memory_per_connection_kb": round((after - before) / count / 1024, 2),
    }


async def phase_approvals(fleet, http, world, count) -> dict:
    commit, api, http_202 = [], [], []
    units = world["units"]
    for i in range(count):
        unit = units[i % len(units)]
        request_id = world["pending"][unit].pop(0)
        watch = Watch(len(fleet.by_unit[unit]), time.time())
        fleet.watch[request_id] = watch
        answer = await http.post(
            f"/api/withdrawal-requests/{request_id}/approve/", json={"signature": world["signature"]},
            headers={"Authorization": f"Bearer {world['tokens'][unit]}"},
        )
        assert answer.status_code == 202, answer.text
        http_202.append(time.time() - watch.api_started)
        await asyncio.wait_for(watch.done.wait(), 30)
        del fleet.watch[request_id]
        commit += watch.commit_latency
        api += watch.api_latency
        await asyncio.sleep(0.02)
    ms = lambda v: round(v * 1000, 1)  # noqa: E731
    return {
        "approvals": count,
        "receipts": len(api),
        "commit_to_client_ms": {"p50": ms(pct(commit, 0.5)), "p99": ms(pct(commit, 0.99)), "max": ms(max(commit))},
        "api_to_client_ms": {"p50": ms(pct(api, 0.5)), "p99": ms(pct(api, 0.99)), "max": ms(max(api))},
        # the 202's own round trip: how much of API -> client is the HTTP request itself
        "api_202_ms": {"p50": ms(pct(http_202, 0.5)), "p99": ms(pct(http_202, 0.99)), "max": ms(max(http_202))},
    }


async def phase_burst(fleet, http, world, per_unit, daphnes) -> dict:
    # every unit approves `per_unit` requests in one bulk; each change = request + crate event
    counters = {}
    # Every bulk decision is signed (a password hash, ~0.2 s of CPU each): the worker's bulk queue is
    # paused while the ten are signed and queued, so the phase measures what it always did, ten units'
    # approvals fanned out at once. The signing is measured by the single approvals (API -> client).
    from workers.celery import app as celery_app

    paused = await asyncio.to_thread(celery_app.control.cancel_consumer, "bulk", reply=True, timeout=5)
    assert paused, "the bench worker did not answer the pause of its bulk queue"
    for unit in world["units"]:
        ids = [world["pending"][unit].pop(0) for _ in range(per_unit)]
        clients = fleet.by_unit[unit]
        start_seq = max(c["seq"] for c in clients)
        counters[unit] = fleet.counters[unit] = Counter(clients, start_seq + 2 * per_unit)
        answer = await http.post(
            "/api/bulk-actions/",
            json={"entity": "withdrawal", "action": "approve", "ids": ids, "signature": world["signature"]},
            headers={"Authorization": f"Bearer {world['tokens'][unit]}"},
        )
        assert answer.status_code == 202, answer.text
    cpu_before = cpu_seconds(daphnes)
    submitted = time.time()
    # (No reply awaited: a blocking wait here would stall this process's event loop, its sockets too.)
    celery_app.control.add_consumer("bulk", reply=False)
    await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in counters.values())), 120)
    cpu = cpu_seconds(daphnes) - cpu_before
    fleet.counters.clear()
    deliveries = sum(c.deliveries for c in counters.values())
    first = min(c.first for c in counters.values())
    last = max(c.last for c in counters.values())
    return {
        "events": 2 * per_unit * len(counters),
        "deliveries": deliveries,
        "seconds_first_to_last_receipt": round(last - first, 3),
        "deliveries_per_second": round(deliveries / (last - first), 1),
        "submit_to_last_receipt_seconds": round(last - submitted, 3),
        # Daphne CPU from the release of the queued bulks to the last receipt, divided by deliveries
        "server_cpu_us_per_delivery": round(cpu / deliveries * 1e6, 1),
    }


async def phase_bulk(fleet, http, world, ports, items, clients_count) -> dict:
    unit = world["bulk_unit"]
    await fleet.close(list(fleet.by_unit[unit]))
    await fleet.open(ports, [unit], world["watch_tokens"], clients_count, batch=True)
    clients = fleet.by_unit[unit]
    ids = world["pending"][unit][-items:]
    start_seq = max(c["seq"] for c in clients)
    counter = fleet.counters[unit] = Counter(clients, start_seq + 2 * items)
    submitted = time.time()
    answer = await http.post(
        "/api/bulk-actions/", json={"entity": "withdrawal", "action": "approve", "ids": ids, "signature": world["signature"]},
        headers={"Authorization": f"Bearer {world['tokens'][unit]}"},
    )
    assert answer.status_code == 202, answer.text
    location = answer.headers["Location"]
    job_done = None
    while job_done is None:
        job = (await http.get(location, headers={"Authorization": f"Bearer {world['tokens'][unit]}"})).json()
        if job["status"] in ("succeeded", "failed"):
            job_done = time.time()
            assert job["status"] == "succeeded" and job["progress"]["failed"] == 0, job["progress"]
        else:
            await asyncio.sleep(0.1)
    await asyncio.wait_for(counter.done.wait(), 300)
    fleet.counters.clear()
    return {
        "items": items,
        "events": 2 * items,
        "clients": clients_count,
        "client_mode": "batch=1",
        "submit_to_job_succeeded_seconds": round(job_done - submitted, 2),
        "submit_to_last_client_receipt_seconds": round(counter.last - submitted, 2),
    }


async def phase_fanout(fleet, world, daphnes, seconds: float, profile: bool) -> dict:
    """Sustained fan-out: committed crate relocations round-robin over the units, written by this
    process through the service (so the publish path is the real one), as fast as it can for
    `seconds`; then wait until every client has everything. Reports the sustained delivery rate and
    the Daphne CPU spent per delivery, optionally with a py-spy profile of the Daphne process."""
    import shutil
    import subprocess

    from asgiref.sync import sync_to_async
    from django.db import close_old_connections

    from backend.accounts.models import User
    from backend.records import services

    units = world["units"]
    stores = {}
    for unit in units:
        stores[unit] = await sync_to_async(lambda u=unit: User.objects.get(unit_id=u, role="store"))()
    start_seq = {u: max(c["seq"] for c in fleet.by_unit[u]) for u in units}
    fleet.counters.clear()
    counters = {u: Counter(fleet.by_unit[u], 10**12) for u in units}  # count only
    fleet.counters.update(counters)
    spy = None
    out = RESULTS / f"profile-{datetime.now():%Y%m%d-%H%M%S}.txt"
    spy_bin = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if profile and spy_bin:
        RESULTS.mkdir(exist_ok=True)
        spy = subprocess.Popen(
            [spy_bin, "record", "--pid", str(daphnes[0][0].popen.pid), "--duration", str(int(seconds) + 2),
             "--format", "raw", "--nonblocking", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    cpu_before = cpu_seconds(daphnes)
    started = time.time()
    changes = 0

    def relocate(unit, n):
        services.crate_update(actor=stores[unit], crate_id=world["crates"][unit], expected_version=None, location=f"F{n}")

    while time.time() - started < seconds:
        unit = units[changes % len(units)]
        await sync_to_async(relocate)(unit, changes)
        changes += 1
    await sync_to_async(close_old_connections)()
    targets = {u: start_seq[u] + sum(1 for i in range(changes) if units[i % len(units)] == u) for u in units}
    for unit, counter in counters.items():
        counter.target = targets[unit]
        counter.pending = {id(c) for c in fleet.by_unit[unit] if c["seq"] < targets[unit]}
        if not counter.pending:
            counter.done.set()
    await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in counters.values())), 120)
    cpu = cpu_seconds(daphnes) - cpu_before
    fleet.counters.clear()
    deliveries = sum(c.deliveries for c in counters.values())
    first = min(c.first for c in counters.values())
    last = max(c.last for c in counters.values())
    result = {
        "seconds": seconds,
        "changes": changes,
        "deliveries": deliveries,
        "deliveries_per_second": round(deliveries / (last - first), 1),
        "server_cpu_us_per_delivery": round(cpu / deliveries * 1e6, 1),
    }
    if spy is not None:
        spy.wait(seconds + 30)
        result["profile"] = str(out.relative_to(ROOT))
        result["profile_top"] = top_frames(out)
    return result


# --- the big phase from several client processes (--client-processes) -----------------------


def _ephemeral_ports() -> int:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return high - low + 1
    except (OSError, ValueError):
        return 28_000


def _source_addresses(count: int, ports: list[int]) -> list[str]:
    """Local addresses to connect from: 127.0.0.1 alone unless one (source, Daphne port) pair would
    run short of ephemeral ports, then as many 127.0.0.N as it takes (all of 127/8 is loopback)."""
    per_port = -(-count // max(len(ports), 1))
    usable = max(_ephemeral_ports() - 2000, 1000)  # leave room for everything else on the machine
    return [f"127.0.0.{n + 1}" for n in range(-(-per_port // usable))]


def client_scheduling(policy: str) -> str:
    """Put this (client) process under SCHED_BATCH, or leave it. The benchmark's clients share the
    machine's cores with the servers they measure; under the normal policy every frame a Daphne
    writes wakes a client process that may preempt that Daphne in the middle of a fan-out, so the
    fan-out to the rest of the unit waits for the clients that already have it: a cost remote
    clients never put on a server. SCHED_BATCH tasks get their fair share of CPU but do not preempt
    on wake-up. Returns the policy in force (Linux only; elsewhere "normal")."""
    if policy == "batch" and hasattr(os, "SCHED_BATCH"):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        return "batch"
    return "normal"


def _client_child(conn, spec: dict) -> None:
    """A child process of the big phase: opens spec["count"] clients (global indices from
    spec["first"]), reads every frame, and answers the parent's commands over `conn`:

    - ("open",)          -> ("opened", {connections, connect_seconds, failed})
    - ("wait", id, unit) -> ("receipts", id, {commit: [...], received: [...]}) once each of its clients
                            of `unit` has the data_update of `id` (or 30 s passed)
    - ("close",)         -> ("closed", {cpu_seconds, wall_seconds, ...}) and exits
    """
    _raise_nofile()  # (its scheduling policy is the parent's: a spawned process inherits it)
    asyncio.run(_client_child_main(conn, spec))


async def _client_child_main(conn, spec: dict) -> None:
    loop = asyncio.get_running_loop()
    units, ports, tokens, sources = spec["units"], spec["ports"], spec["tokens"], spec["sources"]
    sockets: list = []
    per_unit: dict[str, int] = defaultdict(int)
    receipts: dict[str, list[tuple[float, float]]] = defaultdict(list)  # data id -> (commit latency, receipt)
    waiters: dict[str, tuple[asyncio.Event, int]] = {}
    frames = 0

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def on_text(raw: str, now: float) -> None:
        nonlocal frames
        frames += 1
        message = json.loads(raw)
        kind = message["type"]
        if kind == "data_update":
            updates = [message]
        elif kind == "data_update_batch":
            updates = message["updates"]
        else:
            return
        for update in updates:
            key = update["data"]["id"]
            committed = datetime.fromisoformat(update["timestamp"].replace("Z", "+00:00")).timestamp()
            receipts[key].append((now - committed, now))
            waiter = waiters.get(key)
            if waiter is not None and len(receipts[key]) >= waiter[1]:
                waiter[0].set()

    failed = 0

    async def one(i: int, gate: asyncio.Semaphore) -> None:
        nonlocal failed
        unit = units[i % len(units)]
        port = ports[i % len(ports)]
        source = sources[(i // len(ports)) % len(sources)]
        url = f"ws://127.0.0.1:{port}/ws/updates/?token={tokens[unit]}"
        async with gate:
            for attempt in range(5):
                try:
                    ws = await wsclient.connect(url, on_text, origin="http://127.0.0.1",
                                                compression=spec["compression"], local_addr=(source, 0))
                    break
                except (TimeoutError, OSError, wsclient.WebSocketRefused):
                    # (a handshake Daphne dropped: its 5 s websocket handshake timeout ran out)
                    if attempt == 4:
                        failed += 1
                        return
                    await asyncio.sleep(0.2 * (attempt + 1))
        sockets.append(ws)
        per_unit[unit] += 1

    started_wall, started_cpu = time.time(), cpu()
    marks: dict[str, tuple[float, float]] = {}
    pending_waits: set[asyncio.Task] = set()

    async def answer_wait(key: str, unit: str) -> None:
        expected = per_unit.get(unit, 0)
        event = asyncio.Event()
        waiters[key] = (event, expected)
        if len(receipts[key]) >= expected:
            event.set()
        try:
            await asyncio.wait_for(event.wait(), 30)
        except TimeoutError:
            pass
        del waiters[key]
        samples = receipts.pop(key, [])
        conn.send(("receipts", key, {"expected": expected, "commit": [c for c, _ in samples],
                                     "received": [r for _, r in samples]}))

    conn.send(("ready", os.getpid()))
    while True:
        command = await loop.run_in_executor(None, conn.recv)
        if command[0] == "open":
            gate = asyncio.Semaphore(spec["concurrency"])
            t0 = time.perf_counter()
            await asyncio.gather(*(one(i, gate) for i in range(spec["first"], spec["first"] + spec["count"])))
            seconds = time.perf_counter() - t0
            marks["opened"] = (time.time(), cpu())
            conn.send(("opened", {"connections": len(sockets), "failed": failed,
                                  "connect_seconds": round(seconds, 3)}))
        elif command[0] == "wait":
            task = asyncio.create_task(answer_wait(command[1], command[2]))
            pending_waits.add(task)
            task.add_done_callback(pending_waits.discard)
        elif command[0] == "close":
            if pending_waits:
                await asyncio.gather(*pending_waits, return_exceptions=True)
            closing = (time.time(), cpu())
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
            opened = marks.get("opened", (started_wall, started_cpu))
            wall, used = time.time() - started_wall, cpu() - started_cpu
            idle_wall, idle_cpu = closing[0] - opened[0], closing[1] - opened[1]
            conn.send(("closed", {
                "pid": os.getpid(),
                "frames": frames,
                "cpu_seconds": round(used, 2),
                "wall_seconds": round(wall, 2),
                "cpu_per_wall": round(used / wall, 3) if wall else None,
                # from all connected to the close: the approvals, what the latency is measured in
                "after_connect_cpu_seconds": round(idle_cpu, 2),
                "after_connect_wall_seconds": round(idle_wall, 2),
                "after_connect_cpu_per_wall": round(idle_cpu / idle_wall, 3) if idle_wall else None,
            }))
            conn.close()
            return


class ClientProcesses:
    """The big phase's clients spread over K spawned child processes (see _client_child)."""

    def __init__(self, count: int, ports: list[int], world: dict, processes: int, compression) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.count = count
        self.sources = _source_addresses(count, ports)
        self.children = []
        first = 0
        for k in range(processes):
            share = count // processes + (1 if k < count % processes else 0)
            spec = {"units": world["units"], "ports": ports, "tokens": world["watch_tokens"], "sources": self.sources,
                    "first": first, "count": share, "compression": compression,
                    # handshakes in flight over all the children: Fleet's 200 (more and Daphne's
                    # 5 s handshake timeout drops some on a small machine)
                    "concurrency": max(1, 200 // processes)}
            parent, child = context.Pipe()
            proc = context.Process(target=_client_child, args=(child, spec), name=f"bench-clients-{k}", daemon=True)
            proc.start()
            child.close()
            self.children.append({"proc": proc, "conn": parent, "spec": spec, "inbox": []})
            first += share

    async def _recv(self, child, kind: str, key: str | None = None, timeout: float = 300):
        """The next message of `kind` (and `key`) from one child; others are kept for later."""
        for i, message in enumerate(child["inbox"]):
            if message[0] == kind and (key is None or message[1] == key):
                return child["inbox"].pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"client process {child['proc'].name}: no {kind} in {timeout} s")
            ready = await asyncio.to_thread(child["conn"].poll, min(left, 1.0))
            if not ready:
                if not child["proc"].is_alive():
                    raise RuntimeError(f"client process {child['proc'].name} exited ({child['proc'].exitcode})")
                continue
            message = child["conn"].recv()
            if message[0] == kind and (key is None or message[1] == key):
                return message
            child["inbox"].append(message)

    async def open(self) -> tuple[float, list[dict]]:
        await asyncio.gather(*(self._recv(c, "ready", timeout=120) for c in self.children))
        started = time.perf_counter()
        for c in self.children:
            c["conn"].send(("open",))
        opened = await asyncio.gather(*(self._recv(c, "opened", timeout=900) for c in self.children))
        seconds = time.perf_counter() - started
        return seconds, [message[1] for message in opened]

    def watch(self, key: str, unit: str) -> None:
        for c in self.children:
            c["conn"].send(("wait", key, unit))

    async def receipts(self, key: str) -> list[dict]:
        answers = await asyncio.gather(*(self._recv(c, "receipts", key, timeout=60) for c in self.children))
        return [message[2] for message in answers]

    async def close(self) -> list[dict]:
        for c in self.children:
            c["conn"].send(("close",))
        closed = await asyncio.gather(*(self._recv(c, "closed", timeout=120) for c in self.children))
        for c in self.children:
            await asyncio.to_thread(c["proc"].join, 30)
            if c["proc"].is_alive():
                c["proc"].kill()
        return [message[1] for message in closed]


def hub_histograms() -> dict[str, float]:
    """The Daphnes' commit -> handed-to-connections histograms, as their hubs last reported them to
    the keys Redis (every REALTIME_REPORT_SECONDS), summed: {bucket upper bound: observations}."""
    from backend.common.redis import keys_client
    from backend.events.metrics import C2C_FIELD, REALTIME_KEY_PREFIX

    client, total = keys_client(), {}
    for key in client.scan_iter(f"{REALTIME_KEY_PREFIX}*"):
        for field, value in client.hgetall(key).items():
            field = field.decode()
            if field.startswith(C2C_FIELD):
                bound = field[len(C2C_FIELD):]
                total[bound] = total.get(bound, 0.0) + float(value)
    return total


def server_side_latency(before: dict[str, float], after: dict[str, float]) -> dict:
    """What the hubs observed between two readings of `hub_histograms()`: observations (one per
    event per connection it was handed to), the share handed over within 100 ms of the commit, and
    the buckets p50 and p99 fall in (upper bounds, ms; "+Inf" beyond the last)."""
    bounds = sorted((b for b in after if b != "+Inf"), key=float) + ["+Inf"]
    counts = [after.get(b, 0.0) - before.get(b, 0.0) for b in bounds]
    seen = sum(counts)
    if seen <= 0:
        return {"observations": 0}

    def bucket_of(q: float) -> str:
        running = 0.0
        for bound, count in zip(bounds, counts, strict=True):
            running += count
            if running >= q * seen:
                return bound if bound == "+Inf" else f"<= {float(bound) * 1000:g}"
        return "+Inf"

    within = sum(c for b, c in zip(bounds, counts, strict=True) if b != "+Inf" and float(b) <= 0.1)
    return {
        "observations": int(seen),
        "share_within_100_ms": round(within / seen, 4),
        "p50_bucket_ms": bucket_of(0.5),
        "p99_bucket_ms": bucket_of(0.99),
    }


async def phase_big_processes(http, world, ports, count, daphnes, processes, approvals, compression) -> dict:
    """The big idle phase with its clients in `processes` child processes: connect rate, server
    memory per idle connection, and single approvals' commit -> client over every client of the unit."""
    before = rss(daphnes)
    fleet = ClientProcesses(count, ports, world, processes, compression)
    try:
        seconds, opened = await fleet.open()
        connected = sum(o["connections"] for o in opened)
        await asyncio.sleep(3)  # idle: let allocations settle
        after = rss(daphnes)
        result = {
            "connections": connected,
            "connections_asked": count,
            "connections_failed": sum(o["failed"] for o in opened),
            "connect_seconds": round(seconds, 3),
            "connects_per_second": round(connected / seconds, 1),
            "server_rss_mb": round(after / 2**20, 1),
            "memory_per_connection_kb": round((after - before) / connected / 1024, 2),
            "client_processes": processes,
            "source_addresses": fleet.sources,
        }
        commit, api, http_202, expected_total, per_approval = [], [], [], 0, []
        units = world["units"]
        # the hubs' own view (commit -> handed to the connections, before any client reads it):
        # their last report before the approvals, and the first one after the last
        from django.conf import settings

        report_every = settings.REALTIME_REPORT_SECONDS
        await asyncio.sleep(report_every * 1.5)
        hubs_before = hub_histograms()
        for i in range(approvals):
            unit = units[i % len(units)]
            request_id = world["pending"][unit].pop(0)
            fleet.watch(request_id, unit)
            api_started = time.time()
            answer = await http.post(
                f"/api/withdrawal-requests/{request_id}/approve/", json={"signature": world["signature"]},
                headers={"Authorization": f"Bearer {world['tokens'][unit]}"},
            )
            assert answer.status_code == 202, answer.text
            http_202.append(time.time() - api_started)
            this = []
            for part in await fleet.receipts(request_id):
                expected_total += part["expected"]
                this += part["commit"]
                api += [received - api_started for received in part["received"]]
            commit += this
            # first and last client of the unit: the server's delay before the fan-out vs its spread
            per_approval.append([round(min(this) * 1000, 1), round(max(this) * 1000, 1)] if this else None)
            await asyncio.sleep(0.02)
        await asyncio.sleep(report_every * 1.5)
        result["server_side"] = server_side_latency(hubs_before, hub_histograms())
    finally:
        clients = await fleet.close()
    for opened_part, client in zip(opened, clients, strict=True):
        client.update(opened_part)
    ms = lambda v: round(v * 1000, 1)  # noqa: E731
    result["single_approvals"] = {
        "approvals": approvals,
        "receipts": len(api),
        "receipts_expected": expected_total,
        "commit_to_client_ms": {"p50": ms(pct(commit, 0.5)), "p99": ms(pct(commit, 0.99)), "max": ms(max(commit))},
        "api_to_client_ms": {"p50": ms(pct(api, 0.5)), "p99": ms(pct(api, 0.99)), "max": ms(max(api))},
        "api_202_ms": {"p50": ms(pct(http_202, 0.5)), "p99": ms(pct(http_202, 0.99)), "max": ms(max(http_202))},
        "commit_to_first_and_last_client_ms": per_approval,
    }
    result["clients"] = clients
    return result


_STALL = re.compile(r"event loop stalled (\d+) ms with (\d+) connections")
_PASS = re.compile(r"daphne's (\w+) took (\d+) ms")
_COLLECTION = re.compile(r"a (\S+) garbage collection took (\d+) ms")


def stall_trace(log_text: str) -> dict:
    """What one Daphne's server-side trace logged over the run (docs/operations.md,
    CommitToClientLatencyOverBudget): stalls of its event loop over REALTIME_STALL_WARN_MS, and
    Daphne's own passes and garbage collections over it, by name, as count and longest (ms)."""
    stalls = [(int(ms), int(conns)) for ms, conns in _STALL.findall(log_text)]
    named: dict[str, dict] = {}
    for kind, pattern in (("pass", _PASS), ("collection", _COLLECTION)):
        for name, ms in pattern.findall(log_text):
            entry = named.setdefault(f"{kind} {name}", {"count": 0, "longest_ms": 0})
            entry["count"] += 1
            entry["longest_ms"] = max(entry["longest_ms"], int(ms))
    return {
        "stalls": len(stalls),
        "longest_stall_ms": max((ms for ms, _ in stalls), default=0),
        "stalled_ms_total": sum(ms for ms, _ in stalls),
        "most_connections_in_a_stall": max((c for _, c in stalls), default=0),
        "named": dict(sorted(named.items())),
    }


_LATE_PUBLISH = re.compile(r"reached the channel layer (\d+) ms after they were written: (\d+) ms before the send"
                           r" \(the rest of the transaction, COMMIT\), (\d+) ms the send")


def publish_trace(log_text: str) -> dict:
    """What the worker logged of late publishes over the run (backend/events/outbox.py): a change's
    events that reached the channel layer over REALTIME_STALL_WARN_MS after their timestamp, as
    count and the longest with its split (before the send: the transaction's rest and COMMIT; the
    send)."""
    late = [tuple(map(int, found)) for found in _LATE_PUBLISH.findall(log_text)]
    worst = max(late, default=(0, 0, 0))
    return {"late_publishes": len(late), "longest_ms": worst[0], "longest_before_send_ms": worst[1],
            "longest_send_ms": worst[2]}


def top_frames(path: Path, limit: int = 15) -> list[str]:
    """Self time per function from py-spy's collapsed stacks (idle event-loop waits removed)."""
    self_time: dict[str, int] = defaultdict(int)
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        leaf = stack.split(";")[-1]
        if "select (selectors.py" in leaf or "poll (" in leaf or "_run_once" in leaf and "select" in stack[-80:]:
            continue
        self_time[leaf] += int(count)
        total += int(count)
    ranked = sorted(self_time.items(), key=lambda item: -item[1])[:limit]
    return [f"{100 * n / total:5.1f}%  {frame}" for frame, n in ranked]


def _channel_layer_backend() -> str:
    from django.conf import settings

    return settings.CHANNEL_LAYERS["default"]["BACKEND"]


def machine_info(env) -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    packages = ["django", "channels", "channels-redis", "daphne", "twisted", "autobahn", "redis", "celery",
                "kombu", "psycopg", "websockets", "picows"]
    import redis as redis_lib

    info = {
        "when": datetime.now().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "database": env["DATABASE_URL"].split("://")[0],
        "redis_server": redis_lib.Redis.from_url(env["KEYS_REDIS_URL"]).info("server")["redis_version"],
        "channel_layer": _channel_layer_backend(),
        "versions": {p: metadata.version(p) for p in packages},
    }
    return info


async def run(args, env, world, daphnes) -> dict:
    import httpx

    ports = [port for _, port in daphnes]
    fleet = Fleet(world.get("user_tokens") if args.presence else None, args.presence_every)
    fleet.compression = "deflate" if args.deflate != "off" else None
    results: dict = {}
    # (after the servers started: they must not inherit the clients' policy)
    # (the client processes spawned later inherit it)
    results["client_scheduling"] = client_scheduling(args.client_scheduling)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[0]}", timeout=60) as http:
        # warm the server (imports, first DB connections) so memory deltas measure connections
        await fleet.open(ports, world["units"], world["watch_tokens"], len(world["units"]))
        await fleet.close()
        results["connect"] = await phase_connect(fleet, ports, world, args.connections, daphnes)
        results["single_approvals"] = await phase_approvals(fleet, http, world, args.approvals)
        if args.burst:
            results["burst"] = await phase_burst(fleet, http, world, args.burst, daphnes)
        if args.fanout_seconds:
            results["fanout"] = await phase_fanout(fleet, world, daphnes, args.fanout_seconds, args.profile)
        if args.bulk:
            results["bulk"] = await phase_bulk(fleet, http, world, ports, args.bulk, args.bulk_clients)
        await fleet.close()
        if args.big_connections and args.client_processes > 1:
            await asyncio.sleep(2)
            results["big"] = await phase_big_processes(
                http, world, ports, args.big_connections, daphnes, args.client_processes,
                min(20, args.approvals), fleet.compression,
            )
        elif args.big_connections:
            await asyncio.sleep(2)
            big = await phase_connect(fleet, ports, world, args.big_connections, daphnes)
            big["single_approvals"] = await phase_approvals(fleet, http, world, min(20, args.approvals))
            results["big"] = big
            await fleet.close()
    return results


def print_table(results: dict) -> None:
    c, s = results["connect"], results["single_approvals"]
    rows = [
        ("client processes' scheduling", results.get("client_scheduling", "normal")),
        ("connect rate", f"{c['connects_per_second']}/s ({c['connections']} clients)"),
        ("memory per idle connection", f"{c['memory_per_connection_kb']} KB (server RSS {c['server_rss_mb']} MB)"),
        ("commit -> client p50 / p99", f"{s['commit_to_client_ms']['p50']} / {s['commit_to_client_ms']['p99']} ms"),
        ("API request -> client p50 / p99", f"{s['api_to_client_ms']['p50']} / {s['api_to_client_ms']['p99']} ms"),
    ]
    if "burst" in results:
        b = results["burst"]
        burst = f"{b['deliveries_per_second']}/s ({b['deliveries']} in {b['seconds_first_to_last_receipt']} s)"
        rows.append(("burst deliveries", burst))
        rows.append(("server CPU per delivery (burst)", f"{b['server_cpu_us_per_delivery']} µs"))
    if "fanout" in results:
        f = results["fanout"]
        sustained = f"{f['deliveries_per_second']}/s ({f['changes']} changes, {f['deliveries']} deliveries)"
        rows.append(("sustained fan-out", sustained))
        rows.append(("server CPU per delivery (sustained)", f"{f['server_cpu_us_per_delivery']} µs"))
    if "bulk" in results:
        k = results["bulk"]
        rows.append((f"{k['items']}-item bulk: job succeeded", f"{k['submit_to_job_succeeded_seconds']} s"))
        rows.append((f"{k['items']}-item bulk: last client receipt", f"{k['submit_to_last_client_receipt_seconds']} s"))
    if "big" in results:
        g = results["big"]
        rows.append((f"at {g['connections']}: connect rate", f"{g['connects_per_second']}/s"))
        rows.append((f"at {g['connections']}: memory per connection", f"{g['memory_per_connection_kb']} KB"))
        gs = g["single_approvals"]
        rows.append((f"at {g['connections']}: commit -> client p50/p99",
                     f"{gs['commit_to_client_ms']['p50']} / {gs['commit_to_client_ms']['p99']} ms"))
        side = g.get("server_side") or {}
        if side.get("observations"):
            rows.append((f"at {g['connections']}: commit -> handed over (hubs)",
                         f"p50 {side['p50_bucket_ms']} ms, p99 {side['p99_bucket_ms']} ms, "
                         f"{side['share_within_100_ms'] * 100:.1f} % within 100 ms ({side['observations']} handed)"))
        for k, child in enumerate(g.get("clients", [])):
            rows.append((f"at {g['connections']}: client process {k} CPU",
                         f"{child['cpu_per_wall']} of a core overall, {child['after_connect_cpu_per_wall']} "
                         f"after connect ({child['connections']} clients, {child['cpu_seconds']} s CPU / "
                         f"{child['wall_seconds']} s)"))
    for k, trace in enumerate(results.get("stall_trace", {}).values()):
        worst = max(trace["named"].items(), key=lambda item: item[1]["longest_ms"], default=None)
        rows.append((f"daphne {k}: loop stalls over the limit",
                     f"{trace['stalls']} (longest {trace['longest_stall_ms']} ms"
                     + (f"; longest named: {worst[0]} {worst[1]['longest_ms']} ms)" if worst else ")")))
    if "publish_trace" in results:
        late = results["publish_trace"]
        rows.append(("worker: publishes over the limit",
                     f"{late['late_publishes']}" + (f" (longest {late['longest_ms']} ms: {late['longest_before_send_ms']} ms "
                                                    f"before the send, {late['longest_send_ms']} ms the send)"
                                                    if late["late_publishes"] else "")))
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}")


def main(argv=None) -> None:
    args = parse_args(argv)
    _raise_nofile()
    sys.path.insert(0, str(ROOT))
    env = prepare_environment(args)
    reset_stores(env)
    print(f"bench: seeding {args.units} units ({env['DATABASE_URL'].split('://')[0]}) ...", flush=True)
    world = seed(args)
    daphnes, worker = start_stack(args, env)
    try:
        print("bench: measuring ...", flush=True)
        results = asyncio.run(run(args, env, world, daphnes))
    finally:
        for proc, _ in daphnes:
            proc.stop()
        worker.stop()
    results["stall_trace"] = {
        str(proc.log_path.relative_to(ROOT)): stall_trace(proc.log_path.read_text(errors="replace"))
        for proc, _ in daphnes
    }
    results["publish_trace"] = publish_trace(worker.log_path.read_text(errors="replace"))
    report = {"machine": machine_info(env), "args": vars(args), "seed_seconds": round(world["seconds"], 1),
              "results": results}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"\n{platform.node()} · {report['machine']['cpu']} · {report['machine']['cores']} cores · "
          f"Python {report['machine']['python']} · {report['machine']['database']}")
    print_table(results)
    print(f"\nresults: {out.relative_to(ROOT)}")


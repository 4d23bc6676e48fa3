"""Sustained state changes: many API clients, each submitting its next job-backed change as soon as
its previous one has reached it over the WebSocket, against a bare-Celery baseline (issue 18).

    python -m bench.sustained [--clients 50] [--seconds 60] [--workers 2] [--units 10]

Starts the real stack as the Procfile runs it (one Daphne with its flags, one Celery worker
`-Q default,bulk --concurrency N` prefork, the relay) on the PostgreSQL database
records_bench_sustained (dropped and created) and a Redis server of the benchmark's own (default
redis://127.0.0.1:6386, databases 0-2 flushed), seeds --units units with one store-role user and
one crate per client, then runs two phases of --seconds each (after --warmup seconds not counted):

(1) ours: each client (asyncio + httpx, its own user's JWT) POSTs /api/crates/{id}/relocate/
    {"location", "version"} and waits until its own WebSocket receives the `data_update` of its
    crate; then the next. Each client has **its own WebSocket connection** (as each console user
    has): it receives every update of its unit (clients/units sockets per unit see every change)
    and its own job_update and notification frames, so the delivery side is loaded as in
    production. A client's crate is changed by that client only, so the first `data_update` for the
    crate after the POST was sent is the change; afterwards the Job rows are checked (every job
    succeeded, each crate's result versions consecutive) and each socket's seqs gap-free.
(2) baseline: the same clients send a bench-only Celery task (defined here, `bench.sustained.noop`,
    registered on the same worker: `celery -A bench.sustained:bench_app`, same flags) with a
    job-like argument; it INSERTs one row (one transaction) and RPUSHes the id to a Redis list the
    client BLPOPs; then the next.

Measured: changes/s committed and delivered, request -> client p50/p90/p99/max, the 202, the Job
rows' timestamps (request -> enqueued -> started -> finished -> client) to split where the time
goes, CPU of each server process (Daphne, worker main and children, relay, PostgreSQL backends of
this database and PostgreSQL's shared processes, Redis) and of this client process; py-spy
profiles of Daphne and the worker (with its children) for --profile-seconds in the middle of (1).
Results: bench-results/sustained-<time>.json and a table.

Issue 30: the target is ours/baseline >= 0.5 delivered changes/s with request -> client p99 <= 500 ms
(same run, same machine); the checks report how many jobs the worker applied together (`batch_sizes`:
jobs a batch finished share their finished_at). `--database-url sqlite:///…/records_bench_sustained.sqlite3`
runs the same on SQLite (the file is deleted and made again); `JOB_BATCH_MAX=1` runs the one-job path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime
from importlib import metadata
from pathlib import Path

from bench import wsclient

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench-results"
DATABASE_NAME = "records_bench_sustained"
DEFAULT_DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DATABASE_NAME}"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6386"
BASELINE_TASK = "bench.sustained.noop"
BASELINE_TABLE = "bench_sustained_noop"
DONE_KEY = "bench:sustained:done:{client}"
TARGET_RATE, TARGET_P99_MS = 300, 500
# Issue 30's target: ours delivered at least half the bare task's rate, same run, same machine.
TARGET_RATIO = 0.5


# --- the baseline task: on the project's Celery app, in the worker only -----------------------


_done_redis = None


def _bench_app():
    """The project's Celery app (workers.celery, every job kind's task) plus the baseline task,
    declared with the project's task decorator (late ack, retries, queue `default`). Only
    `celery -A bench.sustained:bench_app` builds it."""
    import django

    django.setup()
    from workers.base import records_task
    from workers.celery import app

    if BASELINE_TASK not in app.tasks:

        @records_task(BASELINE_TASK)
        def noop(job_id: str, client: int, **_display) -> str:
            global _done_redis
            import redis
            from django.conf import settings
            from django.db import connection

            with connection.cursor() as cursor:  # autocommit: one durable transaction
                cursor.execute(f"INSERT INTO {BASELINE_TABLE} (id, client) VALUES (%s, %s)", [job_id, client])
            if _done_redis is None:  # made after the fork, once per child
                _done_redis = redis.Redis.from_url(settings.KEYS_REDIS_URL)
            _done_redis.rpush(DONE_KEY.format(client=client), job_id)
            return "done"

    return app


def __getattr__(name: str):
    if name == "bench_app":
        return _bench_app()
    raise AttributeError(name)


# --- setup ------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.sustained", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=60.0, help="measured seconds per phase")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds run before each measured window")
    p.add_argument("--workers", type=int, default=2, help="Celery worker concurrency (prefork), as WORKER_CONCURRENCY")
    p.add_argument("--units", type=int, default=10)
    p.add_argument("--profile-seconds", type=float, default=10.0, help="py-spy in the middle of phase 1 (0: none)")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--database-url", default=os.environ.get("BENCH_SUSTAINED_DATABASE_URL", DEFAULT_DATABASE_URL))
    p.add_argument("--redis-url", default=os.environ.get("BENCH_SUSTAINED_REDIS_URL", DEFAULT_REDIS_URL),
                   help="a Redis server of the benchmark's own: databases 0, 1, 2 are flushed")
    p.add_argument("--label", default="")
    return p.parse_args(argv)


def bench_environment(args, database_name: str, extra: dict[str, str]) -> dict[str, str]:
    """A benchmark's own PostgreSQL database (dropped and created) and Redis server (databases 0-2
    flushed), refusing anything shared; returns the processes' environment, `extra` included."""
    import psycopg
    import redis

    name = args.database_url.rsplit("/", 1)[1]
    sqlite = args.database_url.startswith("sqlite:///")
    if sqlite and not name.startswith(database_name):
        sys.exit(f"--database-url sqlite:///…/{database_name}*.sqlite3: the file is deleted and made again")
    if not sqlite and (not args.database_url.startswith("postgres") or not name.startswith(database_name)):
        sys.exit(f"--database-url must be a PostgreSQL database named {database_name}*: it is dropped and created")
    base = args.redis_url.rstrip("/")
    if base.endswith(":6379"):
        sys.exit("refusing to flush the shared Redis on 6379: give --redis-url of a server of your own")
    env = {
        "DJANGO_SETTINGS_MODULE": "backend.config.settings.base",
        "DATABASE_URL": args.database_url,
        "REDIS_URL": base,
        "CELERY_BROKER_URL": f"{base}/0",
        "CHANNEL_LAYER_URL": f"{base}/1",
        "KEYS_REDIS_URL": f"{base}/2",
        "DEBUG": "false",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    os.environ.update(env)
    for db in (0, 1, 2):
        redis.Redis.from_url(f"{base}/{db}").flushdb()
    if sqlite:
        path = Path(args.database_url[len("sqlite:///"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return {**os.environ, **env}
    with psycopg.connect(args.database_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return {**os.environ, **env}


def prepare(args) -> dict[str, str]:
    import psycopg

    env = bench_environment(args, DATABASE_NAME, {"JWT_ACCESS_MINUTES": "240", "WORKER_CONCURRENCY": str(args.workers)})
    if is_sqlite(args):
        return env  # the baseline's table is made after migrate (seed)
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {BASELINE_TABLE} (id uuid PRIMARY KEY, client int NOT NULL, "
                     "at timestamptz NOT NULL DEFAULT now())")
    return env


def seed(args) -> dict:
    import django

    django.setup()
    from django.core.management import call_command

    from backend.accounts.models import Role, Unit, User
    from backend.accounts.tokens import UnitTokenObtainPairSerializer
    from backend.records.models import Crate

    started = time.monotonic()
    call_command("migrate", verbosity=0)
    per_unit = -(-args.clients // args.units)
    call_command("seed_demo", units=args.units, crates=max(per_unit, 10), requests=0, pending=0,
                 quiet_logins=True, force=True)
    units = list(Unit.objects.order_by("code"))[: args.units]
    crates = {u.id: list(Crate.objects.filter(unit=u, status="in_storage").order_by("crate_number")[:per_unit])
              for u in units}
    clients = []
    for i in range(args.clients):
        unit = units[i % len(units)]
        crate = crates[unit.id][i // len(units)]
        (user,) = User.objects.bulk_create([User(username=f"{unit.code}.bench{i}", unit=unit, role=Role.STORE, password="!")])
        clients.append({
            "index": i, "unit": str(unit.id), "user": str(user.id), "crate": str(crate.id), "version": crate.version,
            "token": str(UnitTokenObtainPairSerializer.get_token(user).access_token),
        })
    from django.db import connection, connections

    if is_sqlite(args):
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE TABLE {BASELINE_TABLE} (id char(32) PRIMARY KEY, client int NOT NULL, "
                           "at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP)")
            cursor.execute("ANALYZE")
        connections.close_all()
        return {"clients": clients, "units": [str(u.id) for u in units], "seconds": round(time.monotonic() - started, 1)}
    import psycopg

    connections.close_all()
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")  # a settled database: no autovacuum of fresh tables mid-run
    return {"clients": clients, "units": [str(u.id) for u in units], "seconds": round(time.monotonic() - started, 1)}


def start_stack(args, env) -> dict:
    """Daphne, worker and relay with the Procfile's flags (the worker's app adds the baseline task)."""
    from bench.processes import LiveProcess, free_port, wait_for_port

    port = free_port()
    procs = {}
    procs["daphne"] = LiveProcess("bench-sustained-daphne", [
        sys.executable, "-m", "realtime.daphne", "-e", f"tcp:port={port}:interface=127.0.0.1:backlog=4096",
        "--ping-interval", "20", "--ping-timeout", "30",
        "--websocket-max-message-size", "65536", "--websocket-max-frame-size", "65536",
        "--websocket_connect_timeout", "10", "--application-close-timeout", "10", "-v", "1",
        "backend.config.asgi:application",
    ], env)
    wait_for_port(port, proc=procs["daphne"])
    procs["worker"] = LiveProcess("bench-sustained-worker", [
        sys.executable, "-m", "celery", "-A", "bench.sustained:bench_app", "worker", "-l", "info",
        "-Q", "default,bulk", "--concurrency", str(args.workers), "-n", "bench-sustained@%h",
    ], env)
    procs["relay"] = LiveProcess("bench-sustained-relay", [sys.executable, "-m", "workers.relay"], env)
    procs["worker"].wait_for_output(" ready.", timeout=90)
    procs["relay"].wait_for_output("relay started", timeout=60)
    procs["port"] = port
    return procs


# --- CPU accounting ---------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds of every server process over a window, by role. A thread samples every 0.5 s so
    processes that start or end inside the window (PostgreSQL backends) are counted too."""

    def __init__(self, procs: dict, redis_pid: int, database: str) -> None:
        self.procs, self.redis_pid, self.database = procs, redis_pid, database
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.role: dict[int, str] = {}
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def _tracked(self):
        import psutil

        daphne = psutil.Process(self.procs["daphne"].popen.pid)
        yield "daphne", daphne
        worker = psutil.Process(self.procs["worker"].popen.pid)
        yield "worker main", worker
        for child in worker.children(recursive=True):
            yield "worker children", child
        relay = psutil.Process(self.procs["relay"].popen.pid)
        yield "relay", relay
        yield "redis", psutil.Process(self.redis_pid)
        for proc in psutil.process_iter(["name", "cmdline"]):
            title = " ".join(proc.info["cmdline"] or [])
            if not (proc.info["name"] or "").startswith("postgres") and not title.startswith("postgres"):
                continue
            if f" {self.database} " in title:
                yield "postgres (this database)", proc
            elif title.startswith("postgres: ") and any(
                word in title for word in ("checkpointer", "background writer", "walwriter", "autovacuum",
                                           "logical replication", "archiver", "stats")
            ):
                yield "postgres (shared)", proc
            elif not title.startswith("postgres: "):
                yield "postgres (shared)", proc  # the postmaster
            else:
                yield "postgres (other databases)", proc

    def _postmaster_cpu(self) -> float:
        """CPU of the PostgreSQL postmaster and of its children already reaped (their whole life):
        the short-lived backends, which exit between two samples."""
        import psutil

        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info["cmdline"] or []
            if cmd and cmd[0].endswith("bin/postgres"):
                t = proc.cpu_times()
                return t.user + t.system + t.children_user + t.children_system
        return 0.0

    def sample(self, initial: bool = False) -> None:
        import psutil

        self.seen_now = set()
        for role, proc in list(self._tracked()):
            try:
                t = proc.cpu_times()
                created = proc.create_time()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            value = t.user + t.system
            self.seen_now.add(proc.pid)
            if proc.pid not in self.first:
                self.first[proc.pid] = value if initial or created < self.started else 0.0
                self.role[proc.pid] = role
            self.last[proc.pid] = value

    def _loop(self) -> None:
        while not self.stop_event.wait(0.5):
            self.sample()

    def start(self) -> None:
        import psutil

        self.started = time.time()
        self.wall0 = time.monotonic()
        self.client0 = _self_cpu()
        self.machine0 = psutil.cpu_times()
        self.postmaster0 = self._postmaster_cpu()
        self.sample(initial=True)
        self.database0 = database_counters(self.database)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def stop(self) -> dict:
        import psutil

        self.stop_event.set()
        self.thread.join()
        self.sample()
        reaped = self._postmaster_cpu() - self.postmaster0
        wall = time.monotonic() - self.wall0
        time.sleep(1.0)  # PostgreSQL's statistics lag by up to a second
        database = {k: v - self.database0[k] for k, v in database_counters(self.database).items()}
        client = _self_cpu() - self.client0
        m0, m1 = self.machine0, psutil.cpu_times()
        idle = (m1.idle - m0.idle) + (getattr(m1, "iowait", 0) - getattr(m0, "iowait", 0))
        total = sum(m1) - sum(m0)
        by_role: dict[str, float] = defaultdict(float)
        for pid, first in self.first.items():
            if self.role[pid].startswith("postgres") and pid not in self.seen_now:
                continue  # exited: its whole CPU is in the postmaster's reaped children
            by_role[self.role[pid]] += self.last[pid] - first
        # Backends that ended in the window (nearly all ours: Daphne opens one per request, the
        # worker one per task; the other databases' sessions here are long-lived) and the postmaster.
        by_role["postgres (ended backends, postmaster)"] = reaped
        server = sum(v for k, v in by_role.items() if k != "postgres (other databases)")
        return {
            "seconds": round(wall, 2),
            "cpu_seconds": {k: round(v, 2) for k, v in sorted(by_role.items())},
            "cores_busy": {k: round(v / wall, 3) for k, v in sorted(by_role.items())},
            "server_cores_busy": round(server / wall, 3),
            "client_cores_busy": round(client / wall, 3),
            "machine_cores_busy": round((total - idle) / total * (os.cpu_count() or 1), 3),
            "cores": os.cpu_count(),
            # this database's, over the window (pg_stat_database): new sessions are new connections
            "database": database,
        }


def is_sqlite(args) -> bool:
    return args.database_url.startswith("sqlite:///")


def database_counters(database: str) -> dict[str, int]:
    import psycopg

    if os.environ["DATABASE_URL"].startswith("sqlite:"):
        return {"commits": 0, "rollbacks": 0, "sessions": 0, "rows_written": 0}  # no such statistics

    with psycopg.connect(f"{os.environ['DATABASE_URL'].rsplit('/', 1)[0]}/{database}", autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit, xact_rollback, sessions, tup_inserted + tup_updated + tup_deleted "
            "FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return dict(zip(("commits", "rollbacks", "sessions", "rows_written"), (int(v) for v in row), strict=True))


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- clients ----------------------------------------------------------------------------------


class Socket:
    """One client's WebSocket: every update of its unit, its own job_update / notification frames."""

    def __init__(self, client: dict, port: int) -> None:
        self.client, self.port = client, port
        self.waiting: asyncio.Future | None = None
        self.seq: int | None = None
        self.gaps = 0
        self.kinds: Counter = Counter()
        self.own_updates = 0
        self.unexpected = 0

    async def open(self) -> None:
        url = f"ws://127.0.0.1:{self.port}/ws/updates/?token={self.client['token']}"
        self.ws = await wsclient.connect(url, self._on_text, origin="http://127.0.0.1",
                                         on_hello=lambda hello: setattr(self, "seq", hello["seq"]))

    def _on_text(self, raw: str, now: float) -> None:
        message = json.loads(raw)
        kind = message["type"]
        self.kinds[kind] += 1
        updates = message["updates"] if kind == "data_update_batch" else [message] if kind == "data_update" else []
        for update in updates:
            if update["seq"] != self.seq + 1:
                self.gaps += update["seq"] > self.seq + 1
            self.seq = max(self.seq, update["seq"])
            if update["data"]["id"] == self.client["crate"]:
                self.own_updates += 1
                if self.waiting is not None and not self.waiting.done():
                    self.waiting.set_result(now)
                else:
                    self.unexpected += 1

    async def close(self) -> None:
        await self.ws.close()


class Window:
    def __init__(self, warmup: float, seconds: float) -> None:
        self.begin = time.time() + warmup
        self.end = self.begin + seconds


async def relocations(client: dict, sock: Socket, http, window: Window, samples: list, errors: Counter) -> None:
    """One client: relocate its crate, wait for the update on its socket, again, until the window ends."""
    headers = {"Authorization": f"Bearer {client['token']}"}
    n = 0
    while time.time() < window.end:
        n += 1
        sock.waiting = asyncio.get_running_loop().create_future()
        sent = time.time()
        answer = await http.post(f"/api/crates/{client['crate']}/relocate/", headers=headers,
                                 json={"location": f"S{client['index']}-{n}", "version": client["version"]})
        accepted = time.time()
        if answer.status_code != 202:
            errors[f"http {answer.status_code}: {answer.text[:120]}"] += 1
            await _resync(client, http, headers)
            continue
        job_id = answer.json()["job"]["id"]
        try:
            received = await asyncio.wait_for(sock.waiting, 20)
        except TimeoutError:
            errors["no update within 20 s"] += 1
            await _resync(client, http, headers)
            continue
        client["version"] += 1
        samples.append({"job": job_id, "client": client["index"], "sent": sent, "accepted": accepted,
                        "received": received})


async def _resync(client, http, headers) -> None:
    """After a refusal or a lost update: read the crate's version again (until the API answers)."""
    for _ in range(50):
        await asyncio.sleep(0.1)
        answer = await http.get(f"/api/crates/{client['crate']}/", headers=headers)
        if answer.status_code == 200:
            client["version"] = answer.json()["version"]
            return


async def noops(client: dict, window: Window, samples: list, errors: Counter, redis_url: str) -> None:
    """One baseline client: send the bench task, BLPOP its completion, again."""
    import redis.asyncio as aioredis

    from backend.jobs.celery_app import app

    key = DONE_KEY.format(client=client["index"])
    done = aioredis.Redis.from_url(redis_url)
    try:
        while time.time() < window.end:
            job_id = str(uuid.uuid4())
            sent = time.time()
            app.send_task(BASELINE_TASK, kwargs={"job_id": job_id, "client": client["index"]}, task_id=job_id,
                          queue="default",
                          kwargsrepr=repr({"job_id": job_id, "what": f"bench noop by client {client['index']}"}))
            accepted = time.time()
            popped = await done.blpop([key], timeout=20)
            received = time.time()
            if popped is None or popped[1].decode() != job_id:
                errors["baseline: no completion within 20 s" if popped is None else "baseline: wrong id"] += 1
                continue
            samples.append({"job": job_id, "client": client["index"], "sent": sent, "accepted": accepted,
                            "received": received})
    finally:
        await done.aclose()


# --- profiles ---------------------------------------------------------------------------------


def _spy_bin() -> str | None:
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


async def profile(procs: dict, delay: float, seconds: float, stamp: str) -> dict:
    """py-spy record (raw) of Daphne (on-CPU samples) and of the worker with its children (every
    sample, idle ones too: where a child's wall time goes)."""
    spy = _spy_bin()
    if not spy or seconds <= 0:
        return {"skipped": "py-spy not installed" if not spy else "--profile-seconds 0"}
    await asyncio.sleep(delay)
    RESULTS.mkdir(exist_ok=True)
    outs = {"daphne": RESULTS / f"sustained-{stamp}-daphne.txt", "worker": RESULTS / f"sustained-{stamp}-worker.txt"}
    runs = {
        "daphne": [spy, "record", "--pid", str(procs["daphne"].popen.pid), "--duration", str(int(seconds)),
                   "--format", "raw", "--nonblocking", "-o", str(outs["daphne"])],
        "worker": [spy, "record", "--pid", str(procs["worker"].popen.pid), "--subprocesses", "--idle",
                   "--duration", str(int(seconds)), "--format", "raw", "--nonblocking", "-o", str(outs["worker"])],
    }
    started = {k: subprocess.Popen(v, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for k, v in runs.items()}
    result = {}
    for name, proc in started.items():
        _, err = await asyncio.to_thread(proc.communicate, timeout=seconds + 60)
        path = outs[name]
        if proc.returncode != 0 or not path.exists():
            result[name] = {"error": err.decode(errors="replace")[-500:]}
            continue
        result[name] = {"file": str(path.relative_to(ROOT)), **summarise(path, seconds, name)}
    return result


def _stacks(path: Path):
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            frames = stack.split(";")
            procs = [f for f in frames if f.startswith("process ")]
            proc = procs[-1].split(":")[0] if procs else ""
            if proc and len(procs) == 1:
                proc += " (main)"
            yield proc, [f for f in frames if not f.startswith("process ")], int(count)


OURS = ("backend/", "workers/", "realtime/")
IDLE_LEAVES = ("select (selectors.py", "poll (selectors.py", "_poll (", "wait (threading.py", "_recv (", "recv (",
               "read (", "poll (billiard", "_wait_for_tstate_lock", "_worker (concurrent")


def summarise(path: Path, seconds: float, name: str) -> dict:
    """Self time per function, inclusive time per function of ours, and for the worker the split of
    each child's wall time: waiting for a task / in the job (PostgreSQL, Redis, Python) / Celery."""
    self_time: Counter = Counter()
    inclusive: Counter = Counter()
    split: dict[str, Counter] = defaultdict(Counter)
    total = 0
    for proc, frames, count in _stacks(path):
        leaf = frames[-1] if frames else "?"
        text = ";".join(frames)
        in_task = "job_execute (" in text or "noop (bench/sustained.py" in text
        idle = any(marker in leaf for marker in IDLE_LEAVES)
        if name == "worker" and ("workloop (" in text or proc.endswith("(main)")):
            # a child's main thread (billiard's workloop), not its channel-layer loop thread
            role = proc or "?"
            if not in_task:
                where = "idle (waiting for a task / the broker)" if idle else "Celery/kombu outside the task"
            elif "psycopg" in text.rsplit("job_execute (", 1)[-1] and ("psycopg" in leaf or "wait" in leaf or idle):
                where = "in the job: waiting on PostgreSQL"
            elif "psycopg" in leaf:
                where = "in the job: psycopg"
            elif "redis" in leaf or "channels_redis" in text.rsplit(";", 3)[-1] or "broadcast.py" in text and idle:
                where = "in the job: Redis (publish, job_update, notification)"
            else:
                where = "in the job: Python (Django ORM, services, serialisation)"
            split[role][where] += count
        if idle:
            continue
        total += count
        self_time[leaf] += count
        for frame in set(frames):
            if any(marker in frame for marker in OURS):
                inclusive[frame] += count
    top = [f"{100 * n / total:5.1f}%  {frame}" for frame, n in self_time.most_common(15)] if total else []
    ours = [f"{100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(15)] if total else []
    out = {"samples_on_cpu": total, "self_top": top, "ours_inclusive_top": ours}
    if name == "worker":
        out["wall_split"] = {
            role: {where: f"{100 * n / sum(c.values()):.1f}%" for where, n in c.most_common()}
            for role, c in split.items()
        }
    return out


# --- phases -----------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def dist(values: list[float]) -> dict:
    return {"n": len(values), "p50": round(pct(values, 0.5) * 1000, 1), "p90": round(pct(values, 0.9) * 1000, 1),
            "p99": round(pct(values, 0.99) * 1000, 1), "max": round(max(values) * 1000, 1) if values else None}


def rates(samples: list[dict], window: Window) -> tuple[list[dict], float]:
    inside = [s for s in samples if window.begin <= s["sent"] < window.end]
    delivered = sum(1 for s in samples if window.begin <= s["received"] < window.end)
    return inside, delivered / (window.end - window.begin)


async def phase_ours(args, world, procs, meter_args, stamp) -> dict:
    import httpx

    port = procs["port"]
    socks = [Socket(c, port) for c in world["clients"]]
    for i in range(0, len(socks), 25):
        await asyncio.gather(*(s.open() for s in socks[i : i + 25]))
    samples: list[dict] = []
    errors: Counter = Counter()
    limits = httpx.Limits(max_connections=args.clients + 10, max_keepalive_connections=args.clients + 10)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60, limits=limits) as http:
        window = Window(args.warmup, args.seconds)
        tasks = [asyncio.create_task(relocations(c, s, http, window, samples, errors))
                 for c, s in zip(world["clients"], socks, strict=True)]
        await asyncio.sleep(max(0.0, window.begin - time.time()))
        meter = CpuMeter(*meter_args)
        # In a thread: the meter's reads (psutil over every process, a PostgreSQL connection, the
        # one-second wait for PostgreSQL's statistics) would otherwise stall this loop, and every
        # update in flight at that moment would look a second late.
        await asyncio.to_thread(meter.start)
        spy = asyncio.create_task(profile(procs, max(0.0, (args.seconds - args.profile_seconds) / 2),
                                          args.profile_seconds, stamp))
        await asyncio.sleep(max(0.0, window.end - time.time()))
        cpu = await asyncio.to_thread(meter.stop)
        await asyncio.gather(*tasks)
        profiled = await spy
    await asyncio.sleep(1.0)  # let every socket receive the last updates of its unit
    for s in socks:
        await s.close()
    inside, delivered_rate = rates(samples, window)
    jobs = await asyncio.to_thread(job_rows, [s["job"] for s in samples])
    # committed: jobs whose transaction finished inside the window (finished_at is set just before COMMIT)
    committed = sum(1 for j in jobs.values() if j["status"] == "succeeded" and window.begin <= j["finished"] < window.end)
    split: dict[str, list[float]] = defaultdict(list)
    for s in inside:
        j = jobs[s["job"]]
        split["request -> job row (HTTP, view)"].append(j["enqueued"] - s["sent"])
        split["job row -> started (commit, broker, queue wait, worker pickup)"].append(j["started"] - j["enqueued"])
        split["started -> finished (the job: job_start, push, transaction)"].append(j["finished"] - j["started"])
        split["finished -> client (COMMIT, publish, hub, socket)"].append(s["received"] - j["finished"])
    return {
        "changes": len(samples),
        "committed_per_second": round(committed / args.seconds, 1),
        "delivered_per_second": round(delivered_rate, 1),
        "request_to_client_ms": dist([s["received"] - s["sent"] for s in inside]),
        "http_202_ms": dist([s["accepted"] - s["sent"] for s in inside]),
        "split_ms": {k: dist(v) for k, v in split.items()},
        "errors": dict(errors),
        "checks": await asyncio.to_thread(checks, socks, jobs, world),
        "cpu": cpu,
        "profile": profiled,
    }


def job_rows(ids: list[str]) -> dict:
    from django.db import close_old_connections

    from backend.jobs.models import Job

    close_old_connections()
    rows = {}
    for start in range(0, len(ids), 2000):
        for job in Job.objects.filter(id__in=ids[start : start + 2000]).only(
            "id", "status", "result", "enqueued_at", "started_at", "finished_at", "attempts", "targets"
        ):
            rows[str(job.id)] = {
                "status": job.status, "version": (job.result or {}).get("version"), "crate": job.targets[0],
                "enqueued": job.enqueued_at.timestamp(), "started": job.started_at.timestamp(),
                "finished": job.finished_at.timestamp() if job.finished_at else float("nan"), "attempts": job.attempts,
            }
    return rows


def batch_sizes(jobs: dict) -> dict:
    together = Counter(j["finished"] for j in jobs.values() if j["status"] == "succeeded")
    sizes = list(together.values())
    if not sizes:
        return {}
    return {"batches": len(sizes), "mean": round(sum(sizes) / len(sizes), 2), "max": max(sizes),
            "jobs_in_batches_of_2_or_more": sum(n for n in sizes if n > 1)}


def checks(socks: list[Socket], jobs: dict, world: dict) -> dict:
    """Every job succeeded once; each crate's versions consecutive; every socket gap-free and at its
    unit's last seq; each client saw each of its changes exactly once."""
    from backend.events.models import OutboxEvent

    versions: dict[str, list[int]] = defaultdict(list)
    for j in jobs.values():
        versions[j["crate"]].append(j["version"] or 0)
    consecutive = all(sorted(v) == list(range(min(v), min(v) + len(v))) for v in versions.values())
    last_seq = {}
    for unit in world["units"]:
        last_seq[unit] = OutboxEvent.objects.filter(unit_id=unit).order_by("-seq").values_list("seq", flat=True).first()
    kinds: Counter = Counter()
    for s in socks:
        kinds.update(s.kinds)
    return {
        "jobs": len(jobs),
        "jobs_succeeded": sum(1 for j in jobs.values() if j["status"] == "succeeded"),
        "jobs_redelivered": sum(1 for j in jobs.values() if j["attempts"] != 1),
        # Jobs a batch finished together share their finished_at (issue 30's set-based path).
        "batch_sizes": batch_sizes(jobs),
        "versions_consecutive_per_crate": consecutive,
        "sockets_with_gaps": sum(1 for s in socks if s.gaps),
        "sockets_behind_last_seq": sum(1 for s in socks if s.seq != last_seq[s.client["unit"]]),
        "unexpected_own_updates": sum(s.unexpected for s in socks),
        "frames_received": dict(kinds),
    }


async def phase_baseline(args, world, meter_args, redis_url) -> dict:
    samples: list[dict] = []
    errors: Counter = Counter()
    window = Window(args.warmup, args.seconds)
    tasks = [asyncio.create_task(noops(c, window, samples, errors, redis_url)) for c in world["clients"]]
    await asyncio.sleep(max(0.0, window.begin - time.time()))
    meter = CpuMeter(*meter_args)
    await asyncio.to_thread(meter.start)
    await asyncio.sleep(max(0.0, window.end - time.time()))
    cpu = await asyncio.to_thread(meter.stop)
    await asyncio.gather(*tasks)
    inside, delivered_rate = rates(samples, window)
    return {
        "tasks": len(samples),
        "completed_per_second": round(delivered_rate, 1),
        "request_to_client_ms": dist([s["received"] - s["sent"] for s in inside]),
        "send_ms": dist([s["accepted"] - s["sent"] for s in inside]),
        "errors": dict(errors),
        "cpu": cpu,
    }


# --- report -----------------------------------------------------------------------------------


def machine(env) -> dict:
    import redis
    from django.db import connection

    if connection.vendor == "sqlite":
        import sqlite3

        postgres = f"(SQLite {sqlite3.sqlite_version})"
    else:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            postgres = cursor.fetchone()[0]
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    packages = ["django", "djangorestframework", "channels", "channels-redis", "daphne", "twisted", "celery", "kombu",
                "billiard", "redis", "psycopg", "httpx", "websockets", "picows"]
    return {
        "when": datetime.now().astimezone().isoformat(timespec="seconds"), "cpu": cpu, "cores": os.cpu_count(),
        "platform": platform.platform(), "python": platform.python_version(), "postgresql": postgres,
        "redis_server": redis.Redis.from_url(env["KEYS_REDIS_URL"]).info("server")["redis_version"],
        "versions": {p: metadata.version(p) for p in packages},
    }


def print_table(report: dict) -> None:
    ours, base = report["ours"], report.get("baseline")
    rows = [("", "ours (relocate job)", "baseline (bare Celery)" if base else "")]

    def lat(d):
        return f"{d['p50']} / {d['p90']} / {d['p99']} / {d['max']} ms"

    rows.append(("changes/s committed / delivered", f"{ours['committed_per_second']} / {ours['delivered_per_second']}",
                 f"{base['completed_per_second']}" if base else ""))
    rows.append(("request -> client p50/p90/p99/max", lat(ours["request_to_client_ms"]),
                 lat(base["request_to_client_ms"]) if base else ""))
    rows.append(("202 (send for baseline) p50/p90/p99/max", lat(ours["http_202_ms"]),
                 lat(base["send_ms"]) if base else ""))
    for name, d in ours["split_ms"].items():
        rows.append((f"  {name}", lat(d), ""))
    roles = sorted(set(ours["cpu"]["cores_busy"]) | set(base["cpu"]["cores_busy"] if base else []))
    for role in roles:
        rows.append((f"CPU {role} (cores)", str(ours["cpu"]["cores_busy"].get(role, "")),
                     str(base["cpu"]["cores_busy"].get(role, "")) if base else ""))
    for key in ("server_cores_busy", "client_cores_busy", "machine_cores_busy"):
        rows.append((f"CPU {key.replace('_cores_busy', '')} (cores)", str(ours["cpu"][key]),
                     str(base["cpu"][key]) if base else ""))
    if base:
        rows.append(("ours / baseline: rate", f"{report['ratio']['rate']}", ""))
        rows.append(("ours / baseline: p50 / p99", f"{report['ratio']['p50']} / {report['ratio']['p99']}", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
    t = report["target"]
    print(f"\ntarget >= {TARGET_RATE} changes/s and p99 <= {TARGET_P99_MS} ms on {report['machine']['cores']} cores: "
          f"rate {'met' if t['rate_met'] else 'MISSED'}, p99 {'met' if t['p99_met'] else 'MISSED'}")
    if "ratio_met" in t:
        print(f"issue 30: ours / baseline >= {TARGET_RATIO} with p99 <= {TARGET_P99_MS} ms: ratio "
              f"{'met' if t['ratio_met'] else 'MISSED'} ({report['ratio']['rate']}), p99 "
              f"{'met' if t['p99_met'] else 'MISSED'}")
    print(f"checks: {json.dumps(ours['checks'])}")
    if ours["errors"]:
        print(f"errors: {ours['errors']}")
    for name, prof in (ours.get("profile") or {}).items():
        if not isinstance(prof, dict) or "self_top" not in prof:
            print(f"profile {name}: {prof}")
            continue
        print(f"\nprofile {name} ({prof['file']}), self time on CPU:")
        for line in prof["self_top"][:10]:
            print(f"  {line}")
        print(f"profile {name}, our functions (inclusive):")
        for line in prof["ours_inclusive_top"][:10]:
            print(f"  {line}")
        for role, split in (prof.get("wall_split") or {}).items():
            print(f"profile {name}, wall time of {role}: {split}")


def main(argv=None) -> None:
    import logging

    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    began = time.monotonic()
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    print(f"bench sustained: preparing {DATABASE_NAME} and Redis {args.redis_url} ...", flush=True)
    env = prepare(args)
    world = seed(args)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Django's LOGGING made it INFO: one line a request
    print(f"bench sustained: seeded {args.units} units, {args.clients} store users in {world['seconds']} s; "
          f"starting Daphne, worker (-c {args.workers}), relay ...", flush=True)
    procs = start_stack(args, env)
    try:
        import redis

        redis_pid = redis.Redis.from_url(env["KEYS_REDIS_URL"]).info("server")["process_id"]
        meter_args = (procs, redis_pid, args.database_url.rsplit("/", 1)[1])
        print(f"bench sustained: database {args.database_url}", flush=True)
        print(f"bench sustained: (1) {args.clients} clients relocating for {args.seconds:g} s ...", flush=True)
        ours = asyncio.run(phase_ours(args, world, procs, meter_args, stamp))
        base = None
        if not args.skip_baseline:
            print(f"bench sustained: (2) baseline, {args.clients} clients of a bare Celery task for "
                  f"{args.seconds:g} s ...", flush=True)
            base = asyncio.run(phase_baseline(args, world, meter_args, env["KEYS_REDIS_URL"]))
        for role in ("daphne", "worker", "relay"):
            if not procs[role].alive:
                raise RuntimeError(f"{role} exited during the run:\n{procs[role].output()[-3000:]}")
    finally:
        for role in ("daphne", "worker", "relay"):
            procs[role].stop(timeout=20)
    p99 = ours["request_to_client_ms"]["p99"]
    report = {
        "machine": machine(env), "args": vars(args), "seed_seconds": world["seconds"],
        "ours": ours, "baseline": base,
        "target": {"rate": TARGET_RATE, "p99_ms": TARGET_P99_MS,
                   "rate_met": min(ours["committed_per_second"], ours["delivered_per_second"]) >= TARGET_RATE,
                   "p99_met": p99 <= TARGET_P99_MS, "ratio": TARGET_RATIO},
        "logs": {role: str(procs[role].log_path.relative_to(ROOT)) for role in ("daphne", "worker", "relay")},
    }
    if base:
        report["ratio"] = {
            "rate": round(ours["delivered_per_second"] / base["completed_per_second"], 3),
            "p50": round(ours["request_to_client_ms"]["p50"] / base["request_to_client_ms"]["p50"], 2),
            "p99": round(p99 / base["request_to_client_ms"]["p99"], 2),
        }
        report["target"]["ratio_met"] = report["ratio"]["rate"] >= TARGET_RATIO
    report["run_seconds"] = round(time.monotonic() - began)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"sustained-{stamp}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    m = report["machine"]
    print(f"\n{m['cpu']} · {m['cores']} cores · Python {m['python']} · PostgreSQL {m['postgresql']} · "
          f"Redis {m['redis_server']} · {args.clients} clients, {args.units} units, worker -c {args.workers}, "
          f"{args.seconds:g} s per phase\n")
    print_table(report)
    print(f"\nresults: {out.relative_to(ROOT)} (run took {report['run_seconds']} s)")


if __name__ == "__main__":
    main()

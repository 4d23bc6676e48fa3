"""The relay as a process against the relay as a Celery task on beat's schedule, both run for real.

    python -m bench.relay [--idle-seconds 60] [--trials 20] [--redis-url ...] [--database-url ...]

(a) the current design: `python -m workers.relay` (a loop, a round every OUTBOX_SWEEP_SECONDS),
    beside the worker and beat as the Procfile starts them (beat then schedules the hourly prunes);
(b) the former design: beat sends an `outbox.sweep` task every 2 s (its schedule and task as they
    were, defined here only: `celery -A bench.relay:former_app`) to the same worker; no relay.

For each: CPU seconds per minute of every process involved while there is nothing to publish, the
Redis commands and database transactions they cause in that time, and the sweep tasks the worker
ran (what Flower lists); then the crash-recovery latency: an outbox event committed and left
unpublished, as a writer killed between COMMIT and publish leaves it, until `published_at` is set,
at random phases of the sweep. Last, in this process, what one idle relay round asks of the
database. Everything runs on a PostgreSQL database and a Redis server of the benchmark's own (a
private redis-server on a free port unless --redis-url is given: its three databases are flushed).

Results: a table here and bench-results/relay.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench-results"
DATABASE_PREFIX = "records_bench_relay"
DEFAULT_DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DATABASE_PREFIX}"
FORMER_SWEEP_SECONDS = 2.0  # the former beat schedule's OUTBOX_SWEEP_SECONDS default
SECONDS_PER_DAY = 86_400


# --- the former design: beat -> outbox.sweep task -> worker ---------------------------------------


def _former_app():
    """The project's Celery app (workers.celery, as the Procfile runs it) with the former schedule
    added back: an `outbox.sweep` task every 2 s (expiring after 10 s, on `default`), declared with
    the project's task decorator as it was. Only `celery -A bench.relay:former_app` builds it."""
    import django

    django.setup()
    from backend.events.outbox import outbox_sweep
    from workers.base import records_task
    from workers.celery import app

    if "outbox.sweep" not in app.tasks:

        @records_task("outbox.sweep", time_limit=60, max_retries=0)
        def sweep() -> int:
            return outbox_sweep()

    seconds = float(os.environ.get("BENCH_FORMER_SWEEP_SECONDS", FORMER_SWEEP_SECONDS))
    app.conf.beat_schedule = {
        **app.conf.beat_schedule,
        "outbox-sweep": {"task": "outbox.sweep", "schedule": seconds, "options": {"queue": "default", "expires": 10}},
    }
    return app


def __getattr__(name: str):
    # Celery resolves `-A bench.relay:former_app` with getattr: build the app only then, so
    # importing this module (to run the benchmark) sets nothing up.
    if name == "former_app":
        return _former_app()
    raise AttributeError(name)


# --- setup ------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m bench.relay", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--idle-seconds", type=float, default=60.0, help="idle CPU window per design")
    p.add_argument("--trials", type=int, default=20, help="crash-recovery latency samples per design")
    p.add_argument("--settle-seconds", type=float, default=5.0, help="wait after start before measuring")
    p.add_argument("--former-sweep-seconds", type=float, default=FORMER_SWEEP_SECONDS)
    p.add_argument("--database-url", default=os.environ.get("BENCH_RELAY_DATABASE_URL", DEFAULT_DATABASE_URL),
                   help=f"a PostgreSQL database whose name starts with {DATABASE_PREFIX} (dropped and created)")
    p.add_argument("--redis-url", default=os.environ.get("BENCH_RELAY_REDIS_URL", ""),
                   help="a Redis server of the benchmark's own (databases 0-2 are flushed); "
                        "default: start a private redis-server")
    p.add_argument("--json", type=Path, default=RESULTS / "relay.json")
    return p.parse_args(argv)


def prepare(args) -> tuple[dict[str, str], object]:
    """Environment for every process, a private Redis if none was given, a fresh migrated database."""
    from bench.processes import RedisServer
    from bench.realtime import reset_stores

    name = args.database_url.rsplit("/", 1)[1]
    if not args.database_url.startswith("postgres") or not name.startswith(DATABASE_PREFIX):
        sys.exit(f"--database-url must be a PostgreSQL database named {DATABASE_PREFIX}*: it is dropped and created")
    server = None
    redis_url = args.redis_url.rstrip("/")
    if not redis_url:
        server = RedisServer()
        server.start()
        redis_url = f"redis://127.0.0.1:{server.port}"
    env = {
        "DJANGO_SETTINGS_MODULE": "backend.config.settings.base",
        "DATABASE_URL": args.database_url,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": f"{redis_url}/0",
        "CHANNEL_LAYER_URL": f"{redis_url}/1",
        "KEYS_REDIS_URL": f"{redis_url}/2",
        "DEBUG": "false",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        "BENCH_FORMER_SWEEP_SECONDS": str(args.former_sweep_seconds),
    }
    os.environ.update(env)
    reset_stores(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    # A settled database, as in production: otherwise autovacuum visits the new tables during the
    # first idle window and its transactions count as the relay's.
    import psycopg

    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return {**os.environ, **env}, server


# --- processes and counters -------------------------------------------------------------------


def start_design(design: str, env: dict[str, str], schedule_dir: Path) -> dict:
    """The processes of one design, started with the Procfile's flags; returns {role: LiveProcess}."""
    from bench.processes import LiveProcess

    app = "workers.celery" if design == "a" else "bench.relay:former_app"
    procs = {}
    try:
        procs["worker"] = LiveProcess(f"bench-relay-{design}-worker", [
            sys.executable, "-m", "celery", "-A", app, "worker", "-l", "info", "-Q", "default,bulk",
            "--concurrency", "2", "-n", f"bench-relay-{design}@%h",
        ], env)
        procs["beat"] = LiveProcess(f"bench-relay-{design}-beat", [
            sys.executable, "-m", "celery", "-A", app, "beat", "-l", "info",
            "--schedule", str(schedule_dir / f"celerybeat-schedule-{design}"),
        ], env)
        if design == "a":
            procs["relay"] = LiveProcess(f"bench-relay-{design}-relay", [sys.executable, "-m", "workers.relay"], env)
        procs["worker"].wait_for_output(" ready.", timeout=60)
        procs["beat"].wait_for_output("beat: Starting", timeout=60)
        if "relay" in procs:
            procs["relay"].wait_for_output("relay started", timeout=60)
    except BaseException:
        stop_design(procs)
        raise
    return procs


def stop_design(procs: dict) -> None:
    for proc in procs.values():
        proc.stop(timeout=20)


def cpu_seconds(proc) -> float:
    """User + system CPU of a process and all its descendants, the reaped ones included."""
    import psutil

    try:
        root = psutil.Process(proc.popen.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in tree:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def redis_commands(client) -> int:
    return int(client.info("stats")["total_commands_processed"])


def database_counters(env) -> tuple[int, int]:
    """(transactions, sessions) of the benchmark's database so far, as PostgreSQL counts them."""
    import psycopg

    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback, sessions FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]), int(row[1])


def sweeps_run(procs) -> int:
    """outbox.sweep tasks the worker finished, from its log (Celery logs each at INFO)."""
    return procs["worker"].output().count("Task outbox.sweep[")  # received + succeeded lines


# --- phases -----------------------------------------------------------------------------------


def phase_idle(procs: dict, env, seconds: float) -> dict:
    """Nothing to publish, no jobs: what keeping the promise costs per minute."""
    import redis

    client = redis.Redis.from_url(env["KEYS_REDIS_URL"])
    client.ping()
    time.sleep(1.5)  # let PostgreSQL's statistics catch up with startup
    cpu0 = {role: cpu_seconds(p) for role, p in procs.items()}
    redis0, (xact0, sessions0), sweeps0 = redis_commands(client), database_counters(env), sweeps_run(procs)
    began = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - began
    cpu1 = {role: cpu_seconds(p) for role, p in procs.items()}
    redis1, sweeps1 = redis_commands(client), sweeps_run(procs)
    time.sleep(1.5)  # PostgreSQL's statistics lag by up to a second (as they did at the start)
    xact1, sessions1 = database_counters(env)
    per_minute = 60.0 / elapsed
    for proc in procs.values():
        if not proc.alive:
            raise RuntimeError(f"{proc.name} exited during the idle window:\n{proc.output()[-3000:]}")
    cpu = {role: round((cpu1[role] - cpu0[role]) * per_minute, 3) for role in procs}
    # The sweep log has two lines per task (received, succeeded); the window is cut by the clock.
    sweeps = (sweeps1 - sweeps0) / 2
    return {
        "seconds": round(elapsed, 1),
        "cpu_seconds_per_minute": cpu,
        "cpu_seconds_per_minute_total": round(sum(cpu.values()), 3),
        "redis_commands_per_minute": round((redis1 - redis0 - 1) * per_minute),
        "database_transactions_per_minute": round((xact1 - xact0 - 1) * per_minute),
        "database_sessions_per_minute": round((sessions1 - sessions0 - 1) * per_minute, 1),
        "sweep_tasks_per_minute": round(sweeps * per_minute, 1),
    }


def stranded_event(unit_id: uuid.UUID):
    """One outbox event committed and never published: what a writer SIGKILLed between COMMIT and
    publish leaves behind (outbox_write's after-COMMIT publish does nothing, as if the process had
    died there). Returns the event's id and the Unix time at which COMMIT returned."""
    from unittest import mock

    from django.db import transaction

    from backend.events.services import Change, outbox_write

    with mock.patch("backend.events.services.outbox_publish", lambda rows: 0):
        with transaction.atomic():
            [event] = outbox_write([Change(unit_id=unit_id, entity="crate", action="updated",
                                           data={"id": str(uuid.uuid4())})])
        committed = time.time()
    return event.id, committed


def phase_recovery(unit_id, trials: int, period: float, rng: random.Random, procs: dict) -> dict:
    from backend.events.models import OutboxEvent

    samples = []
    for _ in range(trials):
        time.sleep(rng.uniform(0, period))  # a random phase of the sweep's cycle
        event_id, committed = stranded_event(unit_id)
        deadline = time.monotonic() + 30
        while True:
            published = OutboxEvent.objects.filter(id=event_id).values_list("published_at", flat=True).get()
            if published is not None:
                break
            if time.monotonic() > deadline:
                logs = "\n".join(p.output()[-2000:] for p in procs.values())
                raise RuntimeError(f"event {event_id} not published after 30 s:\n{logs}")
            time.sleep(0.01)
        samples.append(published.timestamp() - committed)
    samples.sort()
    return {
        "trials": trials,
        "p50_s": round(statistics.median(samples), 2),
        "p95_s": round(samples[max(0, round(len(samples) * 0.95) - 1)], 2),
        "max_s": round(samples[-1], 2),
        "min_s": round(samples[0], 2),
        "samples_s": [round(s, 3) for s in samples],
    }


def relay_round_cost() -> dict:
    """One relay round in this process, as `python -m workers.relay` runs it: the statements it
    sends with nothing to do (the first round also looks for stranded jobs; later ones do so every
    JOB_RESCUE_SECONDS). Django's connection health check (a SELECT 1 on reuse) is sent outside
    the query log and counted separately."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from workers.relay import Relay

    relay = Relay()
    checks = {"n": 0}
    real_is_usable = connection.is_usable

    def counted_is_usable():
        checks["n"] += 1
        return real_is_usable()

    rounds = []
    connection.is_usable = counted_is_usable
    try:
        for _ in range(2):
            checks["n"] = 0
            with CaptureQueriesContext(connection) as captured:
                relay.round()
            rounds.append({"queries": len(captured), "health_checks": checks["n"],
                           "sql": [q["sql"] for q in captured.captured_queries]})
    finally:
        del connection.is_usable
    return {"with_job_rescue": rounds[0], "sweep_only": rounds[1]}


# --- report -----------------------------------------------------------------------------------


def machine() -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "postgresql": postgres,
        "versions": {name: metadata.version(name) for name in ("django", "celery", "kombu", "redis")},
    }


def print_report(report: dict) -> None:
    a, b = report["designs"]["a"], report["designs"]["b"]
    ia, ib = a["idle"], b["idle"]
    print(f"\nrelay bench, {report['date']}, {report['machine']['cores']} cores, PostgreSQL "
          f"{report['machine']['postgresql']}, idle windows of {ia['seconds']} s, "
          f"{a['recovery']['trials']} recovery trials each\n")
    rows = [
        ("", "(a) relay process", f"(b) beat task every {report['former_sweep_seconds']:g} s"),
        ("sweeps", f"every {report['settings']['OUTBOX_SWEEP_SECONDS']:g} s in the relay",
         f"{ib['sweep_tasks_per_minute']:g} tasks/min in the worker"),
        ("idle CPU s/min: relay", f"{ia['cpu_seconds_per_minute']['relay']:.3f}", "-"),
        ("idle CPU s/min: worker", f"{ia['cpu_seconds_per_minute']['worker']:.3f}",
         f"{ib['cpu_seconds_per_minute']['worker']:.3f}"),
        ("idle CPU s/min: beat", f"{ia['cpu_seconds_per_minute']['beat']:.3f}",
         f"{ib['cpu_seconds_per_minute']['beat']:.3f}"),
        ("idle CPU s/min: all", f"{ia['cpu_seconds_per_minute_total']:.3f}", f"{ib['cpu_seconds_per_minute_total']:.3f}"),
        ("idle CPU s/min: added", f"{ia['cpu_seconds_per_minute_added']:.3f}", f"{ib['cpu_seconds_per_minute_added']:.3f}"),
        ("Redis commands/min", f"{ia['redis_commands_per_minute']:,}", f"{ib['redis_commands_per_minute']:,}"),
        ("DB transactions/min", f"{ia['database_transactions_per_minute']:,}", f"{ib['database_transactions_per_minute']:,}"),
        ("DB sessions/min", f"{ia['database_sessions_per_minute']:g}", f"{ib['database_sessions_per_minute']:g}"),
        ("recovery p50 / p95 / max s", "{p50_s} / {p95_s} / {max_s}".format(**a["recovery"]),
         "{p50_s} / {p95_s} / {max_s}".format(**b["recovery"])),
        ("tasks a day in Flower", f"{a['flower_tasks_per_day']:,}", f"{b['flower_tasks_per_day']:,}"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
    cost = report["relay_round"]
    print("\n'added': the relay in (a); in (b), worker + beat minus (a)'s worker + beat (they run in both).")
    print(f"one idle relay round: {cost['sweep_only']['queries']} statements + {cost['sweep_only']['health_checks']} "
          f"connection health check ({cost['with_job_rescue']['queries']} statements in a round that also looks "
          f"for stranded jobs, one every {report['settings']['JOB_RESCUE_SECONDS']:g} s):")
    for sql in cost["with_job_rescue"]["sql"]:
        print(f"  {sql[:150]}{' ...' if len(sql) > 150 else ''}")
    print(f"\nresults: {report['json']}")


def main(argv=None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    started = time.monotonic()
    print("bench relay: preparing the database ...", flush=True)
    env, server = prepare(args)
    schedule_dir = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    try:
        from django.conf import settings
        from django.db import connections

        from backend.accounts.models import Unit

        unit = Unit.objects.create(code="bench-relay", name="Relay bench")
        # A PostgreSQL session reports its transactions to the statistics when it ends, or when it
        # has been idle a while: this process's own session must not report into an idle window.
        connections.close_all()
        rng = random.Random(14)
        designs = {}
        for design, period in (("a", settings.OUTBOX_SWEEP_SECONDS), ("b", args.former_sweep_seconds)):
            label = "relay process" if design == "a" else f"beat task every {args.former_sweep_seconds:g} s"
            print(f"bench relay: ({design}) {label}: starting ...", flush=True)
            procs = start_design(design, env, schedule_dir)
            try:
                time.sleep(args.settle_seconds)
                print(f"bench relay: ({design}) idle for {args.idle_seconds:g} s ...", flush=True)
                idle = phase_idle(procs, env, args.idle_seconds)
                print(f"bench relay: ({design}) {args.trials} crash-recovery trials ...", flush=True)
                recovery = phase_recovery(unit.id, args.trials, period, rng, procs)
                connections.close_all()
            finally:
                stop_design(procs)
            sweeps_per_day = 0 if design == "a" else round(SECONDS_PER_DAY / args.former_sweep_seconds)
            designs[design] = {
                "processes": {role: ["python", *p.popen.args[1:]] for role, p in procs.items()},
                "sweep_period_s": period, "idle": idle, "recovery": recovery,
                "flower_tasks_per_day": sweeps_per_day,
                "flower_tasks_per_day_measured": round(idle["sweep_tasks_per_minute"] * 1440),
            }
        # The worker and beat run in both designs (jobs, the hourly prunes): what each design adds
        # is the relay in (a), and in (b) what its worker and beat spend beyond (a)'s.
        common = sum(designs["a"]["idle"]["cpu_seconds_per_minute"][r] for r in ("worker", "beat"))
        added = {
            "a": designs["a"]["idle"]["cpu_seconds_per_minute"]["relay"],
            "b": round(designs["b"]["idle"]["cpu_seconds_per_minute_total"] - common, 3),
        }
        for design, value in added.items():
            designs[design]["idle"]["cpu_seconds_per_minute_added"] = value
        cost = relay_round_cost()
        report = {
            "date": datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": machine(),
            "settings": {name: getattr(settings, name) for name in
                         ("OUTBOX_SWEEP_SECONDS", "OUTBOX_SWEEP_GRACE_SECONDS", "JOB_RESCUE_SECONDS")},
            "former_sweep_seconds": args.former_sweep_seconds,
            "designs": designs,
            "relay_round": cost,
            "relay_round_statements_per_day": round(
                SECONDS_PER_DAY / settings.OUTBOX_SWEEP_SECONDS
                * (cost["sweep_only"]["queries"] + cost["sweep_only"]["health_checks"])
            ),
            "run_seconds": round(time.monotonic() - started),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
        report["json"] = str(args.json.relative_to(ROOT) if args.json.is_relative_to(ROOT) else args.json)
        print_report(report)
        print(f"(run took {report['run_seconds']} s)")
    finally:
        shutil.rmtree(schedule_dir, ignore_errors=True)
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()

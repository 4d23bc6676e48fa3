"""`python -m bench.tail` (part of `make bench`): the request -> client tail on the stack a newcomer
runs (issue 33).

Starts every process of the Procfile as `make up` does (web, worker, relay, beat, Flower; their
command lines read from the Procfile) on a database and Redis databases of its own, seeds --units
units, opens --clients WebSocket clients from this one process spread over them (each unit's
clients share one token, so the per-user connection cap is lifted, explicitly, for the run), and
makes --changes single crate relocations one at a time, round robin over the units, each by its
unit's store user. Each is timed from the REST call to the last of the unit's clients receiving it.

The processes run with REQUEST_TRACE_WARN_MS low enough that the hub logs the request trace
(backend/common/trace.py) of every change: the bench reads the lines back from the web process's
log and reports each stage's p50/p99, and which stage the slowest changes spent their time in.

It ends with the regression check: the tail ratio (request -> last client p99 / p50) against
--max-ratio (2) and the p99 against --max-p99-ms (80); over either, it says REGRESSION and exits 1
(--no-check: report only). Unless the machine was busy with other work meanwhile (over
--max-other-work of its CPU, read from /proc/stat minus this run's processes): then the latencies
measure the machine's run queue, and the check says INCONCLUSIVE, with the share, and exits 0.

Usage: python -m bench.tail [--database-url URL] [--changes 150] [--clients 999] [--units 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench-results"
PROCESSES = ("web", "worker", "relay", "beat", "flower")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.tail", description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", action="append", default=None,
                   help="default: a fresh SQLite file, var/bench-tail.sqlite3 (the zero-setup default); given more "
                        "than once, one run per database, each in a process of its own (`make bench`: SQLite, "
                        "then PostgreSQL); a PostgreSQL that does not answer is skipped, said so")
    p.add_argument("--changes", type=int, default=150)
    p.add_argument("--clients", type=int, default=999)
    p.add_argument("--units", type=int, default=3)
    p.add_argument("--redis-db-base", type=int, default=int(os.environ.get("TAIL_REDIS_DB_BASE", "11")))
    p.add_argument("--warmup", type=int, default=6,
                   help="relocations made first and not measured (the web process's first broker connection, ...)")
    p.add_argument("--pause", type=float, default=0.02, help="seconds between one change's last receipt and the next")
    p.add_argument("--trace-ms", type=float, default=0.001,
                   help="REQUEST_TRACE_WARN_MS for the processes (tiny: every change's trace is logged)")
    p.add_argument("--max-ratio", type=float, default=2.0, help="regression check: p99 / p50 at most")
    p.add_argument("--max-p99-ms", type=float, default=80.0, help="regression check: p99 at most (ms)")
    p.add_argument("--max-other-work", type=float, default=0.2,
                   help="a check that fails while other processes took more than this share of the machine's CPU "
                        "is INCONCLUSIVE (exit 0), not a REGRESSION")
    p.add_argument("--no-check", action="store_true", help="report only; never exit 1")
    p.add_argument("--without", default="", help="comma-separated Procfile processes not to start (default: none)")
    p.add_argument("--label", default="")
    return p.parse_args(argv)


# --- environment and the stack ---------------------------------------------------------------


def prepare_environment(args) -> dict[str, str]:
    redis = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
    base = args.redis_db_base
    db_url = args.database_url[0] if args.database_url else f"sqlite:///{ROOT / 'var' / 'bench-tail.sqlite3'}"
    env = {
        "DJANGO_SETTINGS_MODULE": "backend.config.settings.base",
        "DATABASE_URL": db_url,
        "CELERY_BROKER_URL": f"{redis}/{base}",
        "CHANNEL_LAYER_URL": f"{redis}/{base + 1}",
        "KEYS_REDIS_URL": f"{redis}/{base + 2}",
        "JWT_ACCESS_MINUTES": "240",
        # All of a unit's sockets are opened with one token (333 of them): the per-user cap
        # (WS_MAX_CONNECTIONS_PER_USER, docs/security.md) is lifted for the bench, explicitly.
        "WS_MAX_CONNECTIONS_PER_USER": "100000",
        "REQUEST_TRACE_WARN_MS": str(args.trace_ms),
        "FLOWER_BASIC_AUTH": os.environ.get("FLOWER_BASIC_AUTH", "admin:flower-pass-2026"),
        "PYTHONUNBUFFERED": "1",
    }
    if os.environ.get("SQLITE_BUSY_TIMEOUT_MS"):  # (how the run before issue 33's fix is reproduced: 20000)
        env["SQLITE_BUSY_TIMEOUT_MS"] = os.environ["SQLITE_BUSY_TIMEOUT_MS"]
    os.environ.update(env)
    return {**os.environ, **env}


def reset_stores(env: dict[str, str]) -> None:
    from bench.realtime import reset_stores as reset

    reset(env)
    for name in ("var/bench-tail-beat-schedule", "var/bench-tail-flower.db"):
        for path in ROOT.glob(name + "*"):
            path.unlink(missing_ok=True)


def procfile_command(name: str, values: dict[str, str], procfile: Path = ROOT / "Procfile") -> list[str]:
    """The Procfile's `name` command as `make up` runs it (after scripts/respawn's `--`), its
    ${VAR:-default}s filled from `values`, with this Python."""
    line = next(line for line in procfile.read_text().splitlines() if line.startswith(f"{name}:"))
    command = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: values.get(m.group(1), m.group(2)), line[len(name) + 1:])
    words = shlex.split(command)
    words = words[words.index("--") + 1:] if words[0] == "scripts/respawn" else words
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    if words[0] == "celery":
        return [sys.executable, "-m", "celery", *words[1:]]
    return words


def start_stack(args, env) -> tuple[dict, int]:
    from bench.processes import LiveProcess, free_port, wait_for_port

    port, flower_port = free_port(), free_port()
    values = {"WEB_PORT": str(port), "BIND": "127.0.0.1", "FLOWER_PORT": str(flower_port)}
    skip = {name.strip() for name in args.without.split(",") if name.strip()}
    procs = {}
    for name in PROCESSES:
        if name in skip:
            continue
        words = procfile_command(name, values)
        # this run's own beat schedule and Flower database (the Procfile's are var/'s)
        words = [w.replace("var/celerybeat-schedule", "var/bench-tail-beat-schedule")
                 .replace("--db=var/flower.db", "--db=var/bench-tail-flower.db") for w in words]
        procs[name] = LiveProcess(f"bench-tail-{name}", words, env)
    wait_for_port(port, timeout=60, proc=procs["web"])
    if "worker" in procs:
        procs["worker"].wait_for_output("ready.", timeout=60)
    if "flower" in procs:
        wait_for_port(flower_port, timeout=60, proc=procs["flower"])
    return procs, port


def seed(args) -> dict:
    import django

    django.setup()
    from django.core.management import call_command

    from backend.accounts.models import Role, Unit, User
    from backend.accounts.tokens import UnitTokenObtainPairSerializer
    from backend.records.models import Crate

    call_command("migrate", verbosity=0)
    call_command("seed_demo", units=args.units, crates=10, requests=0, quiet_logins=True, force=True)
    units = list(Unit.objects.order_by("code"))[: args.units]
    world = {"units": [], "store_tokens": {}, "watch_tokens": {}, "crates": {}}
    for unit in units:
        key = str(unit.id)
        world["units"].append(key)
        store = User.objects.get(unit=unit, role=Role.STORE, username=f"{unit.code}.{Role.STORE}")
        world["store_tokens"][key] = str(UnitTokenObtainPairSerializer.get_token(store).access_token)
        watcher, _ = User.objects.get_or_create(
            username=f"{unit.code}.watcher", defaults={"unit": unit, "role": Role.REQUESTER, "password": "!"}
        )
        world["watch_tokens"][key] = str(UnitTokenObtainPairSerializer.get_token(watcher).access_token)
        crate = Crate.objects.filter(unit=unit, status="in_storage").order_by("id").first()
        world["crates"][key] = str(crate.id)
    from django.db import connections

    connections.close_all()
    return world


# --- the run ---------------------------------------------------------------------------------


def _machine_jiffies() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


def _own_cpu(pids: list[int]) -> float:
    """CPU seconds of these processes, their children (the worker's pool) and this one."""
    import psutil

    total = sum(psutil.Process().cpu_times()[:2])
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for one in (proc, *proc.children(recursive=True)):
                total += sum(one.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


class CpuWindow:
    """The machine's CPU over the measured changes: how busy, and how much of that was not this run
    (other work on the machine: then the latencies measure the machine's queue, not the stack)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def start(self) -> None:
        self.t0, self.machine0, self.own0 = time.monotonic(), _machine_jiffies(), _own_cpu(self.pids)

    def stop(self) -> dict:
        wall = time.monotonic() - self.t0
        busy, _total = _machine_jiffies()
        own = _own_cpu(self.pids) - self.own0
        capacity = wall * (os.cpu_count() or 1)
        machine = (busy - self.machine0[0]) / capacity
        return {"seconds": round(wall, 1), "machine_busy": round(machine, 3), "this_run": round(own / capacity, 3),
                "other_work": round(max(machine - own / capacity, 0.0), 3)}


async def measure(args, world, port, window: CpuWindow | None = None, mark=None) -> dict:
    import logging

    import httpx

    from bench.realtime import Fleet, Watch

    logging.getLogger("httpx").setLevel(logging.WARNING)
    fleet = Fleet()
    units = world["units"]
    latencies, http_202, jobs, sent = [], [], [], {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
        await fleet.open([port], units, world["watch_tokens"], args.clients)
        await asyncio.sleep(2)
        for i in range(-args.warmup, args.changes):
            if i == 0:
                offset = mark() if mark else 0
                if window:
                    window.start()
            unit = units[i % len(units)]
            crate = world["crates"][unit]
            watch = Watch(len(fleet.by_unit[unit]), time.time())
            fleet.watch[crate] = watch
            answer = await http.post(
                f"/api/crates/{crate}/relocate/", json={"location": f"B{i % 7}-{i}"},
                headers={"Authorization": f"Bearer {world['store_tokens'][unit]}"},
            )
            assert answer.status_code == 202, answer.text
            answered = time.time() - watch.api_started
            await asyncio.wait_for(watch.done.wait(), 30)
            del fleet.watch[crate]
            if i >= 0:
                http_202.append(answered)
                jobs.append(answer.json()["job"]["id"])
                latencies.append(max(watch.api_latency))
                sent[jobs[-1]] = (watch.api_started, watch.api_started + latencies[-1])
            await asyncio.sleep(args.pause)
        cpu = window.stop() if window else None
        await fleet.close()
    return {"latencies": latencies, "http_202": http_202, "jobs": jobs, "sent": sent, "clients": args.clients,
            "cpu": cpu, "log_offset": offset}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def stage_table(lines: list[dict], jobs: list[str], sent: dict[str, tuple[float, float]]) -> dict:
    """Per stage: p50, p99, max (ms) over the measured changes' traces, in path order. `sent`: each
    job's (request sent, last client receipt) on this process's clock."""
    from backend.common.trace import STAGES

    traces = [t for t in lines if t["job"] in sent]
    table = {}
    for stage in STAGES[1:]:
        values = [t["stages"][stage] for t in traces if stage in t["stages"]]
        if values:
            table[stage] = {"p50": round(pct(values, 0.5), 1), "p99": round(pct(values, 0.99), 1),
                            "max": round(max(values), 1)}
    # Outside the trace: the request's way from this process into Django, and the hand-over's to the
    # unit's last client (Daphne's writes, the loopback, this process reading 333 sockets).
    for name, values in (("before_received", [(t["received"] - sent[t["job"]][0]) * 1000 for t in traces]),
                         ("after_handed_over", [(sent[t["job"]][1] - t["received"]) * 1000 - t["total_ms"]
                                                for t in traces])):
        if values:
            table[name] = {"p50": round(pct(values, 0.5), 1), "p99": round(pct(values, 0.99), 1),
                           "max": round(max(values), 1)}
    locks = [t["sqlite_lock_ms"] for t in traces if "sqlite_lock_ms" in t]
    result = {"traced": len(traces), "stages": table}
    if locks:
        result["sqlite_lock_ms"] = {"p50": round(pct(locks, 0.5), 1), "p99": round(pct(locks, 0.99), 1),
                                    "max": round(max(locks), 1)}
    return result


def slowest_changes(lines: list[dict], latencies: dict[str, float], count: int = 5) -> list[dict]:
    """The `count` slowest changes (request -> last client) with the stage that took most of it."""
    by_job = {t["job"]: t for t in lines}
    order = {job: i for i, job in enumerate(latencies)}
    worst = sorted(latencies.items(), key=lambda item: -item[1])[:count]
    out = []
    for job, seconds in worst:
        trace = by_job.get(job)
        entry = {"job": job, "change": order[job], "request_to_last_client_ms": round(seconds * 1000, 1)}
        if trace:
            entry["hand_over_ms"] = trace["total_ms"]
            entry["slowest_stage"] = trace["slowest"]
            entry["stages"] = trace["stages"]
            if "sqlite_lock_ms" in trace:
                entry["sqlite_lock_ms"] = trace["sqlite_lock_ms"]
        out.append(entry)
    return out


def _answers(url: str) -> bool:
    """A PostgreSQL URL's server accepts connections (SQLite always "answers")."""
    if not url.startswith("postgres"):
        return True
    import socket
    from urllib.parse import urlparse

    where = urlparse(url)
    try:
        socket.create_connection((where.hostname or "127.0.0.1", where.port or 5432), timeout=2).close()
        return True
    except OSError:
        return False


def main(argv=None) -> int:
    args = parse_args(argv)
    urls = args.database_url or []
    if len(urls) > 1 or (urls and not _answers(urls[0])):
        failed = False
        for url in urls:
            if not _answers(url):
                print(f"bench.tail: skipped {url.split('@')[-1]}: no database server answers there", flush=True)
                continue
            rest = [a for a in (argv if argv is not None else sys.argv[1:])]
            own = []
            skip = False
            for word in rest:  # this run's arguments without the other --database-urls
                if skip:
                    skip = False
                    continue
                if word == "--database-url":
                    skip = True
                    continue
                if word.startswith("--database-url="):
                    continue
                own.append(word)
            failed |= subprocess.call([sys.executable, "-m", "bench.tail", "--database-url", url, *own], cwd=ROOT) != 0
        return 1 if failed else 0
    from bench.realtime import _raise_nofile

    _raise_nofile()
    sys.path.insert(0, str(ROOT))
    env = prepare_environment(args)
    reset_stores(env)
    database = env["DATABASE_URL"].split("://")[0]
    print(f"bench.tail: seeding {args.units} units ({database}) ...", flush=True)
    world = seed(args)
    procs, port = start_stack(args, env)
    try:
        print(f"bench.tail: {args.clients} clients, {args.changes} relocations, processes: {', '.join(procs)} ...",
              flush=True)
        window = CpuWindow([proc.popen.pid for proc in procs.values()])
        run = asyncio.run(measure(args, world, port, window, lambda: procs["web"].log_path.stat().st_size))
        time.sleep(0.5)
    finally:
        for proc in procs.values():
            proc.stop()
    from backend.common.trace import parse_trace_line

    web_log = procs["web"].log_path.read_text(errors="replace")
    lines = [t for t in map(parse_trace_line, web_log.splitlines()) if t]
    from bench.realtime import publish_trace, stall_trace

    measured_log = web_log.encode()[run["log_offset"]:].decode(errors="replace")
    latencies = run["latencies"]
    ms = lambda v: round(v * 1000, 1)  # noqa: E731
    p50, p99 = pct(latencies, 0.5), pct(latencies, 0.99)
    results = {
        "changes": len(latencies),
        "clients": run["clients"],
        "processes": list(procs),
        "request_to_last_client_ms": {"p50": ms(p50), "p99": ms(p99), "max": ms(max(latencies))},
        "api_202_ms": {"p50": ms(pct(run["http_202"], 0.5)), "p99": ms(pct(run["http_202"], 0.99)),
                       "max": ms(max(run["http_202"]))},
        "tail_ratio": round(p99 / p50, 2),
        **stage_table(lines, run["jobs"], run["sent"]),
        "slowest": slowest_changes(lines, dict(zip(run["jobs"], latencies, strict=True))),
    }
    # the hub's stall trace and the worker's late publishes over the measured changes only
    results["hub_stalls"] = stall_trace(measured_log)
    if "worker" in procs:
        results["late_publishes"] = publish_trace(procs["worker"].log_path.read_text(errors="replace"))
    results["cpu"] = run["cpu"]
    ok = results["tail_ratio"] <= args.max_ratio and p99 * 1000 <= args.max_p99_ms
    # On a machine busy with other work the latencies measure its run queue, not the stack: then
    # the check says so rather than pass or fail.
    busy_elsewhere = (run["cpu"] or {}).get("other_work", 0.0) > args.max_other_work
    verdict = "ok" if ok else ("INCONCLUSIVE" if busy_elsewhere else "REGRESSION")
    results["check"] = {"max_ratio": args.max_ratio, "max_p99_ms": args.max_p99_ms, "ok": ok, "verdict": verdict,
                        "max_other_work": args.max_other_work}
    report = {"when": datetime.now().isoformat(timespec="seconds"), "machine": platform.node(),
              "load_average": os.getloadavg(), "sqlite_busy_timeout_ms": env.get("SQLITE_BUSY_TIMEOUT_MS", "2"),
              "cores": os.cpu_count(), "database": database, "args": vars(args), "results": results}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"tail-{database}-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f"\nresults: {out.relative_to(ROOT)}")
    return 0 if ok or busy_elsewhere or args.no_check else 1


def print_table(report: dict) -> None:
    r = report["results"]
    lat = r["request_to_last_client_ms"]
    print(f"\nrequest -> client on {report['database']} ({r['changes']} relocations, {r['clients']} clients, "
          f"processes: {', '.join(r['processes'])})")
    print(f"  request -> last client  p50 {lat['p50']} ms  p99 {lat['p99']} ms  max {lat['max']} ms")
    print(f"  the 202 itself          p50 {r['api_202_ms']['p50']} ms  p99 {r['api_202_ms']['p99']} ms")
    print(f"  stages ({r['traced']} traced)        p50      p99      max (ms)")
    names = {"before_received": "(request sent -> received, outside the trace)",
             "after_handed_over": "(handed over -> last client, outside the trace)"}
    for stage, v in r["stages"].items():
        print(f"    {names.get(stage, '-> ' + stage).ljust(23)} {v['p50']:>7} {v['p99']:>8} {v['max']:>8}")
    if "sqlite_lock_ms" in r:
        v = r["sqlite_lock_ms"]
        print(f"    (waiting for SQLite's write lock, web + worker: {v['p50']:>5} {v['p99']:>8} {v['max']:>8})")
    for worst in r["slowest"][:3]:
        print(f"  slow: {worst['request_to_last_client_ms']} ms, slowest stage {worst.get('slowest_stage', '?')}")
    stalls = r["hub_stalls"]
    print(f"  hub: {stalls['stalls']} loop stalls over REALTIME_STALL_WARN_MS (longest {stalls['longest_stall_ms']} ms)"
          + "".join(f"; {name} {v['count']}x, longest {v['longest_ms']} ms" for name, v in stalls["named"].items()))
    if "late_publishes" in r:
        print(f"  worker: {r['late_publishes']['late_publishes']} late publishes")
    if r.get("cpu"):
        c = r["cpu"]
        print(f"  machine CPU over the {c['seconds']} s: {c['machine_busy'] * 100:.0f} % busy, this run "
              f"{c['this_run'] * 100:.0f} %, other work {c['other_work'] * 100:.0f} %")
    check = r["check"]
    print(f"  tail ratio (p99 / p50): {r['tail_ratio']} (at most {check['max_ratio']}); p99 {lat['p99']} ms "
          f"(at most {check['max_p99_ms']:g}): {check['verdict']}"
          + (f" (other work took {r['cpu']['other_work'] * 100:.0f} % of the machine's CPU, over "
             f"{check['max_other_work'] * 100:.0f} %: rerun on a quiet machine)" if check["verdict"] == "INCONCLUSIVE" else ""))


if __name__ == "__main__":
    sys.exit(main())

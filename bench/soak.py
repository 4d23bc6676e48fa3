"""Clients that come and go: does a Daphne give back what a connection took once it has closed?

    python -m bench.soak [--cycles 100000] [--round 1000] [--gc-threshold 700,10,10] [--tracemalloc 10] [--strict]

Starts one Daphne exactly as the Procfile's `web` line does (its flags, parsed from the Procfile) on
the PostgreSQL database records_bench_soak (dropped and created) and a private redis-server on a free
port (or --redis-url: a server of the benchmark's own, databases 0-2 flushed), with the per-user
connection cap lifted (WS_MAX_CONNECTIONS_PER_USER, on purpose: the clients are --users users) and
the opt-in memory census armed (REALTIME_CENSUS, realtime/census.py). Then rounds of --round clients
each connect, read their greeting (`connection_established`) and close, --cycles in all; after each
round (--settle seconds, then until Daphne has reaped the round's connections) the census reports
the server's RSS, its objects by type, its per-connection tables and, since the previous census, its
garbage collections and how late its event loop ran (a probe every 20 ms).

Reported, per 1,000 cycles after the first round: RSS growth (KB per cycle, least squares over
the rounds), the object types that grew most, and the loop's p99 lateness and longest collection
per round; RSS over the last half (range and slope: flat within noise or not). Target (issue 34):
at most 0.5 KB per cycle after the first round, RSS flat over the last half; both are judged
(`target_met`, `last_half_flat`) and --strict exits 1 unless both hold. With --tracemalloc N the
Daphne traces its allocations (N frames) and the first round's snapshot is compared with the last
round's: the allocation sites that grew most (file:line, KB, blocks).
Results: bench-results/soak-<time>.json and a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

from bench import processes, wsclient
from bench.sustained import bench_environment

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench-results"
DATABASE_NAME = "records_bench_soak"
DEFAULT_DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DATABASE_NAME}"
TARGET_KB_PER_CYCLE = 0.5
# "Flat within noise" over the last half: besides growing no faster than the target, its RSS stays
# within max(FLAT_RANGE_BYTES, FLAT_RANGE_FRACTION of the RSS) from lowest to highest. 2 MB is two of
# CPython's 1 MiB object arenas (one arena kept alive by a single object is what a round's transient
# buffers can leave behind) and twice the widest last-half range the fixed Daphne showed (0.4 MB with
# nothing held open, 1.0 MB with 3,000 connections open: docs/performance.md); the leak it guards
# against (~6 KB per cycle) crosses it within 350 cycles. 1 % for a process holding many connections,
# whose allocator noise grows with its heap.
FLAT_RANGE_BYTES = 2 * 2**20
FLAT_RANGE_FRACTION = 0.01


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cycles", type=int, default=100_000, help="connect/close cycles in all")
    p.add_argument("--round", type=int, default=1000, help="clients per round: all connect, then all close")
    p.add_argument("--concurrency", type=int, default=100, help="handshakes in flight at once")
    p.add_argument("--units", type=int, default=10)
    p.add_argument("--users", type=int, default=100, help="users the clients connect as (spread over the units)")
    p.add_argument("--presence", action="store_true", help="clients connect with presence=1")
    p.add_argument("--idle", type=int, default=0,
                   help="connections held open the whole run (a population the collector walks; "
                        "what the collector's tuning is for)")
    p.add_argument("--settle", type=float, default=3.0, help="seconds after a round before the census")
    p.add_argument("--gc-threshold", default=None, help="GC_THRESHOLD for the Daphne (default: the project's)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="more settings for the Daphne")
    p.add_argument("--tracemalloc", type=int, default=0,
                   help="PYTHONTRACEMALLOC frames for the Daphne (0: off); a snapshot per census, and the "
                        "allocation sites grown from the first round to the last")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 unless the target is met and the last half is flat within noise")
    p.add_argument("--database-url", default=os.environ.get("BENCH_SOAK_DATABASE_URL", DEFAULT_DATABASE_URL))
    p.add_argument("--redis-url", default=os.environ.get("BENCH_SOAK_REDIS_URL", ""),
                   help="a Redis server of the benchmark's own (databases 0, 1, 2 are flushed); "
                        "default: start a private redis-server")
    p.add_argument("--collect", action="store_true",
                   help="each census after a full collection (SIGUSR1): what is kept apart from what is garbage")
    p.add_argument("--label", default="")
    return p.parse_args(argv)


# --- the Daphne, as the Procfile runs it ------------------------------------------------------



def procfile_web_command(port: int, procfile: Path = ROOT / "Procfile") -> list[str]:
    """The Procfile's `web` command (after scripts/respawn's `--`), on `port`, with this Python."""
    args = processes.procfile_web_command(procfile, WEB_PORT=str(port), BIND="127.0.0.1")
    assert args[0] == "python", args
    return [sys.executable, *args[1:]]


def prepare(args) -> dict[str, str]:
    return bench_environment(args, DATABASE_NAME, {"LOG_LEVEL": "WARNING", "JWT_ACCESS_MINUTES": "1440"})


def seed(args) -> list[str]:
    """--units units, --users users spread over them: one access token per user."""
    import django

    django.setup()
    from django.core.management import call_command

    from backend.accounts.models import Role, Unit, User
    from backend.accounts.tokens import access_token_for

    call_command("migrate", verbosity=0)
    call_command("seed_demo", units=args.units, crates=1, requests=0, pending=0, quiet_logins=True, force=True)
    units = list(Unit.objects.order_by("code"))[: args.units]
    users = User.objects.bulk_create(
        User(username=f"{units[i % len(units)].code}.soak{i}", unit=units[i % len(units)], role=Role.REQUESTER,
             password="!")
        for i in range(args.users)
    )
    from django.db import connections

    connections.close_all()
    return [str(access_token_for(user)) for user in users]


def daphne_environment(env: dict[str, str], census: Path, args) -> dict[str, str]:
    extra = dict(item.split("=", 1) for item in args.env)
    daphne_env = {
        **env,
        # The clients are --users users with up to --round sockets between them: the per-user cap
        # (docs/security.md) is lifted on purpose, it is not what this measures.
        "WS_MAX_CONNECTIONS_PER_USER": "1000000",
        "REALTIME_CENSUS": str(census),
        **extra,
    }
    if args.gc_threshold:
        daphne_env["GC_THRESHOLD"] = args.gc_threshold
    if args.tracemalloc:
        daphne_env["PYTHONTRACEMALLOC"] = str(args.tracemalloc)
    return daphne_env


# --- the clients ------------------------------------------------------------------------------


async def churn_round(port: int, tokens: list[str], count: int, concurrency: int = 100, presence: bool = False,
                      first: int = 0, source: str | None = None, attempts: int = 5) -> dict:
    """`count` clients connect (as tokens[i % len(tokens)]), read their greeting, then all close.
    Returns {connected, refused, seconds}. Used by the benchmark and by the lean test in `make test`."""
    gate = asyncio.Semaphore(concurrency)
    opened: list = []
    refused = 0
    started = time.monotonic()

    async def one(i: int) -> None:
        nonlocal refused
        url = f"ws://127.0.0.1:{port}/ws/updates/?token={tokens[i % len(tokens)]}" + ("&presence=1" if presence else "")
        async with gate:
            for attempt in range(attempts):
                try:
                    client = await wsclient.connect(url, lambda raw, now: None, origin="http://127.0.0.1",
                                                    local_addr=(source, 0) if source else None, timeout=30)
                except (TimeoutError, OSError, wsclient.WebSocketRefused):
                    if attempt == attempts - 1:
                        refused += 1
                        return
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                if client.hello.get("type") != "connection_established":
                    refused += 1
                opened.append(client)
                return

    await asyncio.gather(*(one(first + i) for i in range(count)))
    await asyncio.gather(*(client.close() for client in opened), return_exceptions=True)
    return {"connected": len(opened), "refused": refused, "seconds": time.monotonic() - started}


# --- the census ---------------------------------------------------------------------------------


class CensusReader:
    """Asks the Daphne for a census (SIGUSR2) and reads the line it appends."""

    def __init__(self, pid: int, path: Path) -> None:
        self.pid, self.path = pid, path
        self.lines = 0

    async def take(self, collect: bool = False, timeout: float = 60.0) -> dict:
        os.kill(self.pid, signal.SIGUSR1 if collect else signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.path.read_text() if self.path.exists() else ""
            if text.endswith("\n"):  # (a line being written is not read yet)
                lines = text.splitlines()
                if len(lines) > self.lines:
                    self.lines = len(lines)
                    return json.loads(lines[-1])
            await asyncio.sleep(0.05)
        raise TimeoutError("the Daphne wrote no census (is REALTIME_CENSUS set?)")


def grown_types(before: dict, after: dict, limit: int = 8) -> list[tuple[str, int]]:
    """The object types whose count grew most from one census to another."""
    old = before["by_type"]
    growth = [(name, count - old.get(name, 0)) for name, count in after["by_type"].items()]
    return sorted((g for g in growth if g[1] > 0), key=lambda g: -g[1])[:limit]


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var if var else 0.0


def verdict(rounds: list[dict]) -> dict:
    """Whether the run meets the target: `target_met`, at most TARGET_KB_PER_CYCLE kept per cycle
    after the first round (least squares), and `last_half_flat`, the last half's RSS flat within
    noise: its slope within the target too, and its range (highest - lowest) within
    max(FLAT_RANGE_BYTES, FLAT_RANGE_FRACTION of its highest). None for both with fewer than three
    rounds (no slope after the first round, no last half to speak of). A Daphne tracing its
    allocations (--tracemalloc) is judged on the memory traced instead (`judged_on`): its RSS is
    mostly the tracing's own tables and each census's copy of every trace, not the server's."""
    key = "traced_bytes" if rounds and all(r.get("traced_bytes") is not None for r in rounds) else "rss_bytes"
    if len(rounds) < 3:
        return {"target_met": None, "last_half_flat": None, "last_half_range_allowed_mb": None, "judged_on": key}
    after_first = slope([(r["cycles"], r[key]) for r in rounds[1:]]) / 1024
    half = [(r["cycles"], r[key]) for r in rounds[len(rounds) // 2 :]]
    low, high = min(y for _, y in half), max(y for _, y in half)
    allowed = max(FLAT_RANGE_BYTES, FLAT_RANGE_FRACTION * high)
    return {
        "target_met": after_first <= TARGET_KB_PER_CYCLE,
        "last_half_flat": slope(half) / 1024 <= TARGET_KB_PER_CYCLE and high - low <= allowed,
        "last_half_range_allowed_mb": round(allowed / 2**20, 1),
        "judged_on": key,
    }


def traced(rounds: list[dict]) -> dict | None:
    """With --tracemalloc: the memory traced (Python's allocations) after the first round and at the
    end, its growth per cycle after the first round, and the tracing's own memory at the end."""
    if not rounds or any(r.get("traced_bytes") is None for r in rounds):
        return None
    return {
        "mb_after_first_round": round(rounds[0]["traced_bytes"] / 2**20, 1),
        "mb_at_end": round(rounds[-1]["traced_bytes"] / 2**20, 1),
        "kb_per_cycle_after_first_round": round(slope([(r["cycles"], r["traced_bytes"]) for r in rounds[1:]]) / 1024, 3),
        "tracing_own_mb_at_end": round(rounds[-1]["tracemalloc_bytes"] / 2**20, 1),
    }


def summarize(rounds: list[dict], first: dict, last: dict, round_size: int) -> dict:
    """KB per cycle after the first round, the last half's RSS, the types that grew, stalls, and the
    verdict (`target_met`, `last_half_flat`)."""
    after_first = [(r["cycles"], r["rss_bytes"]) for r in rounds[1:]]
    half = [(r["cycles"], r["rss_bytes"]) for r in rounds[len(rounds) // 2 :]]
    kb = lambda b: round(b / 1024, 3)  # noqa: E731
    lateness = [r["loop_lateness_ms"] for r in rounds if r["loop_lateness_ms"].get("count")]
    longest_gc = {gen: max((r["gc_pauses_ms"][gen].get("max", 0) for r in rounds), default=0) for gen in "012"}
    cycles_after_first = rounds[-1]["cycles"] - rounds[0]["cycles"] if len(rounds) > 1 else 0
    return {
        "rss_mb_after_first_round": round(rounds[0]["rss_bytes"] / 2**20, 1),
        "rss_mb_at_end": round(rounds[-1]["rss_bytes"] / 2**20, 1),
        "kb_per_cycle_after_first_round": kb(slope(after_first)),
        "kb_per_cycle_end_to_end": kb((rounds[-1]["rss_bytes"] - rounds[0]["rss_bytes"]) / cycles_after_first)
        if cycles_after_first else None,
        "last_half": {
            "kb_per_cycle": kb(slope(half)),
            "rss_mb_min": round(min(y for _, y in half) / 2**20, 1),
            "rss_mb_max": round(max(y for _, y in half) / 2**20, 1),
        },
        "objects_per_1000_cycles_after_first_round": round(
            slope([(r["cycles"], r["objects"]) for r in rounds[1:]]) * 1000, 1),
        "grown_types_first_to_last": grown_types(first, last, limit=15),
        "loop_lateness_ms": {
            "p99_median_of_rounds": sorted(x["p99"] for x in lateness)[len(lateness) // 2] if lateness else None,
            "p99_worst_round": max((x["p99"] for x in lateness), default=None),
            "max": max((x["max"] for x in lateness), default=None),
        },
        "longest_gc_ms_by_generation": longest_gc,
        "target_kb_per_cycle": TARGET_KB_PER_CYCLE,
        "traced": traced(rounds),
        **verdict(rounds),
        "round": round_size,
    }


# Frames that are the tracing's own or the import system's, not the Daphne's allocations.
TRACEMALLOC_IGNORED = ("*/tracemalloc.py", "<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>",
                       "*/importlib/*", "<unknown>")


def tracemalloc_growth(first: str | Path, last: str | Path, limit: int = 10) -> list[dict]:
    """The allocation sites (a line of code: the most recent frame of the allocation) whose live
    memory grew most from one tracemalloc snapshot (realtime/census.py dumps one per census) to a
    later one: [{site, kb, count, kb_at_end}], `kb` and `count` the growth in KB and in blocks."""
    import tracemalloc

    ignored = [tracemalloc.Filter(False, pattern) for pattern in TRACEMALLOC_IGNORED]
    old = tracemalloc.Snapshot.load(str(first)).filter_traces(ignored)
    new = tracemalloc.Snapshot.load(str(last)).filter_traces(ignored)
    grown = sorted((s for s in new.compare_to(old, "lineno") if s.size_diff > 0), key=lambda s: -s.size_diff)
    return [{"site": f"{_short_path(s.traceback[0].filename)}:{s.traceback[0].lineno}",
             "kb": round(s.size_diff / 1024, 1), "count": s.count_diff, "kb_at_end": round(s.size / 1024, 1)}
            for s in grown[:limit]]


def _short_path(filename: str) -> str:
    """A file under the venv's site-packages by its package path, the project's by its own."""
    for marker in ("site-packages/", "lib/python3."):
        if marker in filename:
            rest = filename.split(marker, 1)[1]
            return rest if marker == "site-packages/" else "stdlib/" + rest.split("/", 1)[-1]
    root = f"{ROOT}/"
    return filename[len(root):] if filename.startswith(root) else filename


async def open_idle(port: int, tokens: list[str], count: int, concurrency: int) -> list:
    """`count` connections that stay open (from 127.0.0.10, apart from the rounds' addresses)."""
    gate = asyncio.Semaphore(concurrency)
    opened: list = []

    async def one(i: int) -> None:
        async with gate:
            opened.append(await wsclient.connect(f"ws://127.0.0.1:{port}/ws/updates/?token={tokens[i % len(tokens)]}",
                                                 lambda raw, now: None, origin="http://127.0.0.1",
                                                 local_addr=("127.0.0.10", 0), timeout=60))

    await asyncio.gather(*(one(i) for i in range(count)))
    return opened


# How long after --settle a census waits for the round's connections to be reaped.
SETTLE_MAX_SECONDS = 60.0


def settled(census: dict, idle: int) -> bool:
    """Daphne's connection table and the hub's hold no more than the idle population."""
    tables = census["tables"]
    return (tables["daphne_connections"] or 0) <= idle and tables["hub_connections"] <= idle


async def settled_census(reader: CensusReader, args) -> dict:
    """The round's census once Daphne has reaped the round's connections (its application checker,
    every second, sliced), so that what they hold is not counted as kept: a census every second
    until then (a Daphne tracing its allocations is several times slower), SETTLE_MAX_SECONDS at most.
    The loop lateness and pause percentiles are the first census's (the round's storm and --settle);
    the collections' count and longest pause cover all of them."""
    census = await reader.take(collect=args.collect)
    deadline = time.monotonic() + SETTLE_MAX_SECONDS
    while not settled(census, args.idle) and time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        later = await reader.take(collect=args.collect)
        for gen, pauses in later["gc_pauses_ms"].items():
            kept = census["gc_pauses_ms"][gen]
            if pauses.get("count"):
                kept.update(count=kept.get("count", 0) + pauses["count"], max=max(kept.get("max", 0), pauses["max"]))
        later["gc_pauses_ms"], later["loop_lateness_ms"] = census["gc_pauses_ms"], census["loop_lateness_ms"]
        later["settle_censuses"] = census.get("settle_censuses", 1) + 1
        census = later
    return census


async def run(args, port: int, tokens: list[str], reader: CensusReader, log) -> dict:
    idle = await open_idle(port, tokens, args.idle, args.concurrency) if args.idle else []
    if idle:
        await asyncio.sleep(args.settle)
        await reader.take()  # (what the idle population's connect burst cost is not the rounds')
    rounds: list[dict] = []
    first = previous = None
    cycles = 0
    sources = [f"127.0.0.{n}" for n in range(2, 10)]  # TIME_WAIT spread over several source addresses
    number = 0
    while cycles < args.cycles:
        count = min(args.round, args.cycles - cycles)
        done = await churn_round(port, tokens, count, args.concurrency, args.presence, first=cycles,
                                 source=sources[number % len(sources)])
        cycles += done["connected"]
        await asyncio.sleep(args.settle)
        census = await settled_census(reader, args)
        if first is None:
            first = census
        row = {
            "round": number, "cycles": cycles, "connected": done["connected"], "refused": done["refused"],
            "round_seconds": round(done["seconds"], 2), "rss_bytes": census["rss_bytes"],
            "objects": census["objects"], "tables": census["tables"], "gc_count": census["gc_count"],
            "gc_pauses_ms": census["gc_pauses_ms"], "loop_lateness_ms": census["loop_lateness_ms"],
            "settle_censuses": census.get("settle_censuses", 1),
            "traced_bytes": census.get("traced_bytes"), "tracemalloc_bytes": census.get("tracemalloc_bytes"),
            "grown": grown_types(previous, census, limit=5) if previous else [],
        }
        rounds.append(row)
        previous = census
        if number % max(1, 1000 // args.round) == 0 or cycles >= args.cycles:
            log(f"{cycles:>7} cycles  rss {census['rss_bytes'] / 2**20:7.1f} MB  objects {census['objects']:>8}  "
                f"tables {census['tables']}  loop p99 {census['loop_lateness_ms'].get('p99')} ms  "
                f"grew {row['grown'][:3]}")
        number += 1
    collected = await reader.take(collect=True)
    await asyncio.gather(*(client.close() for client in idle), return_exceptions=True)
    return {"rounds": rounds, "summary": summarize(rounds, first, census, args.round),
            "tracemalloc_snapshots": [first.get("tracemalloc"), census.get("tracemalloc")],
            "after_full_collection": {"rss_mb": round(collected["rss_bytes"] / 2**20, 1),
                                      "objects": collected["objects"], "collected": collected["collected"],
                                      "grown_types_first_to_here": grown_types(first, collected, limit=15)}}


def print_table(results: dict) -> None:
    s = results["summary"]
    rows = [
        ("cycles (connect, greeting, close)", f"{results['rounds'][-1]['cycles']} in rounds of {s['round']}, "
                                              f"{results['args']['idle']} connections idle throughout"),
        ("RSS after the first round / at the end", f"{s['rss_mb_after_first_round']} / {s['rss_mb_at_end']} MB"),
        ("growth after the first round", f"{s['kb_per_cycle_after_first_round']} KB per cycle "
                                         f"(target <= {s['target_kb_per_cycle']})"),
        ("last half", f"{s['last_half']['kb_per_cycle']} KB per cycle, RSS {s['last_half']['rss_mb_min']}-"
                      f"{s['last_half']['rss_mb_max']} MB"),
        *([("memory traced (tracemalloc): after the first round / at the end",
            f"{t['mb_after_first_round']} / {t['mb_at_end']} MB, {t['kb_per_cycle_after_first_round']} KB per cycle "
            f"after the first round (the tracing's own: {t['tracing_own_mb_at_end']} MB, in the RSS)")]
          if (t := s.get("traced")) else []),
        ("target met (<= 0.5 KB per cycle after the first round)", _yes_no(s["target_met"])
         + (" (judged on the memory traced)" if s.get("judged_on") == "traced_bytes" else "")),
        ("last half flat within noise", f"{_yes_no(s['last_half_flat'])} (slope <= {s['target_kb_per_cycle']} KB per "
                                        f"cycle, range <= {s['last_half_range_allowed_mb']} MB)"),
        ("tracked objects per 1,000 cycles", str(s["objects_per_1000_cycles_after_first_round"])),
        ("types grown, first round to last", ", ".join(f"{n} +{c}" for n, c in s["grown_types_first_to_last"][:6])),
        ("loop lateness p99 (median round / worst round / max)",
         f"{s['loop_lateness_ms']['p99_median_of_rounds']} / {s['loop_lateness_ms']['p99_worst_round']} / "
         f"{s['loop_lateness_ms']['max']} ms"),
        ("longest collection by generation", ", ".join(f"gen {g}: {ms} ms" for g, ms in
                                                        s["longest_gc_ms_by_generation"].items())),
        ("loop stalls logged (over REALTIME_STALL_WARN_MS)",
         f"{results['stall_trace']['stalls']} (longest {results['stall_trace']['longest_stall_ms']} ms); "
         + ", ".join(f"{name}: {v['count']}x, longest {v['longest_ms']} ms"
                     for name, v in results["stall_trace"]["named"].items() if name.startswith("collection"))),
        ("after a full collection at the end", f"{results['after_full_collection']['rss_mb']} MB, "
                                               f"{results['after_full_collection']['collected']} collected"),
    ]
    grown = results.get("tracemalloc_growth") or []
    rows += [("allocation sites grown, first round to last" if i == 0 else "",
              f"+{g['kb']:,.1f} KB in {g['count']:+,} blocks  {g['site']}") for i, g in enumerate(grown)]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def _yes_no(value: bool | None) -> str:
    return {True: "yes", False: "NO", None: "not judged (fewer than three rounds)"}[value]


def passed(summary: dict) -> bool:
    """--strict: the target met and the last half flat (not judged is not passed)."""
    return summary["target_met"] is True and summary["last_half_flat"] is True


def main(argv=None) -> None:
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with processes.own_redis(args.redis_url) as args.redis_url:  # (a private one unless given)
        results, out, census_path = soak(args)
    print_table(results)
    print(f"\n  results: {out.relative_to(ROOT)}  census lines: {census_path.relative_to(ROOT)}")
    if args.strict and not passed(results["summary"]):
        sys.exit("bench soak: the target is not met or the last half is not flat (--strict)")


def soak(args) -> tuple[dict, Path, Path]:
    from bench.processes import LiveProcess, free_port, wait_for_port
    from bench.realtime import stall_trace

    env = prepare(args)
    tokens = seed(args)
    port = free_port()
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    census_path = RESULTS / f"soak-{stamp}.census.jsonl"
    daphne = LiveProcess("bench-soak-daphne", procfile_web_command(port), daphne_environment(env, census_path, args))
    try:
        wait_for_port(port, proc=daphne, timeout=600 if args.tracemalloc else 60)
        daphne.wait_for_output("memory census armed", timeout=60)
        reader = CensusReader(daphne.popen.pid, census_path)
        results = asyncio.run(run(args, port, tokens, reader, lambda line: print(line, flush=True)))
    finally:
        daphne.stop()
    results["stall_trace"] = stall_trace(daphne.log_path.read_text(errors="replace"))
    first, last = results["tracemalloc_snapshots"]
    if first and last:
        results["tracemalloc_growth"] = tracemalloc_growth(first, last)
    results["args"] = vars(args)
    results["daphne_command"] = procfile_web_command(port)[1:]
    out = RESULTS / f"soak-{stamp}.json"
    out.write_text(json.dumps(results, indent=1))
    return results, out, census_path


if __name__ == "__main__":
    main()

"""An opt-in memory census of a Daphne process: what it holds, counted by type, on a signal.

`REALTIME_CENSUS=<path>` (off unless set) makes `python -m realtime.daphne`:
- append one JSON line to <path> on SIGUSR2: RSS, the objects the garbage collector tracks counted
  by type, the sizes of the per-connection tables (Daphne's connections, the hub's units and users,
  asyncio tasks), the collections since the last census (count and longest pause per generation)
  and the event loop's lateness since then (a probe sleeps 20 ms at a time: p50, p99, max);
- SIGUSR1 does the same after a full collection (`gc.collect()`): what is garbage not yet collected
  and what is really kept apart;
- with tracemalloc tracing (`PYTHONTRACEMALLOC=25`), dump a snapshot next to the line
  (`<path>.<n>.tracemalloc`) for `tracemalloc.Snapshot.load(...).compare_to(...)`, and record the
  memory traced (the process's Python allocations) and the tracing's own: under tracing the RSS is
  mostly the tracing's (its tables, each snapshot's copy of every trace), not the server's.

The soak benchmark (`python -m bench.soak`) reads these between rounds of clients coming and
going; docs/performance.md ("Clients that come and go") names what it found. A census walks every
object (~0.1 s at a few hundred thousand): it is a diagnostic, never on in production.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import time
import tracemalloc
from collections import Counter

logger = logging.getLogger(__name__)

PROBE_SECONDS = 0.02


class Census:
    def __init__(self, path: str) -> None:
        self.path = path
        self.taken = 0
        self.lateness: list[float] = []
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._gc_started: float | None = None
        self.servers: list = []  # Daphne's Server (frozen at start-up: gc.get_objects() never shows it)

    # --- what runs between censuses ---------------------------------------------------------

    def on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started is not None:
            self.pauses[info["generation"]].append(time.perf_counter() - self._gc_started)
            self._gc_started = None

    async def probe(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(PROBE_SECONDS)
            self.lateness.append(time.monotonic() - before - PROBE_SECONDS)

    # --- a census -----------------------------------------------------------------------------

    @staticmethod
    def _collect() -> tuple[int, dict[str, int]]:
        """A full collection that reports what it found unreachable, by type (the reference cycles
        that only a collection frees), then frees it."""
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            collected = gc.collect()
        finally:
            gc.set_debug(0)
        garbage = Counter(_type_name(type(obj)) for obj in gc.garbage)
        gc.garbage.clear()
        gc.collect()
        return collected, dict(garbage.most_common(40))

    def take(self, collect: bool) -> dict:
        started = time.perf_counter()
        collected, garbage = (self._collect() if collect else (None, None))
        lateness, self.lateness = sorted(self.lateness), []
        pauses = {gen: sorted(values) for gen, values in self.pauses.items()}
        self.pauses = {0: [], 1: [], 2: []}
        by_type: Counter = Counter()
        for obj in gc.get_objects():  # (not what gc.freeze() set aside at start-up: it never grows)
            by_type[_type_name(type(obj))] += 1
        server = self.servers[0] if self.servers else None
        from .hub import hub

        record = {
            "n": self.taken,
            "at": time.time(),
            "rss_bytes": _rss(),
            "collected": collected,
            "garbage_by_type": garbage,
            "gc_count": gc.get_count(),
            "gc_frozen": gc.get_freeze_count(),
            "gc_thresholds": gc.get_threshold(),
            "objects": sum(by_type.values()),
            "by_type": dict(by_type),
            "tables": {
                "daphne_connections": len(server.connections) if server is not None else None,
                "hub_units": len(hub.units),
                "hub_users": len(hub.users),
                "hub_connections": hub._connections(),
                "asyncio_tasks": len(asyncio.all_tasks()) if _loop_running() else None,
            },
            "gc_pauses_ms": {str(gen): _summary(values) for gen, values in pauses.items()},
            "loop_lateness_ms": _summary(lateness),
        }
        if tracemalloc.is_tracing():
            record["traced_bytes"] = tracemalloc.get_traced_memory()[0]  # (before the snapshot's copy)
            record["tracemalloc_bytes"] = tracemalloc.get_tracemalloc_memory()
            snapshot = f"{self.path}.{self.taken}.tracemalloc"
            tracemalloc.take_snapshot().dump(snapshot)
            record["tracemalloc"] = snapshot
        record["census_ms"] = round((time.perf_counter() - started) * 1000, 1)
        self.taken += 1
        with open(self.path, "a") as out:
            out.write(json.dumps(record) + "\n")
        return record


def _type_name(kind: type) -> str:
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _summary(values: list[float]) -> dict:
    """Count, p50, p99 and max (ms) of sorted durations in seconds."""
    if not values:
        return {"count": 0}

    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))] * 1000, 2)

    return {"count": len(values), "p50": at(0.5), "p99": at(0.99), "max": round(values[-1] * 1000, 2)}


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def install(reactor) -> Census | None:
    """Arm the census when REALTIME_CENSUS names a file (from realtime.daphne's main)."""
    path = os.environ.get("REALTIME_CENSUS", "").strip()
    if not path:
        return None
    census = Census(path)
    gc.callbacks.append(census.on_gc)
    import daphne.server

    server_init = daphne.server.Server.__init__

    def remember(server, *args, **kwargs):
        server_init(server, *args, **kwargs)
        census.servers.append(server)

    daphne.server.Server.__init__ = remember

    def on_signal(signum, _frame) -> None:
        # Taken on the reactor's turn, not in the middle of whatever the signal interrupted.
        reactor.callFromThread(census.take, signum == signal.SIGUSR1)

    signal.signal(signal.SIGUSR2, on_signal)
    signal.signal(signal.SIGUSR1, on_signal)
    reactor.callWhenRunning(lambda: asyncio.ensure_future(census.probe()))
    logger.warning("memory census armed: SIGUSR2 (as is) or SIGUSR1 (after a full collection) appends to %s", path)
    return census

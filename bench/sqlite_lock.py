"""`python -m bench.sqlite_lock`: what waiting for SQLite's one write lock costs a writer (issue 33).

Three processes on one WAL file, as a request among a worker and a relay: two writers commit a 2 KB
insert every 0-10 ms, holding the lock 3 ms each time; the third times --commits commits (BEGIN
IMMEDIATE, an insert, COMMIT), 20 ms apart. Two modes, run one after the other:

- `sqlite`: busy_timeout 20000, SQLite's own busy handler waits (the settings before issue 33: its
  sleeps grow 1, 2, 5, ... 50, 100 ms);
- `backend`: busy_timeout 2 ms and the project's cursor (backend/common/db/sqlite3), which tries
  again in steps of at most 2 ms.

Prints p50 / p90 / p99 / max of the timed commits for each.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sqlite3
import tempfile
import time
from pathlib import Path


def _connect(path: str, mode: str):
    from backend.common.db.sqlite3.base import LockRetryingCursorWrapper

    conn = sqlite3.connect(path, isolation_level=None, timeout=20)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={20000 if mode == 'sqlite' else 2}")
    return conn, (conn.cursor(factory=LockRetryingCursorWrapper) if mode == "backend" else conn.cursor())


def _writer(path: str, mode: str, stop) -> None:
    conn, cursor = _connect(path, mode)
    while not stop.is_set():
        cursor.execute("BEGIN IMMEDIATE")
        cursor.execute("INSERT INTO t (v) VALUES (?)", ("x" * 2000,))
        time.sleep(0.003)
        cursor.execute("COMMIT")
        time.sleep(random.uniform(0, 0.01))
    conn.close()


def measure(mode: str, commits: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "lock.sqlite3")
        conn, cursor = _connect(path, mode)
        cursor.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        context = multiprocessing.get_context("spawn")
        stop = context.Event()
        writers = [context.Process(target=_writer, args=(path, mode, stop)) for _ in range(2)]
        for proc in writers:
            proc.start()
        time.sleep(1)
        times = []
        for _ in range(commits):
            started = time.perf_counter()
            cursor.execute("BEGIN IMMEDIATE")
            cursor.execute("INSERT INTO t (v) VALUES ('y')")
            cursor.execute("COMMIT")
            times.append((time.perf_counter() - started) * 1000)
            time.sleep(0.02)
        stop.set()
        for proc in writers:
            proc.join()
        conn.close()
    times.sort()
    at = lambda q: round(times[int(q * (len(times) - 1))], 1)  # noqa: E731
    return {"mode": mode, "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(times[-1], 1),
            "load_average": round(os.getloadavg()[0], 1)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.sqlite_lock", description=__doc__.split("\n\n")[0])
    p.add_argument("--commits", type=int, default=300)
    args = p.parse_args(argv)
    for mode in ("sqlite", "backend"):
        r = measure(mode, args.commits)
        print(f"{mode:8} p50 {r['p50']} ms  p90 {r['p90']} ms  p99 {r['p99']} ms  max {r['max']} ms  "
              f"(load average {r['load_average']})", flush=True)


if __name__ == "__main__":
    main()

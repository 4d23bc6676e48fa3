"""Django's SQLite backend, with a write lock that is waited for in short steps (issue 33).

SQLite has one writer at a time. Web requests, the worker, the relay and beat share the file, so a
writer often finds the lock taken for a millisecond or two. SQLite's own busy handler then sleeps
1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms between its tries: after a few unlucky tries a
writer sleeps 50-100 ms at a time while the lock has long been free. Measured on the `make up`
stack, that was the request -> client tail (1 change in 30 at 200-350 ms; docs/performance.md).

Here the busy timeout is short (SQLITE_BUSY_TIMEOUT_MS, the `init_command`), and a statement that
gets "database is locked" outside a transaction (BEGIN IMMEDIATE, which every atomic block opens
with, or an autocommit write) is tried again after at most LOCK_RETRY_DELAYS[-1] (2 ms), until the
connection's `timeout` (20 s) has passed. Retrying is safe: a statement refused the lock did
nothing. A statement inside a transaction is never retried (BEGIN IMMEDIATE took the lock for the
whole transaction: one that fails there fails as before).
"""

from __future__ import annotations

import sqlite3
import time

from django.db.backends.sqlite3 import base

from backend.common.trace import SQLITE_LOCK_FIELD, trace_add

LOCK_RETRY_DELAYS = (0.0002, 0.0005, 0.001, 0.002)
LOCKED_MESSAGES = ("database is locked", "database table is locked", "database is busy")
# Statements that take the write lock when run outside a transaction.
LOCKING = ("BEGIN", "INSERT", "UPDATE", "DELETE", "REPLACE")


def _locked(exc: sqlite3.OperationalError) -> bool:
    return any(text in str(exc) for text in LOCKED_MESSAGES)


class LockRetryingCursorWrapper(base.SQLiteCursorWrapper):
    lock_wait = 20.0  # set per connection (DatabaseWrapper.create_cursor)
    retries = 0  # tries refused the lock, over this cursor's life (tests read it)

    def _retrying(self, run, query, *args):
        deadline = None
        attempt = 0
        # The time taken to get the lock, for the request trace (backend/common/trace.py): a
        # statement that takes it outside a transaction is timed (its own work is a fraction of a ms).
        timed = not self.connection.in_transaction and query.lstrip()[:7].upper().startswith(LOCKING)
        started = time.perf_counter() if timed else 0.0
        while True:
            try:
                result = run(self, query, *args)
                if timed:
                    trace_add(SQLITE_LOCK_FIELD, (time.perf_counter() - started) * 1000)
                return result
            except sqlite3.OperationalError as exc:
                if not _locked(exc) or self.connection.in_transaction:
                    raise
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + self.lock_wait
                if now >= deadline:
                    raise
                self.retries += 1
                time.sleep(LOCK_RETRY_DELAYS[min(attempt, len(LOCK_RETRY_DELAYS) - 1)])
                attempt += 1

    def execute(self, query, params=None):
        return self._retrying(base.SQLiteCursorWrapper.execute, query, params)

    def executemany(self, query, param_list):
        return self._retrying(base.SQLiteCursorWrapper.executemany, query, param_list)


class DatabaseWrapper(base.DatabaseWrapper):
    def create_cursor(self, name=None):
        cursor = self.connection.cursor(factory=LockRetryingCursorWrapper)
        cursor.lock_wait = float(self.settings_dict["OPTIONS"].get("timeout", 20))
        return cursor

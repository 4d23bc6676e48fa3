"""The zero-setup default's SQLite (issue 33): the settings `make up` runs with, read back from a
real connection, and the write lock waited for in short steps by the backend
(backend/common/db/sqlite3) rather than by SQLite's busy handler, whose sleeps grow to 100 ms.
No timing is asserted: that is the bench's (python -m bench.tail)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.db.backends.sqlite3.base import SQLiteCursorWrapper

from backend.common import trace
from backend.common.db.sqlite3.base import LockRetryingCursorWrapper

ROOT = Path(__file__).resolve().parents[3]

READ_BACK = """
import json
import django
django.setup()
from django.db import connection, transaction
with connection.cursor() as cursor:
    pragmas = {name: cursor.execute(f"PRAGMA {name}").fetchone()[0]
               for name in ("journal_mode", "busy_timeout", "synchronous", "foreign_keys")}
with transaction.atomic():
    immediate = connection.connection.in_transaction
print(json.dumps({"pragmas": pragmas, "vendor": connection.vendor,
                  "conn_max_age": connection.settings_dict["CONN_MAX_AGE"],
                  "cursor": type(connection.cursor().cursor).__name__,
                  "transaction_mode": connection.transaction_mode, "in_transaction_in_atomic": immediate}))
"""


def test_the_default_stack_opens_sqlite_in_wal_with_a_short_busy_timeout_and_the_retrying_cursor(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "backend.config.settings.base",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'default.sqlite3'}"}
    env.pop("SQLITE_BUSY_TIMEOUT_MS", None)
    env.pop("CONN_MAX_AGE", None)
    out = subprocess.run([sys.executable, "-c", READ_BACK], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["pragmas"] == {"journal_mode": "wal", "busy_timeout": 2, "synchronous": 1, "foreign_keys": 1}
    assert found["vendor"] == "sqlite"
    assert found["cursor"] == "LockRetryingCursorWrapper"
    assert found["transaction_mode"] == "IMMEDIATE" and found["in_transaction_in_atomic"]
    assert found["conn_max_age"] == 60  # the worker's and the relay's connection is kept (the web's: asgi.py)


@pytest.fixture
def database(tmp_path):
    path = tmp_path / "locks.sqlite3"
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    setup.close()
    return path


def connect(path, busy_ms: int = 2) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={busy_ms}")
    return conn


def hold_write_lock(path, seconds: float) -> threading.Thread:
    """Another connection takes the write lock and gives it back after `seconds`."""
    holder = connect(path)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t (v) VALUES ('holder')")
    release = threading.Timer(seconds, lambda: (holder.execute("COMMIT"), holder.close()))
    release.start()
    return release


def test_a_writer_that_finds_the_lock_taken_retries_until_it_is_free(database):
    waiter = connect(database)
    cursor = waiter.cursor(factory=LockRetryingCursorWrapper)
    cursor.lock_wait = 20
    released = hold_write_lock(database, 0.3)

    cursor.execute("BEGIN IMMEDIATE")  # refused while the holder has it, then taken
    cursor.execute("INSERT INTO t (v) VALUES ('waiter')")
    cursor.execute("COMMIT")
    released.join()

    assert cursor.retries > 0
    assert [v for (v,) in waiter.execute("SELECT v FROM t ORDER BY id")] == ["holder", "waiter"]


def test_without_the_retry_the_short_busy_timeout_alone_would_fail_the_writer(database):
    waiter = connect(database)
    cursor = waiter.cursor(factory=SQLiteCursorWrapper)  # Django's own
    released = hold_write_lock(database, 0.3)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        cursor.execute("BEGIN IMMEDIATE")
    released.join()


def test_an_autocommit_write_is_retried_too(database):
    waiter = connect(database)
    cursor = waiter.cursor(factory=LockRetryingCursorWrapper)
    released = hold_write_lock(database, 0.3)
    cursor.execute("UPDATE t SET v = 'x' WHERE id = 0")
    released.join()
    assert cursor.retries > 0


def test_a_statement_inside_a_transaction_is_not_retried(database):
    waiter = connect(database)
    cursor = waiter.cursor(factory=LockRetryingCursorWrapper)
    cursor.execute("BEGIN")  # deferred: no lock yet
    cursor.execute("SELECT count(*) FROM t").fetchone()
    released = hold_write_lock(database, 0.3)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        cursor.execute("INSERT INTO t (v) VALUES ('late')")
    assert cursor.retries == 0
    cursor.execute("ROLLBACK")
    released.join()


def test_a_writer_gives_up_after_the_connections_timeout(database):
    waiter = connect(database)
    cursor = waiter.cursor(factory=LockRetryingCursorWrapper)
    cursor.lock_wait = 0.05
    released = hold_write_lock(database, 1.0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        cursor.execute("BEGIN IMMEDIATE")
    released.join()


def test_the_wait_for_the_lock_is_added_to_the_changes_trace(database):
    waiter = connect(database)
    cursor = waiter.cursor(factory=LockRetryingCursorWrapper)
    trace.trace_begin()
    try:
        released = hold_write_lock(database, 0.2)
        cursor.execute("BEGIN IMMEDIATE")
        cursor.execute("COMMIT")
        released.join()
        cursor.execute("SELECT 1")  # a read takes no lock: not counted
        waited = trace.trace_current()[trace.SQLITE_LOCK_FIELD]
    finally:
        trace.trace_end()
    assert waited > 0

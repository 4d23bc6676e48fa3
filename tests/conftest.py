from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings
from hypothesis import settings as hypothesis_settings
from hypothesis.database import DirectoryBasedExampleDatabase
from rest_framework.test import APIClient

from bench import processes
from tests.support.auth import access_token


def _database_url(settings_dict: dict) -> str:
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgres://{auth}{settings_dict.get('HOST') or ''}{port}/{settings_dict['NAME']}"


METRICS_TOKEN = "test-metrics-token-0123456789abcdef"

# Every Hypothesis campaign keeps its failing examples here and replays them first on the next run
# (test-artifacts/ is git-ignored; CI can keep it between runs). HYPOTHESIS_PROFILE picks another.
_ROOT = Path(__file__).resolve().parents[1]
hypothesis_settings.register_profile(
    "records", database=DirectoryBasedExampleDatabase(str(_ROOT / "test-artifacts" / "hypothesis")),
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "records"))


def _flush_past_the_audit_triggers() -> None:
    """Between transactional tests Django empties every table (TRUNCATE on PostgreSQL, DELETE on
    SQLite); the audit tables refuse both, as they must. The test harness does what only the
    tables' owner can: it sets the triggers aside for the flush (backend/audit/db.py)."""
    from django.core.management.base import CommandError
    from django.db import connections
    from django.test.testcases import TransactionTestCase

    from backend.audit import db as audit_db

    flush = TransactionTestCase._fixture_teardown

    def teardown(self):
        # A live process of the session (a console's Daphne serving a list, which reads its tables
        # in one snapshot transaction) may hold a table the TRUNCATE wants next: PostgreSQL breaks
        # that deadlock by failing one side; the flush (rolled back whole) is simply tried again.
        for attempt in range(3):
            try:
                with contextlib.ExitStack() as stack:
                    for alias in self._databases_names(include_mirrors=False):
                        stack.enter_context(audit_db.triggers_disabled(connections[alias]))
                    return flush(self)
            except CommandError as error:
                if attempt == 2 or "deadlock detected" not in str(error.__cause__ or ""):
                    raise
                time.sleep(0.2)

    TransactionTestCase._fixture_teardown = teardown


def pytest_configure(config):
    # Tests rely on the test settings (their own Redis databases, fault points, fast hashers); an
    # exported DJANGO_SETTINGS_MODULE takes precedence over pyproject's, so say so instead of
    # running (and half passing) with the development settings.
    if settings.SETTINGS_MODULE != "backend.config.settings.test":
        pytest.exit(
            f"the tests run with backend.config.settings.test, not {settings.SETTINGS_MODULE}: "
            "unset DJANGO_SETTINGS_MODULE or pass --ds=backend.config.settings.test (make test does)",
            returncode=4,
        )
    _flush_past_the_audit_triggers()


def redis_urls() -> list[str]:
    return [settings.CELERY_BROKER_URL, settings.CHANNEL_LAYER_URL, settings.KEYS_REDIS_URL]


def flush_test_redis() -> None:
    for url in redis_urls():
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()


@pytest.fixture(scope="session")
def live_env(django_db_setup, django_db_blocker) -> Iterator[dict[str, str]]:
    """Environment for processes that must see the test database and the test Redis databases."""
    from django.db import connection

    env = os.environ.copy()
    env.update(
        DJANGO_SETTINGS_MODULE="backend.config.settings.test",
        DATABASE_URL=_database_url(connection.settings_dict),
        PYTHONUNBUFFERED="1",
        # This test process's own Redis databases (per xdist worker), passed on as they are.
        TEST_REDIS_DB_BASE=str(settings.TEST_REDIS_DB_BASE),
        # The hub's tick (re-validation and catch-up from the outbox) every minute: within a test, a
        # live update must then come by the channel-layer push, not by the tick's outbox fill, so a
        # broken push path fails the delivery tests. Tests about the tick start a Daphne with 1 s.
        REALTIME_REVALIDATE_SECONDS="60",
        REALTIME_REPORT_SECONDS="1",
        METRICS_TOKEN=METRICS_TOKEN,
        OUTBOX_SWEEP_SECONDS="1",
        OUTBOX_SWEEP_GRACE_SECONDS="1",
        # Every user a test signs in (the consoles of the browser tests, one after another) comes
        # from 127.0.0.1: one office's worth of people, not one attacker. The per-address limit itself
        # is tested in-process (tests/backend/accounts/test_signin.py); the per-username one stays.
        LOGIN_RATE_PER_ADDRESS="1000/min",
    )
    env.pop("PYTEST_XDIST_WORKER", None)
    flush_test_redis()
    yield env
    # (the live processes started on this environment are stopped by now: their fixtures depend on it)
    _let_other_sessions_end(django_db_blocker)


def _let_other_sessions_end(django_db_blocker, timeout: float = 10.0) -> None:
    """Before pytest-django drops the test database: wait for the sessions of the processes the
    tests stopped to end (PostgreSQL ends a session a moment after its client went), then end any
    left. Otherwise the DROP fails ("being accessed by other users") and leaves the database behind."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    others = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        deadline = time.monotonic() + timeout
        while True:
            cursor.execute(f"SELECT count(*) {others}")
            if not cursor.fetchone()[0] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        cursor.execute(f"SELECT pg_terminate_backend(pid) {others}")


@pytest.fixture(scope="session")
def daphne(live_env):
    """One Daphne for the session: yields its port. Every update a test gets from it must come by
    the push: its hub's outbox fill stays at 0 (`_PushOnly` below)."""
    proc, port = processes.start_daphne(live_env)
    _push_only.proc = proc
    yield port
    _push_only.proc = None
    proc.stop()


class _PushOnly:
    """The session Daphne's hub must fill nothing from the outbox: every update its tests get came
    by the channel-layer push, so a broken push fails them instead of passing through the fill (its
    tick is a minute apart, but a test may well wait that long, and a gap fill is immediate).

    Its `filled` counter is read (from a report the Daphne made after the read began) at the end of
    each module that used it, and around each test marked `outbox_fill`: the few that make the hub
    fill on purpose, whose fills are then set aside. A fill anywhere else fails the module's last
    test, naming the tests since the last read."""

    def __init__(self) -> None:
        self.proc: processes.LiveProcess | None = None
        self.filled = 0  # what the exempt tests filled: the counter's expected value
        self.since: list[str] = []  # the tests that used the Daphne since it was last read

    def read(self) -> int:
        from tests.support.realtime import fresh_hub_snapshot

        snapshot = fresh_hub_snapshot(self.proc) if self.proc is not None else None
        return self.filled if snapshot is None else snapshot["filled"]

    def check(self) -> None:
        if not self.since:
            return
        tests, self.since = self.since, []
        filled = self.read()
        moved, self.filled = filled - self.filled, filled
        assert moved == 0, (
            f"the session Daphne's hub filled {moved} update(s) from the outbox during {tests}: a live "
            "update must come by the push (a test about the fill is marked outbox_fill)"
        )


_push_only = _PushOnly()


@pytest.fixture(autouse=True)
def _delivered_by_the_push(request):
    """See _PushOnly: note each test on the session Daphne; set an `outbox_fill` test's fills aside."""
    if "daphne" not in request.fixturenames:
        yield
        return
    exempt = request.node.get_closest_marker("outbox_fill") is not None
    if exempt:
        _push_only.check()  # the tests before it are judged first
    yield
    if exempt:
        _push_only.filled = _push_only.read()
    else:
        _push_only.since.append(request.node.nodeid)


@pytest.fixture(scope="module", autouse=True)
def _module_delivered_by_the_push():
    yield
    _push_only.check()


@pytest.fixture(scope="session")
def worker(live_env):
    """One Celery worker (prefork, one child) for the session."""
    proc = processes.start_worker(live_env, name="session")
    yield proc
    proc.stop()


@pytest.fixture
def api():
    """`api(user)` -> an APIClient authenticated with a real JWT for `user`."""

    def make(user=None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token(user)}")
        return client

    return make


@pytest.fixture
def redis_server():
    """A redis-server of the test's own (free port, no persistence), stopped after the test."""
    server = processes.RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def spawn_daphne(live_env):
    """`spawn_daphne(port=None, extra=None, **env) -> (LiveProcess, port)`: a Daphne of the test's own,
    with extra settings in its environment; stopped when the test ends."""
    started: list[processes.LiveProcess] = []

    def start(port: int | None = None, extra: list[str] | None = None, **env: str):
        proc, port = processes.start_daphne({**live_env, **env}, port=port, extra=extra)
        started.append(proc)
        return proc, port

    yield start
    for proc in started:
        proc.stop()

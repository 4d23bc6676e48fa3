"""The web tier keeps no persistent database connections: under ASGI each request's sync code runs
in a thread of its own, so a kept connection is never reused and piles up until its thread is
collected (it once exhausted PostgreSQL's max_connections under 20 API clients). Measured on a real
Daphne whose environment asks for persistent connections; its connections come from a pool
(tests/workers/test_db_sessions.py)."""

from __future__ import annotations

import httpx
import pytest
from django.db import connection

from bench import processes
from tests.support.auth import access_token
from tests.support.pipeline import requires_postgres
from tests.support.realtime import make_world

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def sessions_of_this_database() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


@requires_postgres
def test_api_requests_leave_no_database_sessions_behind(live_env):
    world = make_world("conn")
    proc, port = processes.start_daphne({**live_env, "CONN_MAX_AGE": "60"})
    try:
        headers = {"Authorization": f"Bearer {access_token(world.approver)}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10) as http:
            assert http.get("/api/me/").status_code == 200  # warm: the process's own connections exist
            before = sessions_of_this_database()
            # when 40 API requests are served one after another (each in a thread of its own)
            answers = [http.get("/api/crates/").status_code for _ in range(40)]
            after = sessions_of_this_database()
    finally:
        proc.stop()
    # then none of them left a session open
    assert answers == [200] * 40
    assert after - before <= 2, (before, after)

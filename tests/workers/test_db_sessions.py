"""Database sessions of the worker and the web tier: a worker keeps its connection from task to task
(Celery's Django fix-up would open a new PostgreSQL session for every task), and the web tier takes
its connections from a pool. Counted in pg_stat_activity, where each entry point names itself."""

from __future__ import annotations

import httpx
import pytest
from django.db import connection

from backend.jobs.models import Job, JobStatus
from bench import processes
from tests.support.auth import access_token
from tests.support.factories import CrateFactory, UnitFactory, unit_staff
from tests.support.pipeline import requires_postgres, wait_until
from tests.support.queues import enqueue_on

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def sessions(application: str) -> list[tuple[int, float]]:
    """(pid, backend start as Unix time) of this database's sessions opened by `application`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, extract(epoch FROM backend_start) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s ORDER BY pid",
            [application],
        )
        return [(pid, float(started)) for pid, started in cursor.fetchall()]


@requires_postgres
def test_a_worker_keeps_its_database_session_from_task_to_task(api, live_env, private_queue, own_processes):
    staff = unit_staff(UnitFactory(code="reuse"))
    crates = [CrateFactory(unit=staff["store"].unit) for _ in range(8)]
    env = {**live_env, "DATABASE_APPLICATION_NAME": "records-worker-under-test"}  # not the session's worker
    own_processes.append(processes.start_worker(env, name="reuse", concurrency=1, queues=private_queue))

    # when eight jobs run one after another on a worker with one child
    ids = []
    with enqueue_on(private_queue):
        for crate in crates:
            answer = api(staff["store"]).post(f"/api/crates/{crate.id}/relocate/", {"location": "Vault 9"}, format="json")
            ids.append(answer.json()["job"]["id"])
    wait_until(lambda: Job.objects.filter(id__in=ids, status=JobStatus.SUCCEEDED).count() == len(ids), 30, "the jobs")

    # then the child ran them all on one session, opened before the first of them finished
    first_finished = Job.objects.filter(id__in=ids).order_by("finished_at").first().finished_at.timestamp()
    worker_sessions = sessions("records-worker-under-test")
    assert len(worker_sessions) == 1, worker_sessions
    assert worker_sessions[0][1] <= first_finished


@requires_postgres
def test_the_web_tier_serves_requests_from_a_pool_of_sessions(live_env):
    staff = unit_staff(UnitFactory(code="pool"))
    env = {**live_env, "DATABASE_POOL_SIZE": "3", "DATABASE_APPLICATION_NAME": "records-web-under-test"}
    proc, port = processes.start_daphne(env)
    try:
        headers = {"Authorization": f"Bearer {access_token(staff['approver'])}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10) as http:
            assert http.get("/api/me/").status_code == 200
            before = sessions("records-web-under-test")
            # when 30 requests come one after another, then 30 more 10 at a time
            answers = [http.get("/api/crates/").status_code for _ in range(30)]
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(10) as pool, httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=20
        ) as http:
            answers += list(pool.map(lambda _: http.get("/api/crates/").status_code, range(30)))
            after = sessions("records-web-under-test")
    finally:
        proc.stop()
    assert answers == [200] * 60
    # then one request at a time was served by the session already open, and ten at a time by no
    # more sessions than the pool holds
    assert len(before) >= 1 and set(before) <= set(after), (before, after)
    assert len(after) <= 3, after

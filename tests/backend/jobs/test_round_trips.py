"""A job's database round trips are its cost: in the sustained benchmark the worker spends half its
time waiting on PostgreSQL (docs/performance.md, "Sustained state changes"). These pin the number of
statements of the most common job and of its request, so a stray savepoint or a re-read shows up
here rather than as a slower benchmark. (Counts, not timings.)"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from backend.jobs.models import Job, JobStatus
from backend.jobs.services import job_execute
from tests.support.factories import CrateFactory, UnitFactory, unit_staff

pytestmark = pytest.mark.django_db(transaction=True)


def statements(ctx: CaptureQueriesContext) -> list[str]:
    return [query["sql"].split(" ", 1)[0] for query in ctx.captured_queries]


def test_a_relocation_costs_its_request_and_its_job_few_round_trips(api, enqueued):
    staff = unit_staff(UnitFactory(code="own"))
    crate = CrateFactory(unit=staff["store"].unit)
    client = api(staff["store"])
    # a first change, so the unit's audit chain and counter exist (the steady state)
    client.post(f"/api/crates/{crate.id}/relocate/", {"location": "Vault 2"}, format="json")
    job_execute(job_id=str(Job.objects.get().id), worker="w@h")

    with CaptureQueriesContext(connection) as request:
        answer = client.post(f"/api/crates/{crate.id}/relocate/", {"location": "Vault 3", "version": 2}, format="json")
    assert answer.status_code == 202
    job = Job.objects.get(id=answer.json()["job"]["id"])
    with CaptureQueriesContext(connection) as run:
        job_execute(job_id=str(job.id), worker="w@h")

    job.refresh_from_db()
    assert (job.status, job.attempts, job.result["version"]) == (JobStatus.SUCCEEDED, 1, 3)
    # the request: the user (JWT), the crate with its unit, the job row in its own transaction
    assert statements(request) == ["SELECT", "SELECT", "BEGIN", "INSERT", "COMMIT"]
    # the job: start (read, count the attempt, re-read); one transaction with a single savepoint (the one that
    # undoes a refused relocation) for the change, its seq, its audit entry, the outbox row, the
    # requester's notification and the job's outcome; then the event is marked published
    assert statements(run) == [
        "SELECT", "UPDATE", "SELECT",
        "BEGIN", "SELECT", "SAVEPOINT",
        "SELECT", "UPDATE",  # the crate, locked and changed
        "SELECT", "UPDATE",  # the unit's counter, locked and advanced
        "SELECT",  # the audit chain's head
        "INSERT", "INSERT",  # outbox event, audit entry
        "RELEASE",
        "SELECT",  # the recipient's unit (a notification stays in the unit it is about)
        "INSERT", "UPDATE",  # notification, job
        "COMMIT",
        "UPDATE",  # published_at
    ]

"""The insider drills against the real stack: a real Daphne, a real Celery worker paused with SIGSTOP
(as a busy worker leaves a job waiting), real HTTP clients. While the decision waits, the requester
swaps what was signed; when the worker resumes, nothing signed is applied to what nobody saw."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest
import redis
from django.conf import settings

from backend.accounts.models import Role
from backend.audit.models import AuditEntry
from backend.config.settings.base import redis_db_url
from backend.jobs.models import Job, JobOutcome
from backend.records.models import Crate, CrateStatus, RequestStatus, WithdrawalRequest
from bench import processes
from tests.support.auth import access_token
from tests.support.factories import CrateFactory, UnitFactory, UserFactory, make_request
from tests.support.pipeline import wait_until
from tests.support.signing import signed

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def stack(live_env, own_processes):
    """A Daphne and a worker on a broker database of their own (so no other worker of the session
    takes the job while this one is paused)."""
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    broker = redis_db_url(settings.REDIS_URL, 8 + index)
    redis.Redis.from_url(broker).flushdb()
    env = {**live_env, "TEST_CELERY_BROKER_URL": broker}
    daphne, port = processes.start_daphne(env)
    worker = processes.start_worker(env, name="drill")
    own_processes.extend([daphne, worker])
    return f"http://127.0.0.1:{port}", worker


def _client(base: str, user) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=15, headers={"Authorization": f"Bearer {access_token(user)}"})


def _finished(job_id: str) -> Job | None:
    job = Job.objects.get(id=job_id)
    return job if job.status in ("succeeded", "failed") else None


def test_crates_swapped_while_the_worker_is_paused_are_never_withdrawn_under_the_old_signature(stack):
    base, worker = stack
    unit = UnitFactory()
    requester, approver = UserFactory(unit=unit, role=Role.REQUESTER), UserFactory(unit=unit, role=Role.APPROVER)
    crate_a, crate_b, crate_c, crate_d = (CrateFactory(unit=unit) for _ in range(4))
    single = make_request("withdrawal", requester, crates=[crate_a])
    in_bulk = make_request("withdrawal", requester, crates=[crate_c])

    # given a worker that is busy (stopped) while the approver signs, without naming a version
    worker.kill(signal.SIGSTOP)
    try:
        with _client(base, approver) as approving:
            one = approving.post(f"/api/withdrawal-requests/{single.id}/approve/", json=signed("approve"))
            many = approving.post("/api/bulk-actions/", json=signed(
                "approve", {"entity": "withdrawal", "action": "approve", "ids": [str(in_bulk.id)]}))
        assert (one.status_code, many.status_code) == (202, 202), (one.text, many.text)
        # when the requester swaps the crates of both while the jobs wait
        with _client(base, requester) as editing:
            for request, crate in ((single, crate_b), (in_bulk, crate_d)):
                edit = editing.patch(f"/api/withdrawal-requests/{request.id}/",
                                     json={"crates": [str(crate.id)], "change_reason": "swap"})
                assert edit.status_code == 200, edit.text
    finally:
        worker.kill(signal.SIGCONT)

    # then, once the worker runs them, neither request is decided and no crate left storage
    job_one = wait_until(lambda: _finished(one.json()["job"]["id"]), 60, "the single job to finish")
    job_many = wait_until(lambda: _finished(many.json()["job"]["id"]), 60, "the bulk job to finish")
    assert (job_one.status, job_one.error["code"]) == ("failed", "stale_version")
    assert JobOutcome.objects.get(job=job_many).code == "stale_version"
    assert set(WithdrawalRequest.objects.filter(id__in=[single.id, in_bulk.id]).values_list("status", flat=True)) == {
        RequestStatus.PENDING
    }
    assert set(Crate.objects.filter(unit=unit).values_list("status", flat=True)) == {CrateStatus.IN_STORAGE}
    # and each request's trail records its signature as not applied
    for request in (single, in_bulk):
        (entry,) = AuditEntry.objects.filter(record_id=request.id, action="signature_not_applied")
        assert entry.signature_id is not None and entry.reason.startswith("stale_version")


def test_without_an_edit_the_paused_decision_is_applied_once_the_worker_resumes(stack):
    # the positive control: the same pause with nobody editing decides the request
    base, worker = stack
    unit = UnitFactory()
    requester, approver = UserFactory(unit=unit, role=Role.REQUESTER), UserFactory(unit=unit, role=Role.APPROVER)
    request = make_request("withdrawal", requester)
    worker.kill(signal.SIGSTOP)
    try:
        with _client(base, approver) as approving:
            answer = approving.post(f"/api/withdrawal-requests/{request.id}/approve/", json=signed("approve"))
        time.sleep(0.5)
    finally:
        worker.kill(signal.SIGCONT)
    job = wait_until(lambda: _finished(answer.json()["job"]["id"]), 60, "the job to finish")
    assert job.status == "succeeded"
    request.refresh_from_db()
    assert (request.status, request.version) == (RequestStatus.APPROVED, 2)

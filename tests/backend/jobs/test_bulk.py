"""Bulk status changes: exact per-id outcomes, exactly-once under kills and concurrency."""

from __future__ import annotations

import threading
import time
import uuid
from unittest import mock

import pytest
from django.db import connection
from django.test import override_settings

from backend.accounts.models import Role
from backend.audit.models import Signature
from backend.events.models import OutboxEvent
from backend.jobs.models import Job, JobOutcome, JobStatus
from backend.jobs.services import job_execute
from backend.records.models import RequestStatus, WithdrawalRequest
from bench import processes
from tests.support.factories import UnitFactory, UserFactory, make_request, pending_requests_fast
from tests.support.queues import enqueue_on
from tests.support.signing import decided, sign, signed, transition_now


def _outcomes(job: Job) -> dict[str, dict]:
    """The job's ledger as the API shows it: {target: {"status", "code"?, "message"?}}."""
    return {o.target: o.as_outcome() for o in JobOutcome.objects.filter(job=job)}


def _queued(actor, ids, action="approve", reason="") -> Job:
    """Submit through the decision use case without a broker: these tests run the job in-process."""
    return decided(actor, "withdrawal", action, ids, reason=reason)


@pytest.mark.django_db
def test_mixed_ids_get_exact_outcomes_and_nothing_else_changes(django_capture_on_commit_callbacks):
    # given two pending requests, an approved one, another unit's pending one and an unknown id
    unit, other = UnitFactory(), UnitFactory()
    requester, approver = UserFactory(unit=unit, role=Role.REQUESTER), UserFactory(unit=unit, role=Role.APPROVER)
    pending = [make_request("withdrawal", requester) for _ in range(2)]
    approved = make_request("withdrawal", requester)
    transition_now(entity="withdrawal", action="approve", actor=approver, request_id=approved.id,
        expected_version=1, signature_id=sign(approver, "withdrawal", "approve"))
    foreign = make_request("withdrawal", UserFactory(unit=other, role=Role.REQUESTER))
    unknown = uuid.uuid4()
    seq_before = OutboxEvent.objects.filter(unit=unit).order_by("-seq").values_list("seq", flat=True).first()

    # when the approver bulk-approves them all, one id twice
    ids = [pending[0].id, pending[1].id, approved.id, foreign.id, unknown, pending[0].id]
    job = _queued(approver, ids)
    with django_capture_on_commit_callbacks():
        job = job_execute(job_id=str(job.id))

    # then duplicates collapsed and every id has its exact outcome
    assert job.status == JobStatus.SUCCEEDED
    assert job.progress == {"total": 5, "done": 5, "failed": 3}
    outcomes = {k: (v["status"], v.get("code")) for k, v in _outcomes(job).items()}
    assert outcomes == {
        str(pending[0].id): ("succeeded", None),
        str(pending[1].id): ("succeeded", None),
        str(approved.id): ("failed", "invalid_transition"),
        str(foreign.id): ("failed", "not_found"),
        str(unknown): ("failed", "not_found"),
    }
    # and only the two valid requests changed (request + crate event each)
    assert set(WithdrawalRequest.objects.filter(version=2).values_list("id", flat=True)) == {
        pending[0].id, pending[1].id, approved.id,
    }
    foreign.refresh_from_db()
    assert (foreign.status, foreign.version) == (RequestStatus.PENDING, 1)
    new = OutboxEvent.objects.filter(unit=unit, seq__gt=seq_before)
    assert sorted(str(e.object_id) for e in new if e.entity == "withdrawal") == sorted(str(p.id) for p in pending)
    assert new.count() == 4  # each: the request and its crate
    assert OutboxEvent.objects.filter(unit=other).count() == 1  # only its own `created`


SAME = str(uuid.uuid4())


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"entity": "crate", "action": "approve", "ids": [str(uuid.uuid4())]}, 400, "invalid"),
        ({"entity": "withdrawal", "action": "destroy", "ids": [str(uuid.uuid4())]}, 400, "invalid"),
        ({"entity": "withdrawal", "action": "approve", "ids": []}, 400, "invalid"),
        ({"entity": "withdrawal", "action": "approve", "ids": ["not-a-uuid"]}, 400, "invalid"),
        ({"entity": "withdrawal", "action": "reject", "ids": [str(uuid.uuid4())]}, 400, "reason_required"),
        ({"entity": "withdrawal", "action": "approve", "ids": [str(uuid.uuid4()) for _ in range(4)]}, 400, "too_many_ids"),
        # one request named with two versions: which one the decider saw is not known
        ({"entity": "withdrawal", "action": "approve", "items": [{"id": SAME, "version": 1}, {"id": SAME, "version": 2}]},
         400, "invalid"),
    ],
)
def test_bulk_request_validation(api, body, status, code):
    approver = UserFactory(role=Role.APPROVER)
    with override_settings(BULK_MAX_IDS=3):
        answer = api(approver).post("/api/bulk-actions/", signed(body["action"], body), format="json")
    assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert not Job.objects.exists()
    assert not Signature.objects.exists()  # refused before the signature is checked


@pytest.mark.django_db
def test_bulk_needs_the_role_and_answers_202_with_the_deduplicated_total(api, django_capture_on_commit_callbacks):
    requester = UserFactory(role=Role.REQUESTER)
    approver = UserFactory(unit=requester.unit, role=Role.APPROVER)
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    refused = api(requester).post("/api/bulk-actions/",
        signed("approve", {"entity": "withdrawal", "action": "approve", "ids": ids}))
    with mock.patch("backend.jobs.queue.enqueue") as enqueue, django_capture_on_commit_callbacks(execute=True):
        answer = api(approver).post(
            "/api/bulk-actions/",
                signed("send-back", {"entity": "withdrawal", "action": "send-back", "ids": ids + ids, "reason": "why"})
        )
    assert (refused.status_code, refused.json()["code"]) == (403, "permission_denied")
    assert answer.status_code == 202
    job = answer.json()["job"]
    assert answer["Location"] == f"/api/jobs/{job['id']}/"
    assert (job["kind"], job["status"], job["progress"]) == (
        "bulk.withdrawal.send_back", "queued", {"total": 2, "done": 0, "failed": 0}
    )
    enqueue.assert_called_once()


@pytest.mark.django_db(transaction=True)
def test_concurrent_overlapping_bulks_apply_each_id_once():
    # given 40 pending requests and two bulks that overlap on the middle 20
    unit = UnitFactory()
    requester, approver = UserFactory(unit=unit, role=Role.REQUESTER), UserFactory(unit=unit, role=Role.APPROVER)
    requests = pending_requests_fast("withdrawal", requester, 40)
    ids = [r.id for r in requests]
    with override_settings(BULK_CHUNK_SIZE=7):
        first, second = _queued(approver, ids[:30]), _queued(approver, ids[10:])
        errors: list[BaseException] = []

        def run(job):
            try:
                job_execute(job_id=str(job.id))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                connection.close()

        # when both run at the same time
        threads = [threading.Thread(target=run, args=(job,)) for job in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)

    # then neither deadlocked or crashed, every id moved exactly once,
    assert not errors
    assert set(WithdrawalRequest.objects.filter(id__in=ids).values_list("status", "version")) == {("approved", 2)}
    first.refresh_from_db(), second.refresh_from_db()
    assert first.status == second.status == JobStatus.SUCCEEDED
    # and for each overlapping id one bulk won and the other found it already approved
    for target in map(str, ids[10:30]):
        codes = sorted(o.get("code", "ok") for o in (_outcomes(first)[target], _outcomes(second)[target]))
        assert codes == ["invalid_transition", "ok"], codes
    assert first.progress["failed"] + second.progress["failed"] == 20
    per_request = OutboxEvent.objects.filter(entity="withdrawal", unit=unit).values_list("object_id", flat=True)
    assert sorted(per_request) == sorted(ids)  # one `updated` event per request, no more


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_worker_killed_mid_bulk_completes_after_redelivery_exactly_once(api, live_env):
    # given a bulk of 60 approvals processed 10 per chunk by a worker that pauses between chunks
    unit = UnitFactory()
    requester, approver = UserFactory(unit=unit, role=Role.REQUESTER), UserFactory(unit=unit, role=Role.APPROVER)
    ids = [str(r.id) for r in pending_requests_fast("withdrawal", requester, 60)]
    env = {**live_env, "BULK_CHUNK_SIZE": "10", "FAULT_POINTS": "job.after_chunk=pause:0.4", "CELERY_VISIBILITY_TIMEOUT": "3"}
    queue = f"bulk-drill-{uuid.uuid4().hex[:8]}"  # not the session worker's queue: only ours may take it
    worker = processes.start_worker(env, name="bulk-victim", queues=queue)
    try:
        with enqueue_on(queue):
            answer = api(approver).post("/api/bulk-actions/",
                signed("approve", {"entity": "withdrawal", "action": "approve", "ids": ids}))
        job_id = answer.json()["job"]["id"]
        # when the worker is SIGKILLed after some chunks committed
        _wait(lambda: Job.objects.get(id=job_id).progress["done"] >= 20, "two chunks")
        worker.kill()
        worker.popen.wait(10)
        done_at_kill = Job.objects.get(id=job_id).progress["done"]
        assert done_at_kill < 60
        # and a new worker comes up, the task is redelivered and finishes
        worker = processes.start_worker({**env, "FAULT_POINTS": ""}, name="bulk-rescuer", queues=queue)
        _wait(lambda: Job.objects.get(id=job_id).status == JobStatus.SUCCEEDED, "redelivered job", timeout=60)
    finally:
        worker.stop()

    # then the task ran twice (the killed delivery and the redelivery) and every id was applied once
    job = Job.objects.get(id=job_id)
    assert job.progress == {"total": 60, "done": 60, "failed": 0} and job.attempts == 2
    assert set(WithdrawalRequest.objects.filter(id__in=ids).values_list("status", "version")) == {("approved", 2)}
    updates = list(OutboxEvent.objects.filter(unit=unit, entity="withdrawal").values_list("object_id", flat=True))
    assert len(updates) == 60 and {str(i) for i in updates} == set(ids)
    seqs = list(OutboxEvent.objects.filter(unit=unit).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))


def _wait(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")

"""The job API sized for humans, and a bulk job's ledger: the list is light, the detail streams a bulk
job's targets and outcomes, outcomes page by page, per-chunk writes O(chunk), finished jobs pruned
after their retention, bulk submissions throttled per user."""

from __future__ import annotations

import json
from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from backend.accounts.models import Role
from backend.common.faults import InjectedFault, parse_fault_points
from backend.jobs.models import Job, JobOutcome, JobStatus
from backend.jobs.services import job_execute, jobs_prune
from backend.records.bulk_api import BulkThrottle
from backend.records.job_kinds import RELOCATE
from tests.support.factories import CrateFactory, UnitFactory, UserFactory, pending_requests_fast
from tests.support.signing import decided, signed

pytestmark = pytest.mark.django_db


@pytest.fixture
def people():
    unit = UnitFactory()
    return UserFactory(unit=unit, role=Role.REQUESTER), UserFactory(unit=unit, role=Role.APPROVER)


def _bulk(approver, ids) -> Job:
    return decided(approver, "withdrawal", "approve", ids)


def _body(response) -> dict:
    content = b"".join(response) if response.streaming else response.content  # (iterating consumes async content too)
    return json.loads(content)


def test_the_list_omits_targets_and_outcomes_and_the_detail_has_them(api, people, settings):
    # given a finished bulk of 30 ids, 10 of them unknown
    settings.BULK_CHUNK_SIZE = 7
    requester, approver = people
    ids = [str(r.id) for r in pending_requests_fast("withdrawal", requester, 20)] + [
        f"00000000-0000-4000-8000-{i:012d}" for i in range(10)
    ]
    job = job_execute(job_id=str(_bulk(approver, ids).id))
    client = api(approver)

    # when the list and the detail are read
    listed = client.get("/api/jobs/").json()["results"]
    detail = _body(client.get(f"/api/jobs/{job.id}/"))
    failed_only = _body(client.get(f"/api/jobs/{job.id}/?outcomes=failed"))
    progress_only = _body(client.get(f"/api/jobs/{job.id}/?outcomes=none"))

    # then the list row has no targets or outcomes,
    assert [row["id"] for row in listed] == [str(job.id)]
    assert "targets" not in listed[0] and "result" not in listed[0]
    # and the detail streams every target and every outcome, or only the failed, or none
    assert detail["targets"] == sorted(ids) and detail["progress"] == {"total": 30, "done": 30, "failed": 10}
    outcomes = detail["result"]["outcomes"]
    assert len(outcomes) == 30 and {o["status"] for o in outcomes.values()} == {"succeeded", "failed"}
    assert {t for t, o in outcomes.items() if o["status"] == "failed"} == set(ids[20:])
    assert set(failed_only["result"]["outcomes"]) == set(ids[20:])
    assert {o["code"] for o in failed_only["result"]["outcomes"].values()} == {"not_found"}
    assert progress_only["result"] is None and progress_only["status"] == "succeeded"
    assert client.get(f"/api/jobs/{job.id}/?outcomes=some").json()["code"] == "invalid"


def test_outcomes_come_page_by_page_and_filtered(api, people):
    requester, approver = people
    ids = [str(r.id) for r in pending_requests_fast("withdrawal", requester, 12)] + ["00000000-0000-4000-8000-000000000001"]
    job = job_execute(job_id=str(_bulk(approver, ids).id))
    client = api(approver)

    first = client.get(f"/api/jobs/{job.id}/outcomes/?page_size=5").json()
    failed = client.get(f"/api/jobs/{job.id}/outcomes/?status=failed").json()

    assert first["count"] == 13 and len(first["results"]) == 5 and first["next"]
    assert [row["target"] for row in first["results"]] == sorted(ids)[:5]
    assert failed["results"] == [
        {"target": ids[-1], "status": "failed", "code": "not_found", "message": "No such withdrawal request."}
    ]
    assert client.get(f"/api/jobs/{job.id}/outcomes/?status=maybe").json()["code"] == "invalid"


def test_a_single_jobs_detail_is_plain_json_with_its_result(api):
    unit = UnitFactory()
    store = UserFactory(unit=unit, role=Role.STORE)
    crate = CrateFactory(unit=unit)
    with mock.patch("backend.jobs.queue.enqueue"):
        from backend.jobs.services import job_submit

        job = job_submit(actor=store, kind=RELOCATE, targets=[crate.id], params={"location": "Vault"})
    job_execute(job_id=str(job.id))
    response = api(store).get(f"/api/jobs/{job.id}/")
    assert not response.streaming
    assert response.json()["result"] == {"id": str(crate.id), "location": "Vault", "version": 2}


def test_each_chunk_writes_only_its_own_outcomes(people, settings):
    # given a bulk of 2,000 ids in chunks of 250
    settings.BULK_CHUNK_SIZE = 250
    requester, approver = people
    ids = [str(r.id) for r in pending_requests_fast("withdrawal", requester, 2000)]
    job = _bulk(approver, ids)

    # when it runs
    with CaptureQueriesContext(connection) as queries:
        job_execute(job_id=str(job.id))

    # then every chunk inserted its 250 outcomes, and the job row's update stayed the same size
    # from the first chunk to the last (the old ledger rewrote every outcome so far, each time)
    job_updates = [q["sql"] for q in queries if q["sql"].startswith('UPDATE "jobs_job"') and '"progress" = ' in q["sql"]]
    outcome_inserts = [q["sql"] for q in queries if q["sql"].startswith('INSERT INTO "jobs_joboutcome"')]
    assert len(job_updates) == len(outcome_inserts) == 8
    assert max(map(len, job_updates)) - min(map(len, job_updates)) < 100
    assert JobOutcome.objects.filter(job=job).count() == 2000
    assert Job.objects.get(id=job.id).result is None


def test_a_bulk_resumes_after_its_last_committed_chunk(people, settings):
    # given a bulk whose first delivery dies after its second chunk committed
    settings.BULK_CHUNK_SIZE = 10
    requester, approver = people
    ids = [str(r.id) for r in pending_requests_fast("withdrawal", requester, 35)]
    job = _bulk(approver, ids)
    calls = {"n": 0}
    real = parse_fault_points("job.after_chunk=raise")

    def dying(name, **context):
        if name == "job.after_chunk":
            calls["n"] += 1
            if calls["n"] == 2:
                real[name].trip(name)

    with mock.patch("backend.jobs.services.fault_point", dying), pytest.raises(InjectedFault):
        job_execute(job_id=str(job.id))
    assert Job.objects.get(id=job.id).progress["done"] == 20

    # when the task is delivered again
    job = job_execute(job_id=str(job.id))

    # then it carried on from id 21: every id has exactly one outcome, all succeeded
    assert (job.status, job.attempts, job.progress) == (JobStatus.SUCCEEDED, 2, {"total": 35, "done": 35, "failed": 0})
    assert sorted(JobOutcome.objects.filter(job=job).values_list("target", flat=True)) == sorted(ids)


def test_finished_jobs_past_their_retention_are_pruned_and_running_ones_never(people, settings):
    settings.JOB_RETENTION_DAYS = 30
    requester, approver = people
    old = timezone.now() - timedelta(days=31)
    ids = [str(r.id) for r in pending_requests_fast("withdrawal", requester, 3)]
    finished_old = job_execute(job_id=str(_bulk(approver, ids[:2]).id))
    Job.objects.filter(id=finished_old.id).update(finished_at=old)
    finished_recent = job_execute(job_id=str(_bulk(approver, ids[2:]).id))
    running_old = _bulk(approver, ["00000000-0000-4000-8000-000000000009"])
    Job.objects.filter(id=running_old.id).update(status=JobStatus.RUNNING, created_at=old, started_at=old)

    assert jobs_prune() == 1

    assert set(Job.objects.values_list("id", flat=True)) == {finished_recent.id, running_old.id}
    assert not JobOutcome.objects.filter(job_id=finished_old.id).exists()


def test_bulk_submissions_are_throttled_per_user(api, people, enqueued, monkeypatch):
    # given a rate of two bulk submissions per hour
    monkeypatch.setattr(BulkThrottle, "THROTTLE_RATES", {"bulk": "2/hour"})
    requester, approver = people
    body = {"entity": "withdrawal", "action": "approve", "ids": ["00000000-0000-4000-8000-000000000001"]}
    answers = []
    for _ in range(3):
        answers.append(api(approver).post("/api/bulk-actions/", signed(body["action"], body), format="json"))
        Job.objects.update(status=JobStatus.SUCCEEDED)  # none active: only the rate counts here
    # then the third is 429 with the time to wait
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert answers[2].json()["code"] == "throttled" and int(answers[2]["Retry-After"]) > 0


def test_a_user_with_too_many_active_bulks_is_told_to_wait(api, people, enqueued, settings):
    settings.BULK_MAX_ACTIVE_PER_USER = 2
    requester, approver = people
    body = {"entity": "withdrawal", "action": "approve", "ids": ["00000000-0000-4000-8000-000000000001"]}
    answers = [api(approver).post("/api/bulk-actions/", signed(body["action"], body), format="json") for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert answers[2].json()["code"] == "throttled" and answers[2]["Retry-After"] == "5"
    # and another user of the unit is not held up by it
    other = UserFactory(unit=approver.unit, role=Role.APPROVER)
    assert api(other).post("/api/bulk-actions/", signed(body["action"], body), format="json").status_code == 202


def test_a_round_that_loses_the_database_is_retried_in_the_same_delivery(people, monkeypatch):
    # given a bulk job whose first two rounds fail on a dropped database connection
    from django.db import OperationalError

    from backend.jobs import services

    requester, approver = people
    ids = [str(r.id) for r in pending_requests_fast("withdrawal", requester, 3)]
    job = _bulk(approver, ids)
    real, calls = services._round, {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise OperationalError("server closed the connection unexpectedly")
        return real(*args, **kwargs)

    monkeypatch.setattr(services, "_round", flaky)
    monkeypatch.setattr(services, "ROUND_RETRY_DELAYS", (0.01, 0.01, 0.01))
    monkeypatch.setattr(services.connection, "close", lambda: None)  # (the test's own transaction stays)

    # when the job runs
    job = job_execute(job_id=str(job.id))

    # then it succeeded in this one delivery, after two retries
    assert (job.status, job.attempts, calls["n"]) == (JobStatus.SUCCEEDED, 1, 3)


def test_a_round_that_keeps_losing_the_database_goes_to_celerys_retry(people, monkeypatch):
    from django.db import OperationalError

    from backend.jobs import services

    requester, approver = people
    job = _bulk(approver, [str(r.id) for r in pending_requests_fast("withdrawal", requester, 1)])
    monkeypatch.setattr(services, "_round", mock.Mock(side_effect=OperationalError("gone")))
    monkeypatch.setattr(services, "ROUND_RETRY_DELAYS", (0.01, 0.01))
    monkeypatch.setattr(services.connection, "close", lambda: None)

    with pytest.raises(OperationalError):
        job_execute(job_id=str(job.id))
    assert services._round.call_count == 3

"""Workers that die or overrun at the dangerous moments, on real processes:

- SIGKILLed in the middle of a job (change written, not committed): Redis redelivers the task after
  the visibility timeout and the next worker applies it exactly once;
- SIGKILLed after COMMIT, before the events were published: the relay (a real relay process)
  publishes them, each seq once, in order;
- past the task's time limit: the job ends `failed` and nothing of it is applied.

"The middle" and "after COMMIT" are made exact by the fault points `job.before_commit` and
`outbox.before_publish` (backend/common/faults.py; armed only by the test settings). Each
test runs its own workers on a private queue with a short visibility timeout, so the session
worker never takes their tasks.
"""

from __future__ import annotations

import time

import pytest

from backend.accounts.models import Role
from backend.events.models import OutboxEvent, UnitSequence
from backend.jobs.models import Job, JobStatus
from backend.records.models import Crate, CrateStatus, RequestStatus, WithdrawalRequest
from bench import processes
from tests.support.factories import CrateFactory, UnitFactory, UserFactory, make_request
from tests.support.pipeline import SHORT_VISIBILITY_TIMEOUT, wait_until
from tests.support.queues import enqueue_on
from tests.support.signing import signed

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def withdrawal_scene():
    unit = UnitFactory()
    requester = UserFactory(unit=unit, role=Role.REQUESTER)
    approver = UserFactory(unit=unit, role=Role.APPROVER)
    crates = [CrateFactory(unit=unit), CrateFactory(unit=unit)]
    request = make_request("withdrawal", requester, crates)
    return unit, approver, crates, request


def kill_when_printed(worker: processes.LiveProcess, text: str) -> float:
    """SIGKILL the worker's whole process group as soon as it prints `text`; returns the moment."""
    worker.wait_for_output(text, timeout=30)
    worker.kill()
    worker.popen.wait(10)
    return time.monotonic()


def wait_out_the_visibility_timeout(since: float) -> None:
    """The task was delivered before `since`; once the visibility timeout has passed, a worker
    starting up restores it to its queue (kombu scans the unacked index when its loop starts)."""
    time.sleep(max(0.0, since + SHORT_VISIBILITY_TIMEOUT + 1 - time.monotonic()))


def approval_events(unit) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for object_id, action in OutboxEvent.objects.filter(unit=unit).values_list("object_id", "action"):
        counts[(str(object_id), action)] = counts.get((str(object_id), action), 0) + 1
    return counts


def test_a_worker_killed_in_the_middle_of_a_job_is_replaced_and_the_job_applied_once(
    api, listen, crash_env, private_queue, own_processes
):
    # given a worker that pauses inside the job's transaction, after the change is written
    unit, approver, crates, request = withdrawal_scene()
    before = UnitSequence.objects.get(unit=unit).last_seq
    listener = listen(units=[unit.id])
    first = processes.start_worker(
        {**crash_env, "FAULT_POINTS": "job.before_commit=pause:20"}, name="doomed", queues=private_queue
    )
    own_processes.append(first)

    # when an approval reaches it and it is SIGKILLed (the whole process group) during that pause
    with enqueue_on(private_queue):
        job_id = api(approver).post(f"/api/withdrawal-requests/{request.id}/approve/", signed("approve")).json()["job"]["id"]
    killed_at = kill_when_printed(first, f"fault point job.before_commit reached (pause) job={job_id}")

    # then nothing it wrote survived and nothing was broadcast
    job = Job.objects.get(id=job_id)
    assert (job.status, job.attempts) == (JobStatus.RUNNING, 1)
    assert WithdrawalRequest.objects.get(id=request.id).status == RequestStatus.PENDING
    assert UnitSequence.objects.get(unit=unit).last_seq == before
    assert listener.frames(unit.id) == []

    # when a new worker starts after the visibility timeout
    wait_out_the_visibility_timeout(killed_at)
    own_processes.append(processes.start_worker(crash_env, name="successor", queues=private_queue))

    # then Redis redelivered the task and the job succeeded on its second attempt
    wait_until(lambda: Job.objects.get(id=job_id).status == JobStatus.SUCCEEDED, 30, "the redelivered job")
    job = Job.objects.get(id=job_id)
    assert job.attempts == 2
    # and the transition happened once: one version bump, one event per object, seqs without a gap
    request.refresh_from_db()
    assert (request.status, request.version) == (RequestStatus.APPROVED, 2)
    assert {(c.status, c.version) for c in Crate.objects.filter(unit=unit)} == {(CrateStatus.WITHDRAWN, 2)}
    expected = {(str(request.id), "created"): 1, (str(request.id), "updated"): 1}
    expected |= {(str(c.id), "updated"): 1 for c in crates}
    assert approval_events(unit) == expected
    frames = listener.wait_frames(unit.id, 3)
    assert [f["seq"] for f in frames] == [before + 1, before + 2, before + 3]
    assert listener.frames_after(unit.id) == frames


def test_events_committed_by_a_worker_killed_before_publishing_are_published_by_the_sweeper(
    api, listen, live_env, crash_env, private_queue, own_processes
):
    # given a worker that pauses between COMMIT and publishing the job's events
    unit, approver, crates, request = withdrawal_scene()
    before = UnitSequence.objects.get(unit=unit).last_seq
    listener = listen(units=[unit.id])
    first = processes.start_worker(
        {**crash_env, "FAULT_POINTS": "outbox.before_publish=pause:20"}, name="doomed", queues=private_queue
    )
    own_processes.append(first)

    # when an approval reaches it and it is SIGKILLed during that pause
    with enqueue_on(private_queue):
        job_id = api(approver).post(f"/api/withdrawal-requests/{request.id}/approve/", signed("approve")).json()["job"]["id"]
    killed_at = kill_when_printed(first, "fault point outbox.before_publish reached (pause) events=3")

    # then the change and its events are committed, but unpublished and unheard
    assert Job.objects.get(id=job_id).status == JobStatus.SUCCEEDED
    assert WithdrawalRequest.objects.get(id=request.id).status == RequestStatus.APPROVED
    stranded = list(OutboxEvent.objects.filter(unit=unit, seq__gt=before).order_by("seq"))
    assert [(e.seq, e.published_at) for e in stranded] == [(before + 1, None), (before + 2, None), (before + 3, None)]
    assert listener.frames_after(unit.id) == []

    # when a worker (it also takes the approval task Redis redelivers) and the relay run
    wait_out_the_visibility_timeout(killed_at)
    own_processes.append(processes.start_worker(crash_env, name="rescuer", queues=f"default,{private_queue}"))
    own_processes.append(processes.start_relay(live_env))

    # then the relay published every stranded event, each seq once, in seq order
    frames = listener.wait_frames(unit.id, 3, timeout=30)
    assert [f["seq"] for f in frames] == [before + 1, before + 2, before + 3]
    assert [(f["entity"], f["data"]["id"]) for f in frames[:1]] == [("withdrawal", str(request.id))]
    wait_until(lambda: not OutboxEvent.objects.filter(unit=unit, published_at__isnull=True).exists(),
               what="published_at on every stranded event")
    # and the redelivered approval was a no-op: the job is still the one success, nothing re-applied
    wait_until(lambda: f"withdrawal.approve[{job_id}] succeeded" in own_processes[-2].output(), 30,
               "the redelivered approval to run")
    job = Job.objects.get(id=job_id)
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1)
    assert OutboxEvent.objects.filter(unit=unit, seq__gt=before).count() == 3
    assert listener.frames_after(unit.id) == frames  # more sweeps: nothing published twice


def test_a_job_that_overruns_its_time_limit_ends_failed_and_applies_nothing(
    api, listen, crash_env, private_queue, own_processes
):
    # given a worker whose jobs stop at a 1 s soft time limit, and a job that would take 20 s
    unit, approver, crates, request = withdrawal_scene()
    before = UnitSequence.objects.get(unit=unit).last_seq
    listener = listen(units=[unit.id], users=[approver.id])
    env = {**crash_env, "CELERY_TASK_SOFT_TIME_LIMIT": "1", "FAULT_POINTS": "job.before_commit=pause:20"}
    own_processes.append(processes.start_worker(env, name="overrun", queues=private_queue))

    # when an approval runs on it
    with enqueue_on(private_queue):
        job_id = api(approver).post(f"/api/withdrawal-requests/{request.id}/approve/", signed("approve")).json()["job"]["id"]

    # then the job ends failed with a clear error instead of staying `running` for good
    wait_until(lambda: Job.objects.get(id=job_id).status == JobStatus.FAILED, 20, "the job to fail")
    job = Job.objects.get(id=job_id)
    assert job.error == {"code": "time_limit_exceeded", "message": "The job ran past its time limit and was stopped."}
    assert job.progress == {"total": 1, "done": 1, "failed": 1}
    assert listener.wait_for(lambda: listener.job_statuses(job_id)[-1:] == ["failed"] and listener.job_statuses(job_id)) == [
        "running", "failed"
    ]
    # and nothing of it was applied or broadcast
    request.refresh_from_db()
    assert (request.status, request.version) == (RequestStatus.PENDING, 1)
    assert {(c.status, c.version) for c in Crate.objects.filter(unit=unit)} == {(CrateStatus.IN_STORAGE, 1)}
    assert UnitSequence.objects.get(unit=unit).last_seq == before
    assert listener.frames_after(unit.id) == []

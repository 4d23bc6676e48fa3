"""The job pipeline on real processes: HTTP -> Job row -> task on a real worker -> one transaction ->
broadcast after COMMIT, heard by a real channel-layer listener (what Daphne's hub is).

Crash recovery (workers killed mid-task or between COMMIT and publish) is in test_crash_recovery.py.
"""

from __future__ import annotations

import json
import threading
from unittest import mock

import httpx
import jsonschema
import pytest
from django.db import connection, transaction
from django.test import override_settings

from backend.accounts.models import Role
from backend.common.faults import parse_fault_points
from backend.events.models import OutboxEvent
from backend.events.schema import DATA_UPDATE_SCHEMA
from backend.jobs.models import Job, JobStatus
from backend.jobs.services import job_execute
from backend.records.models import Crate, CrateStatus, RequestStatus, TransferRequest, WithdrawalRequest
from backend.records.services import transitions
from tests.support.auth import access_token
from tests.support.db import last_seq, outbox_after
from tests.support.factories import CrateFactory, UnitFactory, UserFactory, make_request
from tests.support.pipeline import held_enqueue, release, requires_postgres, wait_until
from tests.support.signing import sign, signed, transition_now

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def event_counts(unit) -> dict[tuple[str, str], int]:
    """How many outbox events each (object id, action) has in `unit`."""
    counts: dict[tuple[str, str], int] = {}
    for object_id, action in OutboxEvent.objects.filter(unit=unit).values_list("object_id", "action"):
        counts[(str(object_id), action)] = counts.get((str(object_id), action), 0) + 1
    return counts


def poll_job(http: httpx.Client, url: str, timeout: float = 20.0) -> list[dict]:
    """GET the job until it is finished; every body seen, the last one finished."""
    seen: list[dict] = []

    def finished() -> bool:
        seen.append(http.get(url).json())
        return seen[-1]["status"] in ("succeeded", "failed")

    wait_until(finished, timeout, what=f"{url} to finish")
    return seen


def withdrawal_scene(crate_count: int = 2):
    unit = UnitFactory()
    requester = UserFactory(unit=unit, role=Role.REQUESTER)
    approver = UserFactory(unit=unit, role=Role.APPROVER)
    crates = [CrateFactory(unit=unit) for _ in range(crate_count)]
    request = make_request("withdrawal", requester, crates)
    return unit, approver, crates, request


def test_an_approval_runs_as_a_job_and_its_events_are_broadcast_in_seq_order(daphne, worker, listen):
    # given a pending withdrawal of two crates, and a listener on the unit's and the approver's groups
    unit, approver, crates, request = withdrawal_scene()
    before = last_seq(unit)
    listener = listen(units=[unit.id], users=[approver.id])
    auth = {"Authorization": f"Bearer {access_token(approver)}"}

    # when the approver approves over HTTP (a live Daphne) and follows the job until it is finished
    with httpx.Client(base_url=f"http://127.0.0.1:{daphne}", headers=auth, timeout=15) as http:
        answer = http.post(f"/api/withdrawal-requests/{request.id}/approve/", json=signed("approve"))
        job_id = answer.json()["job"]["id"]
        polled = poll_job(http, answer.headers["Location"])
    frames = listener.wait_frames(unit.id, 3)
    statuses = listener.wait_for(lambda: "succeeded" in listener.job_statuses(job_id) and listener.job_statuses(job_id))

    # then the request was accepted as a queued job that went running -> succeeded
    assert answer.status_code == 202
    assert answer.headers["Location"] == f"/api/jobs/{job_id}/"
    assert answer.json()["job"]["status"] == "queued"
    assert statuses == ["running", "succeeded"]
    assert {body["status"] for body in polled} <= {"queued", "running", "succeeded"}
    job = polled[-1]
    assert (job["kind"], job["status"], job["error"]) == ("withdrawal.approve", "succeeded", None)
    assert job["progress"] == {"total": 1, "done": 1, "failed": 0}
    assert job["result"] == {"id": str(request.id), "status": "approved", "version": 2}
    # and the change is durable: request approved, both crates withdrawn
    assert WithdrawalRequest.objects.get(id=request.id).status == RequestStatus.APPROVED
    assert set(Crate.objects.filter(unit=unit).values_list("status", flat=True)) == {CrateStatus.WITHDRAWN}
    # and the outbox holds one event per object with consecutive seqs, all published
    events = outbox_after(unit, before)
    assert [e.seq for e in events] == [before + 1, before + 2, before + 3]
    assert [(e.entity, e.action) for e in events] == [("withdrawal", "updated"), ("crate", "updated"), ("crate", "updated")]
    assert str(events[0].object_id) == str(request.id)
    assert {str(e.object_id) for e in events[1:]} == {str(c.id) for c in crates}
    wait_until(lambda: not OutboxEvent.objects.filter(unit=unit, published_at__isnull=True).exists(),
               what="published_at on every event")
    # and the listener heard exactly those frames, in seq order, each a valid data_update
    assert frames == [json.loads(e.frame) for e in events]
    for frame in frames:
        jsonschema.validate(frame, DATA_UPDATE_SCHEMA)
    assert frames[0]["data"] == {
        "id": str(request.id), "status": "approved", "request_number": request.request_number, "actor": approver.username,
    }
    assert [(f["type"], f["entity"], f["action"]) for f in frames[1:]] == [("data_update", "crate", "updated")] * 2
    assert listener.frames_after(unit.id) == frames


def test_a_change_that_rolls_back_is_never_broadcast_and_gives_its_seq_back(listen):
    # given a pending withdrawal and a listener on its unit
    unit, approver, crates, request = withdrawal_scene()
    before = last_seq(unit)
    listener = listen(units=[unit.id])

    # when the approval service runs in a transaction that then rolls back
    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        transition_now(entity="withdrawal", action="approve", actor=approver, request_id=request.id,
            signature_id=sign(approver, "withdrawal", "approve"))
        raise Abort

    # then nothing is broadcast, no outbox row remains and the unit's counter is unchanged
    assert listener.frames_after(unit.id) == []
    assert outbox_after(unit, before) == []
    assert last_seq(unit) == before
    assert WithdrawalRequest.objects.get(id=request.id).status == RequestStatus.PENDING

    # and when the same change commits, it is heard with the very next seq (nothing was skipped)
    transition_now(entity="withdrawal", action="approve", actor=approver, request_id=request.id,
        signature_id=sign(approver, "withdrawal", "approve"))
    assert [f["seq"] for f in listener.wait_frames(unit.id, 3)] == [before + 1, before + 2, before + 3]


def test_events_are_broadcast_only_once_their_transaction_commits(listen):
    # given a pending withdrawal and a listener on its unit
    unit, approver, crates, request = withdrawal_scene()
    before = last_seq(unit)
    listener = listen(units=[unit.id])
    written, commit = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def approve_and_hold_the_transaction_open():
        try:
            with transaction.atomic():
                transition_now(entity="withdrawal", action="approve", actor=approver, request_id=request.id,
                    signature_id=sign(approver, "withdrawal", "approve"))
                written.set()  # outbox_write has run inside this transaction
                assert commit.wait(30)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connection.close()

    # when another thread has written the change and its outbox events but not committed yet
    thread = threading.Thread(target=approve_and_hold_the_transaction_open)
    thread.start()
    assert written.wait(20)

    # then the listener hears nothing and the events are invisible outside that transaction
    assert listener.frames_after(unit.id) == []
    assert outbox_after(unit, before) == []

    # and when it commits, the events arrive, in seq order
    commit.set()
    thread.join(20)
    assert errors == []
    frames = listener.wait_frames(unit.id, 3)
    assert [(f["seq"], f["entity"]) for f in frames] == [(before + 1, "withdrawal"), (before + 2, "crate"), (before + 3, "crate")]


def relocation_scene():
    unit = UnitFactory()
    store = UserFactory(unit=unit, role=Role.STORE)
    crate = CrateFactory(unit=unit, location="Aisle 1")
    return unit, store, crate


def test_a_job_delivered_twice_by_the_broker_is_applied_once(worker, api, listen):
    # given a relocation job (relocating is not idempotent by itself: each run bumps the version)
    unit, store, crate = relocation_scene()
    listener = listen(units=[unit.id])
    with held_enqueue() as held:
        answer = api(store).post(f"/api/crates/{crate.id}/relocate/", {"location": "Vault 7"})
    job_id = answer.json()["job"]["id"]

    # when its task message reaches the real worker twice (same task id, as a redelivery would)
    release(held)
    release(held)
    wait_until(lambda: worker.output().count(f"crate.relocate[{job_id}] succeeded") == 2, what="both deliveries run")

    # then the job ran once: one attempt, one version bump, one event
    job = Job.objects.get(id=job_id)
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1)
    crate.refresh_from_db()
    assert (crate.location, crate.version) == ("Vault 7", 2)
    assert event_counts(unit) == {(str(crate.id), "updated"): 1}
    listener.wait_frames(unit.id, 1)
    assert [f["data"]["id"] for f in listener.frames_after(unit.id)] == [str(crate.id)]


def test_two_concurrent_deliveries_of_one_job_apply_it_once(api, listen):
    # given a queued relocation job
    unit, store, crate = relocation_scene()
    listener = listen(units=[unit.id])
    with held_enqueue():
        job_id = api(store).post(f"/api/crates/{crate.id}/relocate/", {"location": "Vault 8"}).json()["job"]["id"]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def deliver():
        try:
            start.wait(10)
            job_execute(job_id=job_id)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connection.close()

    # when two deliveries run at once, the first holding its transaction open for a moment, so the
    # second gets past the "already finished?" check and has to wait for the job row's lock
    with override_settings(FAULT_POINTS=parse_fault_points("job.before_commit=pause:1")):
        threads = [threading.Thread(target=deliver) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

    # then both deliveries were counted but the change was applied once
    assert errors == []
    job = Job.objects.get(id=job_id)
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 2)
    crate.refresh_from_db()
    assert (crate.location, crate.version) == ("Vault 8", 2)
    assert event_counts(unit) == {(str(crate.id), "updated"): 1}
    listener.wait_frames(unit.id, 1)
    assert [f["data"]["id"] for f in listener.frames_after(unit.id)] == [str(crate.id)]


def test_approving_a_rejected_request_is_refused_at_the_request(api):
    # given a request that was rejected
    unit, approver, crates, request = withdrawal_scene(crate_count=1)
    transition_now(entity="withdrawal", action="reject", actor=approver, request_id=request.id, reason="no",
        signature_id=sign(approver, "withdrawal", "reject"))

    # when the approver tries to approve it
    answer = api(approver).post(f"/api/withdrawal-requests/{request.id}/approve/", signed("approve"))

    # then 409 with the stable code, and no job was queued
    assert answer.status_code == 409
    assert answer.json()["code"] == "invalid_transition"
    assert not Job.objects.filter(unit=unit).exists()


def test_a_transition_that_becomes_illegal_after_queueing_fails_the_job_and_changes_nothing(worker, api, listen):
    # given two approvals of the same pending request, both accepted while it was still pending
    unit, approver, crates, request = withdrawal_scene()
    listener = listen(users=[approver.id])
    with held_enqueue() as held:
        answers = [api(approver).post(f"/api/withdrawal-requests/{request.id}/approve/", signed("approve")) for _ in range(2)]
    assert [a.status_code for a in answers] == [202, 202]
    first, second = (a.json()["job"]["id"] for a in answers)

    # when the worker runs both, in order
    release(held)
    wait_until(lambda: Job.objects.filter(unit=unit, finished_at__isnull=False).count() == 2, what="both jobs finish")

    # then the first approved the request and the second failed with a clear error
    done = {str(job.id): job for job in Job.objects.filter(unit=unit)}
    assert done[first].status == JobStatus.SUCCEEDED
    assert done[second].status == JobStatus.FAILED
    assert done[second].error["code"] == "invalid_transition"
    assert request.request_number in done[second].error["message"] and "approved" in done[second].error["message"]
    assert done[second].progress == {"total": 1, "done": 1, "failed": 1}
    assert listener.wait_for(lambda: listener.job_statuses(second)[-1:] == ["failed"] and listener.job_statuses(second))
    # and nothing was applied twice: each crate changed once, one event per object
    assert {(c.status, c.version) for c in Crate.objects.filter(unit=unit)} == {(CrateStatus.WITHDRAWN, 2)}
    assert WithdrawalRequest.objects.get(id=request.id).version == 2
    expected = {(str(request.id), "created"): 1, (str(request.id), "updated"): 1}
    expected |= {(str(c.id), "updated"): 1 for c in crates}
    assert event_counts(unit) == expected


def transfer_scene(source, destination, crate_count: int = 2):
    requester = UserFactory(unit=source, role=Role.REQUESTER)
    approver = UserFactory(unit=source, role=Role.APPROVER)
    crates = [CrateFactory(unit=source) for _ in range(crate_count)]
    request = make_request("transfer", requester, crates, destination_unit_id=destination.id)
    return approver, crates, request


def test_a_transfer_reaches_both_units_each_with_its_own_seq(worker, api, listen):
    # given a transfer of two crates from unit A to unit B, and a listener on each unit
    unit_a, unit_b = UnitFactory(), UnitFactory()
    approver, crates, request = transfer_scene(unit_a, unit_b)
    seq_a, seq_b = last_seq(unit_a), last_seq(unit_b)
    hears_a, hears_b = listen(units=[unit_a.id]), listen(units=[unit_b.id])

    # when the transfer is approved through the worker
    answer = api(approver).post(f"/api/transfer-requests/{request.id}/approve/", signed("approve"))
    assert answer.status_code == 202
    frames_a, frames_b = hears_a.wait_frames(unit_a.id, 3), hears_b.wait_frames(unit_b.id, 3)

    # then A hears the request approved and its crates leave, with A's next seqs
    crate_ids = {str(c.id) for c in crates}
    assert [f["seq"] for f in frames_a] == [seq_a + 1, seq_a + 2, seq_a + 3]
    assert (frames_a[0]["entity"], frames_a[0]["data"]["status"]) == ("transfer", "approved")
    assert {(f["entity"], f["action"], f["data"]["id"]) for f in frames_a[1:]} == {("crate", "deleted", i) for i in crate_ids}
    # and B hears the same request and its crates arrive, with B's own next seqs
    assert [f["seq"] for f in frames_b] == [seq_b + 1, seq_b + 2, seq_b + 3]
    assert (frames_b[0]["entity"], frames_b[0]["data"]["status"]) == ("transfer", "approved")
    assert {(f["entity"], f["action"], f["data"]["id"]) for f in frames_b[1:]} == {("crate", "created", i) for i in crate_ids}
    # and each listener heard only its own unit
    assert hears_a.frames(unit_b.id) == [] and hears_b.frames(unit_a.id) == []
    assert set(Crate.objects.filter(id__in=crate_ids).values_list("unit_id", flat=True)) == {unit_b.id}


@pytest.mark.postgres
@requires_postgres
def test_opposite_transfers_approved_at_the_same_moment_do_not_deadlock(api, listen):
    # given a transfer A->B and a transfer B->A, both queued
    unit_a, unit_b = UnitFactory(), UnitFactory()
    approver_a, crates_a, a_to_b = transfer_scene(unit_a, unit_b)
    approver_b, crates_b, b_to_a = transfer_scene(unit_b, unit_a)
    seq_a, seq_b = last_seq(unit_a), last_seq(unit_b)
    listener = listen(units=[unit_a.id, unit_b.id])
    with held_enqueue():
        jobs = [
            api(approver_a).post(f"/api/transfer-requests/{a_to_b.id}/approve/", signed("approve")).json()["job"]["id"],
            api(approver_b).post(f"/api/transfer-requests/{b_to_a.id}/approve/", signed("approve")).json()["job"]["id"],
        ]

    # when both run at once (two deliveries in two threads of this process, as two worker processes
    # would), both holding their request and crate locks before either takes a unit counter (each
    # transaction needs both units' counters)
    both_hold_their_rows = threading.Barrier(2)
    real_journal_write = transitions.journal_write
    errors: list[BaseException] = []

    def journal_write_when_both_are_ready(*, actor, changes, entries):
        both_hold_their_rows.wait(15)
        return real_journal_write(actor=actor, changes=changes, entries=entries)

    def work(job_id):
        try:
            job_execute(job_id=job_id)
        except BaseException as exc:  # noqa: BLE001 - a deadlock shows up here
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(job_id,)) for job_id in jobs]
    with mock.patch.object(transitions, "journal_write", journal_write_when_both_are_ready):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(40)

    # then both complete, without a deadlock, and each unit's seqs stay gap-free
    assert errors == []
    assert [Job.objects.get(id=j).status for j in jobs] == [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]
    assert set(TransferRequest.objects.values_list("status", flat=True)) == {RequestStatus.APPROVED}
    assert [e.seq for e in outbox_after(unit_a, seq_a)] == list(range(seq_a + 1, seq_a + 7))
    assert [e.seq for e in outbox_after(unit_b, seq_b)] == list(range(seq_b + 1, seq_b + 7))
    assert [f["seq"] for f in listener.wait_frames(unit_a.id, 6)] == list(range(seq_a + 1, seq_a + 7))
    assert [f["seq"] for f in listener.wait_frames(unit_b.id, 6)] == list(range(seq_b + 1, seq_b + 7))
    assert {c.unit_id for c in Crate.objects.filter(id__in=[c.id for c in crates_a])} == {unit_b.id}
    assert {c.unit_id for c in Crate.objects.filter(id__in=[c.id for c in crates_b])} == {unit_a.id}

"""Notifications: written in the transaction of their cause (never for a rolled-back change), sent
after COMMIT, one per decided request and one per job, the destruction-due alert once per crate,
threshold and user (even run twice at once), and the API that lists and marks them."""

from __future__ import annotations

import uuid
from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from backend.accounts.models import Role
from backend.accounts.signatures import signature_sign
from backend.common.errors import SignatureInvalid, SignatureLocked
from backend.jobs.services import job_execute, job_fail, job_submit
from backend.notifications.models import Notification
from backend.notifications.services import Draft, notify
from backend.records.job_kinds import RELOCATE, TRANSITION_KINDS
from backend.records.services.notices import destruction_due_notify
from tests.support.factories import (
    CrateFactory,
    UnitFactory,
    UserFactory,
    destruction_due_world,
    make_request,
    pending_requests_fast,
    unit_staff,
)
from tests.support.signing import decided, sign, transition_now


class Rollback(Exception):
    pass


@pytest.fixture
def sent(monkeypatch) -> list:
    """What was handed to the channel layer after COMMIT: {user id: [notification, ...]} per call."""
    calls: list = []
    monkeypatch.setattr("backend.notifications.services.notifications_send", calls.append)
    return calls


def _of(user, kind=None) -> list[Notification]:
    rows = Notification.objects.filter(user=user)
    return list(rows.filter(kind=kind) if kind else rows)


def _sent_ids(sent) -> list[str]:
    return [n["id"] for call in sent for items in call.values() for n in items]


# --- the API ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_api_lists_only_mine_newest_first_filters_unread_and_marks_read(api):
    unit = UnitFactory()
    me, other = UserFactory(unit=unit), UserFactory(unit=unit)
    now = timezone.now()
    with transaction.atomic():
        mine = notify(Draft(me.id, "job_finished", f"job {i}", "", "job", uuid.uuid4()) for i in range(3))
        theirs = notify([Draft(other.id, "job_finished", "theirs", "", "job", uuid.uuid4())])
    for i, row in enumerate(mine):  # distinct times: oldest first as written
        Notification.objects.filter(id=row.id).update(created_at=now - timedelta(minutes=10 - i))
    client = api(me)

    listed = client.get("/api/notifications/").json()
    assert listed["count"] == 3 and {"next", "previous"} <= set(listed)
    assert [n["title"] for n in listed["results"]] == ["job 2", "job 1", "job 0"]
    assert set(listed["results"][0]) == {"id", "kind", "title", "body", "link", "created_at", "read"}
    assert listed["results"][0]["link"] == {"entity": "job", "id": str(mine[2].link_id)}

    read = client.post(f"/api/notifications/{mine[0].id}/read/")
    assert read.status_code == 200 and read.json()["read"] is True
    assert [n["title"] for n in client.get("/api/notifications/?unread=1").json()["results"]] == ["job 2", "job 1"]

    # another user's notification does not exist for me, and stays unread
    assert client.post(f"/api/notifications/{theirs[0].id}/read/").status_code == 404
    assert Notification.objects.get(id=theirs[0].id).read_at is None

    assert client.post("/api/notifications/read-all/").json() == {"marked": 2}
    assert client.get("/api/notifications/?unread=1").json()["count"] == 0
    assert Notification.objects.get(id=theirs[0].id).read_at is None
    assert api().get("/api/notifications/").status_code == 401


# --- request_decided, transfer_incoming ------------------------------------------------------------


@pytest.mark.django_db
def test_a_decision_notifies_the_creator_after_commit_and_a_rolled_back_one_nobody(
    sent, django_capture_on_commit_callbacks
):
    unit = UnitFactory()
    staff = unit_staff(unit)
    requester, approver = staff["requester"], staff["approver"]
    kept, undone = make_request("withdrawal", requester), make_request("withdrawal", requester)

    # a decision whose transaction rolls back leaves no notification and sends nothing
    with pytest.raises(Rollback), transaction.atomic():
        transition_now(entity="withdrawal", action="send_back", actor=approver, request_id=undone.id,
                                    reason="fix", signature_id=sign(approver, "withdrawal", "send_back"))
        raise Rollback
    assert _of(requester) == [] and sent == []

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        transition_now(entity="withdrawal", action="send_back", actor=approver, request_id=kept.id,
                                    reason="the crate list is wrong", signature_id=sign(approver, "withdrawal", "send_back"))
    (row,) = _of(requester, "request_decided")
    assert sent == []  # written with the change; not sent before COMMIT
    for callback in callbacks:
        callback()
    assert _sent_ids(sent) == [str(row.id)]
    assert (row.link_entity, row.link_id, row.title) == ("withdrawal", kept.id, f"{kept.request_number} sent back")
    assert "the crate list is wrong" in row.body and approver.username in row.body
    # the approver and the unit's others get no request_decided
    assert _of(approver, "request_decided") == [] and _of(staff["admin"]) == []


@pytest.mark.django_db
def test_a_bulk_decision_notifies_each_creator_once_per_request_and_the_decider_once(
    sent, django_capture_on_commit_callbacks
):
    unit = UnitFactory()
    ann, bob = UserFactory(unit=unit), UserFactory(unit=unit)
    approver = UserFactory(unit=unit, role=Role.APPROVER)
    ids = [r.id for r in pending_requests_fast("withdrawal", ann, 3)]
    ids += [make_request("withdrawal", bob).id for _ in range(2)]
    job = decided(approver, "withdrawal", "approve", ids)

    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
        job_execute(job_id=str(job.id))

    assert len(_of(ann, "request_decided")) == 3 and len(_of(bob, "request_decided")) == 2
    # one notification for the job, not one per item
    (done,) = _of(approver)
    assert (done.kind, done.link_id, done.body) == ("job_finished", job.id, "5 of 5 succeeded, 0 refused.")
    # set-based: the chunk's five notifications are one INSERT (plus the job's own)
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('INSERT INTO "notifications_notification"')]
    assert len(inserts) == 2
    assert sorted(_sent_ids(sent)) == sorted(str(n.id) for n in Notification.objects.all())


@pytest.mark.django_db
def test_a_transfer_filed_or_resubmitted_notifies_the_destinations_approvers_and_admins(sent):
    source, destination, elsewhere = UnitFactory(), UnitFactory(), UnitFactory()
    here, there, far = unit_staff(source), unit_staff(destination), unit_staff(elsewhere)

    transfer = make_request("transfer", here["requester"], destination_unit_id=destination.id)
    transition_now(entity="transfer", action="send_back", actor=here["approver"], request_id=transfer.id,
                                reason="which crates?", signature_id=sign(here["approver"], "transfer", "send_back"))
    transition_now(entity="transfer", action="resubmit", actor=here["requester"], request_id=transfer.id)

    for role in ("approver", "admin"):
        rows = _of(there[role], "transfer_incoming")
        assert [r.link_id for r in rows] == [transfer.id, transfer.id]
        assert {r.body.split()[1] for r in rows} == {"filed", "resubmitted"}
    for user in (there["requester"], there["store"], *here.values(), *far.values()):
        assert _of(user, "transfer_incoming") == []

    # filing that rolls back tells nobody
    with pytest.raises(Rollback), transaction.atomic():
        make_request("transfer", here["requester"], destination_unit_id=destination.id)
        raise Rollback
    assert len(_of(there["approver"], "transfer_incoming")) == 2


# --- job_finished, job_failed, signature_locked ----------------------------------------------------


@pytest.mark.django_db
def test_a_job_tells_its_requester_when_it_ends(sent):
    unit = UnitFactory()
    staff = unit_staff(unit)
    store, requester, approver = staff["store"], staff["requester"], staff["approver"]
    crate = CrateFactory(unit=unit)
    with mock.patch("backend.jobs.queue.enqueue"):
        moved = job_submit(actor=store, kind=RELOCATE,
                           targets=[str(crate.id)], params={"location": "Bay 9"}, description=f"relocate it by {store.username}")
        request = make_request("withdrawal", requester)
        stale = job_submit(actor=approver, kind=TRANSITION_KINDS["withdrawal", "approve"], targets=[str(request.id)],
                           params={"expected_version": 7, "signature_id": str(sign(approver, "withdrawal", "approve"))})
        broken = job_submit(actor=store, kind=TRANSITION_KINDS["withdrawal", "resubmit"], targets=[str(request.id)])

    job_execute(job_id=str(moved.id))
    job_execute(job_id=str(stale.id))
    job_fail(job_id=broken.id, error={"code": "internal_error", "message": "It broke."})
    job_fail(job_id=broken.id, error={"code": "internal_error", "message": "again"})  # already ended: nothing

    (finished,) = _of(store, "job_finished")
    assert (finished.title, finished.body, finished.link_id) == ("Done: relocate it", "Succeeded.", moved.id)
    (failed,) = _of(approver, "job_failed")
    assert failed.link_id == stale.id and "version" in failed.body
    (stopped,) = _of(store, "job_failed")
    assert (stopped.link_id, stopped.body) == (broken.id, "It broke.")
    assert _of(requester) == []


@pytest.mark.django_db
def test_signing_locked_notifies_the_units_admins_only(sent, settings):
    unit, other = UnitFactory(), UnitFactory()
    staff, others = unit_staff(unit), unit_staff(other)
    approver = staff["approver"]
    for attempt in range(settings.SIGNATURE_MAX_FAILURES):
        expected = SignatureLocked if attempt == settings.SIGNATURE_MAX_FAILURES - 1 else SignatureInvalid
        with pytest.raises(expected):
            signature_sign(user=approver, password="wrong", meaning="approved", expected="approved", action="approve",
                           entity="withdrawal", unit_id=unit.id)
    (row,) = _of(staff["admin"], "signature_locked")
    assert (row.link_entity, row.link_id) == ("user", approver.id) and approver.username in row.title
    assert all(_of(u) == [] for u in (*others.values(), staff["approver"], staff["requester"], staff["store"]))


# --- destruction_due -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_destruction_due_alerts_once_per_crate_threshold_and_user(sent, settings, django_capture_on_commit_callbacks):
    settings.NOTIFY_DESTRUCTION_DUE_DAYS = [30, 7]
    unit, staff, crates = destruction_due_world()
    told = [staff["approver"], staff["store"], staff["admin"]]

    with django_capture_on_commit_callbacks(execute=True):
        assert destruction_due_notify() == 6  # two crates (the 30-day and the 7-day alert) x three users
        assert destruction_due_notify() == 0  # again: nothing new, nothing sent again
    for user in told:
        rows = {(r.link_id, r.threshold) for r in _of(user, "destruction_due")}
        assert rows == {(crates["in_20"].id, 30), (crates["in_3"].id, 7)}
    assert _of(staff["requester"]) == []
    assert Notification.objects.count() == 6 and len(_sent_ids(sent)) == 6

    # two weeks later the 20-day crate is 6 days away: its 7-day alert, once
    later = timezone.now() + timedelta(days=14)
    assert destruction_due_notify(now=later) == 3
    assert destruction_due_notify(now=later) == 0
    assert {r.threshold for r in _of(staff["store"]) if r.link_id == crates["in_20"].id} == {30, 7}

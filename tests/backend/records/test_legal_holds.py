"""Legal holds over HTTP: QA (or a unit admin) places and releases them, signed and with a reason;
a held crate is not destroyed, transferred or deleted, whichever path tries, including an approval
queued before the hold was placed; holds are audited, broadcast and unit-scoped."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from backend.audit.models import AuditEntry, SignedRecord
from backend.events.models import OutboxEvent
from backend.jobs.models import Job, JobOutcome
from backend.jobs.services import job_execute
from backend.notifications.models import Notification
from backend.records.models import Crate, CrateStatus, DestructionRequest, LegalHold
from backend.records.services.holds import hold_place
from backend.records.services.notices import destruction_due_notify
from tests.support.factories import PASSWORD, CrateFactory, UnitFactory, make_request, unit_staff
from tests.support.signing import decided, sign, signed, transition_now

pytestmark = pytest.mark.django_db


def _hold(crates, reason="Smith v. Pharma, case 26-114", meaning="hold", password=PASSWORD) -> dict:
    return {"crates": [str(c.id) for c in crates], "reason": reason,
            "signature": {"password": password, "meaning": meaning}}


def _release(reason="case settled", meaning="released") -> dict:
    return {"reason": reason, "signature": {"password": PASSWORD, "meaning": meaning}}


@pytest.fixture
def world(enqueued):
    unit = UnitFactory(code="own")
    staff = unit_staff(unit)
    return unit, staff


def test_qa_places_a_signed_hold_audited_and_broadcast(api, world):
    unit, staff = world
    crates = [CrateFactory(unit=unit) for _ in range(2)]
    client = api(staff["qa"])

    answer = client.post("/api/legal-holds/", _hold(crates), format="json")

    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert set(body) >= {"id", "crates", "reason", "placed_by", "placed_at", "released_at"}
    assert body["released_at"] is None and body["placed_by"] == str(staff["qa"].id)
    assert sorted(body["crates"]) == sorted(str(c.id) for c in crates)
    for crate in crates:
        shown = client.get(f"/api/crates/{crate.id}/").json()
        assert shown["on_hold"] is True and shown["version"] == 2
    # audited under the signature (meaning `hold`), the hold and each crate
    placed = AuditEntry.objects.get(entity="legal_hold", action="placed")
    assert placed.signature.meaning == "hold" and placed.signature.signer_full_name.strip()
    assert placed.reason == "Smith v. Pharma, case 26-114"
    assert AuditEntry.objects.filter(entity="crate", action="hold_placed", signature=placed.signature).count() == 2
    assert SignedRecord.objects.get(signature=placed.signature).record_id == placed.record_id
    # and broadcast to the unit: the hold, and each crate that changed
    events = set(OutboxEvent.objects.filter(unit=unit).values_list("entity", "action"))
    assert {("legal_hold", "created"), ("crate", "updated")} <= events
    assert client.get("/api/legal-holds/").json()["results"][0]["id"] == body["id"]


@pytest.mark.parametrize(("role", "code"), [("requester", 403), ("approver", 403), ("store", 403),
                                            ("admin", 201), ("qa", 201)])
def test_who_may_place_a_hold(api, world, role, code):
    unit, staff = world
    answer = api(staff[role]).post("/api/legal-holds/", _hold([CrateFactory(unit=unit)]), format="json")
    assert answer.status_code == code, answer.content


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"signature": None}, 400, "signature_required"),
    ({"signature": {"password": PASSWORD, "meaning": "approved"}}, 400, "signature_required"),
    ({"signature": {"password": "wrong-password", "meaning": "hold"}}, 403, "signature_invalid"),
    ({"reason": "  "}, 400, "reason_required"),
    ({"crates": []}, 400, "invalid"),
])
def test_a_hold_without_reason_or_a_valid_signature_is_refused(api, world, body, status, code):
    unit, staff = world
    crate = CrateFactory(unit=unit)
    request_body = {**_hold([crate]), **body}
    if request_body.get("signature") is None:
        request_body.pop("signature")
    answer = api(staff["qa"]).post("/api/legal-holds/", request_body, format="json")
    assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert not LegalHold.objects.exists() and not Crate.objects.get(id=crate.id).on_hold


def test_a_destruction_or_transfer_naming_a_held_crate_is_409_legal_hold(api, world):
    unit, staff = world
    held, free = CrateFactory(unit=unit), CrateFactory(unit=unit)
    assert api(staff["qa"]).post("/api/legal-holds/", _hold([held]), format="json").status_code == 201
    client = api(staff["requester"])

    destruction = client.post("/api/destruction-requests/", {"crates": [str(held.id)]}, format="json")
    transfer = client.post("/api/transfer-requests/", {"crates": [str(held.id)],
                                                       "destination_unit": str(UnitFactory().id)}, format="json")
    withdrawal = client.post("/api/withdrawal-requests/", {"crates": [str(held.id)]}, format="json")
    pending = make_request("destruction", staff["requester"], [free])
    edited = client.patch(f"/api/destruction-requests/{pending.id}/", {"crates": [str(held.id)],
                                                                       "change_reason": "x"}, format="json")
    deleted = api(staff["store"]).delete(f"/api/crates/{held.id}/", {"reason": "tidy up"}, format="json")

    for answer in (destruction, transfer, edited, deleted):
        assert (answer.status_code, answer.json()["code"]) == (409, "legal_hold"), answer.content
    assert destruction.json()["details"] == {"crates": [held.crate_number]}
    assert withdrawal.status_code == 201  # taking it out for use keeps it in the unit's custody


def _approval_queued(staff, crate):
    request = make_request("destruction", staff["requester"], [crate])
    return request, decided(staff["approver"], "destruction", "approve", [request.id])


def test_a_hold_placed_while_an_approval_waits_in_the_queue_stops_it(api, world):
    unit, staff = world
    crate = CrateFactory(unit=unit)
    request = make_request("destruction", staff["requester"], [crate])
    # the approval is accepted and queued (a single one, as the REST action queues it) ...
    answer = api(staff["approver"]).post(f"/api/destruction-requests/{request.id}/approve/", signed("approve"),
                                         format="json")
    assert answer.status_code == 202
    # ... then the hold is placed before a worker takes the job
    assert api(staff["qa"]).post("/api/legal-holds/", _hold([crate]), format="json").status_code == 201

    job = job_execute(job_id=answer.json()["job"]["id"])

    assert job.error["code"] == "legal_hold", job.error
    assert Crate.objects.get(id=crate.id).status == CrateStatus.IN_STORAGE
    assert DestructionRequest.objects.get(id=request.id).status == "pending"
    assert AuditEntry.objects.filter(record_id=request.id, action="signature_not_applied").exists()


def test_a_bulk_approval_of_held_crates_fails_each_with_legal_hold(world):
    unit, staff = world
    held, free = CrateFactory(unit=unit), CrateFactory(unit=unit)
    held_request = make_request("destruction", staff["requester"], [held])
    free_request = make_request("destruction", staff["requester"], [free])
    job = decided(staff["approver"], "destruction", "approve", [held_request.id, free_request.id])
    hold_place(actor=staff["qa"], crate_ids=[held.id], reason="audit by the FDA",
               signature=_signature(staff["qa"], "hold"))

    job_execute(job_id=str(job.id))

    outcomes = dict(JobOutcome.objects.filter(job=job).values_list("target", "code"))
    assert outcomes == {str(held_request.id): "legal_hold", str(free_request.id): ""}
    assert Crate.objects.get(id=held.id).status == CrateStatus.IN_STORAGE
    assert Crate.objects.get(id=free.id).status == CrateStatus.DESTROYED


def _signature(user, meaning):
    from backend.accounts.signatures import signature_sign

    act = {"hold": "hold", "released": "release"}[meaning]
    return signature_sign(user=user, password=PASSWORD, meaning=meaning, expected=meaning, action=act,
                          entity="legal_hold", unit_id=user.unit_id)


def test_release_is_signed_and_frees_crates_no_other_hold_names(api, world):
    unit, staff = world
    both, only_first = CrateFactory(unit=unit), CrateFactory(unit=unit)
    qa = api(staff["qa"])
    first = qa.post("/api/legal-holds/", _hold([both, only_first]), format="json").json()
    qa.post("/api/legal-holds/", _hold([both], reason="second case"), format="json")

    wrong = qa.post(f"/api/legal-holds/{first['id']}/release/", _release(meaning="hold"), format="json")
    no_reason = qa.post(f"/api/legal-holds/{first['id']}/release/", _release(reason=""), format="json")
    released = qa.post(f"/api/legal-holds/{first['id']}/release/", _release(), format="json")
    again = qa.post(f"/api/legal-holds/{first['id']}/release/", _release(), format="json")

    assert (wrong.status_code, wrong.json()["code"]) == (400, "signature_required")
    assert (no_reason.status_code, no_reason.json()["code"]) == (400, "reason_required")
    assert released.status_code == 200 and released.json()["released_at"]
    assert (again.status_code, again.json()["code"]) == (409, "invalid_transition")
    assert Crate.objects.get(id=only_first.id).on_hold is False
    assert Crate.objects.get(id=both.id).on_hold is True  # the second hold still names it
    entry = AuditEntry.objects.get(entity="legal_hold", action="released")
    assert entry.signature.meaning == "released" and entry.reason == "case settled"
    assert AuditEntry.objects.filter(entity="crate", action="hold_released", record_id=only_first.id).exists()
    assert ("legal_hold", "updated") in set(OutboxEvent.objects.values_list("entity", "action"))
    # and the freed crate may be destroyed again
    request = make_request("destruction", staff["requester"], [only_first])
    transition_now(entity="destruction", action="approve", actor=staff["approver"], request_id=request.id,
                   signature_id=sign(staff["approver"], "destruction", "approve"))
    assert Crate.objects.get(id=only_first.id).status == CrateStatus.DESTROYED


def test_a_destroyed_crate_cannot_be_held(api, world):
    unit, staff = world
    crate = CrateFactory(unit=unit, status=CrateStatus.DESTROYED)
    answer = api(staff["qa"]).post("/api/legal-holds/", _hold([crate]), format="json")
    assert (answer.status_code, answer.json()["code"]) == (409, "crate_unavailable")


def test_holds_are_unit_scoped(api, world):
    unit, staff = world
    other = unit_staff(UnitFactory(code="other"))
    mine = CrateFactory(unit=unit)
    hold = api(staff["qa"]).post("/api/legal-holds/", _hold([mine]), format="json").json()
    stranger = api(other["qa"])

    assert stranger.get("/api/legal-holds/").json()["results"] == []
    assert stranger.get(f"/api/legal-holds/{hold['id']}/").status_code == 404
    assert stranger.post(f"/api/legal-holds/{hold['id']}/release/", _release(), format="json").status_code == 404
    foreign = stranger.post("/api/legal-holds/", _hold([mine]), format="json")
    assert (foreign.status_code, foreign.json()["code"]) == (400, "unknown_crate")
    assert LegalHold.objects.count() == 1 and LegalHold.objects.get().released_at is None
    assert api().get("/api/legal-holds/").status_code == 401


def test_destruction_due_says_the_crate_is_on_hold(world):
    unit, staff = world
    soon = timezone.now().date() + timedelta(days=3)
    held, free = CrateFactory(unit=unit, destruction_due=soon), CrateFactory(unit=unit, destruction_due=soon)
    hold_place(actor=staff["qa"], crate_ids=[held.id], reason="litigation", signature=_signature(staff["qa"], "hold"))

    destruction_due_notify()

    held_notes = Notification.objects.filter(link_id=held.id)
    free_notes = Notification.objects.filter(link_id=free.id)
    assert held_notes and all("ON LEGAL HOLD" in n.body and "legal hold" in n.title for n in held_notes)
    assert free_notes and not any("hold" in n.body.lower() for n in free_notes)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("hold_first", [True, False])
def test_a_hold_racing_an_approval_never_leaves_a_held_crate_destroyed(hold_first):
    """Both take the crate's row lock: whichever commits first wins and the other sees it."""
    unit = UnitFactory()
    staff = unit_staff(unit)
    outcomes: dict = {}
    for round_ in range(4):
        crate = CrateFactory(unit=unit)
        request, job = _approval_queued(staff, crate)
        signature = _signature(staff["qa"], "hold")
        barrier = threading.Barrier(2)

        def approve(job=job, barrier=barrier):
            try:
                barrier.wait(10)
                outcomes["approve"] = job_execute(job_id=str(job.id))
            finally:
                connection.close()

        def hold(crate=crate, signature=signature, barrier=barrier):
            try:
                barrier.wait(10)
                outcomes["hold"] = hold_place(actor=staff["qa"], crate_ids=[crate.id], reason="race",
                                              signature=signature)
            except Exception as exc:  # noqa: BLE001 - the loser's refusal is the point
                outcomes["hold"] = exc
            finally:
                connection.close()

        order = [hold, approve] if hold_first else [approve, hold]
        threads = [threading.Thread(target=fn) for fn in order]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

        crate.refresh_from_db()
        held = isinstance(outcomes["hold"], LegalHold)
        assert not (crate.on_hold and crate.status == CrateStatus.DESTROYED), round_
        assert held == crate.on_hold
        if held:
            assert crate.status == CrateStatus.IN_STORAGE
            assert JobOutcome.objects.get(job=job).code == "legal_hold" or Job.objects.get(id=job.id).error
        else:
            assert crate.status == CrateStatus.DESTROYED
            assert getattr(outcomes["hold"], "code", None) == "crate_unavailable"


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_hold_placed_while_approvals_wait_for_a_real_worker_stops_them(api, live_env):
    """The whole path: approvals accepted over HTTP (single and bulk) wait in a queue no worker
    takes yet; QA places a hold over HTTP; a real Celery worker then runs them."""
    import uuid

    from bench import processes
    from tests.support.queues import enqueue_on

    unit = UnitFactory()
    staff = unit_staff(unit)
    crates = [CrateFactory(unit=unit) for _ in range(3)]
    single = make_request("destruction", staff["requester"], [crates[0]])
    bulk = [make_request("destruction", staff["requester"], [c]) for c in crates[1:]]
    queue = f"hold-drill-{uuid.uuid4().hex[:8]}"
    approver = api(staff["approver"])
    with enqueue_on(queue):
        one = approver.post(f"/api/destruction-requests/{single.id}/approve/", signed("approve"), format="json")
        many = approver.post("/api/bulk-actions/", signed("approve", {
            "entity": "destruction", "action": "approve", "ids": [str(r.id) for r in bulk]}), format="json")
    assert (one.status_code, many.status_code) == (202, 202)
    held = api(staff["qa"]).post("/api/legal-holds/", _hold([crates[0], crates[1]]), format="json")
    assert held.status_code == 201

    worker = processes.start_worker(live_env, name="hold-drill", queues=queue)
    try:
        deadline = time.monotonic() + 60
        ids = [one.json()["job"]["id"], many.json()["job"]["id"]]
        while Job.objects.filter(id__in=ids, status__in=["succeeded", "failed"]).count() < 2:
            assert time.monotonic() < deadline, "the worker did not finish the jobs"
            time.sleep(0.2)
    finally:
        worker.stop()

    assert Job.objects.get(id=ids[0]).error["code"] == "legal_hold"
    outcomes = dict(JobOutcome.objects.filter(job_id=ids[1]).values_list("target", "code"))
    assert outcomes == {str(bulk[0].id): "legal_hold", str(bulk[1].id): ""}
    statuses = dict(Crate.objects.filter(id__in=[c.id for c in crates]).values_list("id", "status"))
    assert statuses == {crates[0].id: CrateStatus.IN_STORAGE, crates[1].id: CrateStatus.IN_STORAGE,
                        crates[2].id: CrateStatus.DESTROYED}

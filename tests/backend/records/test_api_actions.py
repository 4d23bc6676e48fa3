"""State-changing actions answer 202 + Location and queue a job; nothing changes inside the request.
What can already be seen to be illegal is refused at once, with no job.

These stop at the queue (the broker hand-off is recorded, not sent); the worker side runs with real
processes in tests/workers and tests/test_smoke.py.
"""

from __future__ import annotations

import pytest

from backend.audit.models import Signature
from backend.events.models import OutboxEvent
from backend.jobs.models import Job, JobStatus
from backend.records.models import Crate, RequestStatus
from tests.support.factories import CrateFactory, UnitFactory, make_request, unit_staff
from tests.support.signing import MEANINGS, sign, signed, transition_now

pytestmark = pytest.mark.django_db

KINDS = {"withdrawal": "withdrawal-requests", "destruction": "destruction-requests", "transfer": "transfer-requests"}
ACTIONS = {"approve": "approve", "reject": "reject", "send-back": "send_back", "resubmit": "resubmit"}


@pytest.fixture
def staff():
    return unit_staff(UnitFactory(code="own"))


def _job_body_matches(body: dict, job: Job) -> None:
    assert set(body) == {"job"}
    assert body["job"]["id"] == str(job.id)
    assert body["job"]["status"] == JobStatus.QUEUED
    assert body["job"]["kind"] == job.kind
    assert body["job"]["progress"] == {"total": 1, "done": 0, "failed": 0}
    assert body["job"]["result"] is None and body["job"]["error"] is None
    assert body["job"]["finished_at"] is None and body["job"]["created_at"]


@pytest.mark.parametrize("verb", list(ACTIONS))
@pytest.mark.parametrize("kind", list(KINDS))
def test_an_action_is_accepted_as_a_queued_job(api, staff, enqueued, django_capture_on_commit_callbacks, kind, verb):
    # given a request in the status the action applies to
    request = make_request(kind, staff["requester"])
    if verb == "resubmit":
        request = transition_now(
            entity=kind, action="send_back", actor=staff["approver"], request_id=request.id, reason="r",
                signature_id=sign(staff["approver"], kind, "send_back")
        )
    actor = staff["requester"] if verb == "resubmit" else staff["approver"]
    events_before = OutboxEvent.objects.count()

    # when the actor posts the action (with the version it saw)
    with django_capture_on_commit_callbacks(execute=True):
        response = api(actor).post(
            f"/api/{KINDS[kind]}/{request.id}/{verb}/",
                signed(verb, {"reason": "Shelf mark unreadable", "version": request.version}),
            format="json",
        )

    # then 202 with the job and where to follow it,
    assert response.status_code == 202, response.content
    job = Job.objects.get()
    assert response["Location"] == f"/api/jobs/{job.id}/"
    _job_body_matches(response.json(), job)
    # the job names what to do, to what, for whom; it went to the queue once the row committed,
    expected = {"reason": "Shelf mark unreadable", "versions": {str(request.id): request.version}}
    if verb != "resubmit":  # a decision carries the signature its decider gave with it (never the password)
        signature = Signature.objects.get(id=job.params.get("signature_id"))
        assert (signature.signer_id, signature.meaning) == (actor.id, MEANINGS[ACTIONS[verb]])
        expected["signature_id"] = str(signature.id)
    assert (job.kind, job.targets, job.params, job.unit_id, job.requested_by_id) == (
        f"{kind}.{ACTIONS[verb]}", [str(request.id)], expected, staff["requester"].unit_id, actor.id,
    )
    assert enqueued == [job.id]
    # and the request itself has not changed yet
    fresh = type(request).objects.get(id=request.id)
    assert (fresh.status, fresh.version) == (request.status, request.version)
    assert OutboxEvent.objects.count() == events_before
    # the job can be followed at its Location
    followed = api(actor).get(response["Location"])
    assert followed.status_code == 200 and followed.json()["id"] == str(job.id)
    assert {"id", "kind", "status", "progress", "result", "error", "created_at", "finished_at"} <= set(followed.json())


def test_a_version_in_if_match_travels_with_the_job(api, staff, enqueued):
    request = make_request("withdrawal", staff["requester"])
    response = api(staff["approver"]).post(
        f"/api/withdrawal-requests/{request.id}/approve/", signed("approve"), format="json", HTTP_IF_MATCH='"1"'
    )
    assert response.status_code == 202
    params = Job.objects.get().params
    assert Signature.objects.filter(id=params.pop("signature_id"), signer_id=staff["approver"].id).exists()
    assert params == {"reason": "", "versions": {str(request.id): 1}}


@pytest.mark.parametrize(
    "status,verb",
    [
        (RequestStatus.APPROVED, "approve"), (RequestStatus.REJECTED, "approve"), (RequestStatus.REJECTED, "reject"),
        (RequestStatus.APPROVED, "send-back"), (RequestStatus.PENDING, "resubmit"), (RequestStatus.SENT_BACK, "approve"),
    ],
)
def test_an_illegal_transition_seen_at_request_time_is_409_and_queues_nothing(
    api, staff, enqueued, django_capture_on_commit_callbacks, status, verb
):
    # given a request already decided (or not in the action's source status)
    request = make_request("withdrawal", staff["requester"])
    path = {RequestStatus.APPROVED: ["approve"], RequestStatus.REJECTED: ["reject"], RequestStatus.SENT_BACK: ["send_back"]}
    for action in path.get(status, []):
        transition_now(
            entity="withdrawal", action=action, actor=staff["approver"], request_id=request.id, reason="r",
                signature_id=sign(staff["approver"], "withdrawal", action)
        )

    # when an admin (allowed every action) tries it
    with django_capture_on_commit_callbacks(execute=True):
        response = api(staff["admin"]).post(f"/api/withdrawal-requests/{request.id}/{verb}/",
            signed(verb, {"reason": "why"}), format="json")

    # then 409 invalid_transition naming the status, and no job exists or was queued
    assert response.status_code == 409
    assert response.json()["code"] == "invalid_transition"
    assert response.json()["details"] == {"status": status}
    assert Job.objects.count() == 0 and enqueued == []


def test_relocation_is_accepted_as_a_queued_job(api, staff, enqueued, django_capture_on_commit_callbacks):
    crate = CrateFactory(unit=staff["store"].unit)
    with django_capture_on_commit_callbacks(execute=True):
        response = api(staff["store"]).post(f"/api/crates/{crate.id}/relocate/", {"location": "Vault 3"}, format="json")
    assert response.status_code == 202
    job = Job.objects.get()
    assert response["Location"] == f"/api/jobs/{job.id}/"
    _job_body_matches(response.json(), job)
    assert (job.kind, job.targets, job.params) == (
        "crate.relocate", [str(crate.id)], {"location": "Vault 3", "expected_version": None, "reason": ""},
    )
    assert enqueued == [job.id]
    assert Crate.objects.get(id=crate.id).location == "Aisle 1"


@pytest.mark.parametrize("body", [{}, {"location": ""}, {"location": "   "}])
def test_relocation_needs_a_location(api, staff, enqueued, body):
    crate = CrateFactory(unit=staff["store"].unit)
    response = api(staff["store"]).post(f"/api/crates/{crate.id}/relocate/", body, format="json")
    assert (response.status_code, response.json()["code"]) == (400, "invalid")
    assert set(response.json()["details"]) == {"location"}
    assert Job.objects.count() == 0


def test_relocating_a_destroyed_crate_is_409(api, staff, enqueued):
    crate = CrateFactory(unit=staff["store"].unit, status="destroyed")
    response = api(staff["store"]).post(f"/api/crates/{crate.id}/relocate/", {"location": "Vault"}, format="json")
    assert (response.status_code, response.json()["code"]) == (409, "invalid_transition")
    assert Job.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_broker_outage_is_503_and_leaves_no_job(api, staff, monkeypatch):
    # given a broker that refuses connections (a real transaction: the hand-off runs at COMMIT,
    # inside the HTTP request, which is what turns the outage into the 503)
    from kombu.exceptions import OperationalError

    def refuse(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr("workers.celery.app.send_task", refuse)
    request = make_request("withdrawal", staff["requester"])

    # when an action is posted
    response = api(staff["approver"]).post(f"/api/withdrawal-requests/{request.id}/approve/", signed("approve"), format="json")

    # then the client is told to retry and nothing is left behind
    assert response.status_code == 503
    assert response.json()["code"] == "broker_unavailable"
    assert Job.objects.count() == 0

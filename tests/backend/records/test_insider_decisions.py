"""Decisions an insider cannot bend, attacked from outside (the REST API, the bulk API, the batch CLI's
own request body) with the job run in-process as the worker runs it. The same attacks against a real
paused worker process are in tests/workers/test_insider_drills.py.

Each test is what a dishonest insider would try: decide on what they changed, swap what was signed
while the job waits, or use another spelling of an action to skip the signature check."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.accounts.models import Role
from backend.audit.models import AuditEntry
from backend.jobs.models import Job, JobOutcome
from backend.jobs.services import job_execute
from backend.records.actions import ACTIONS
from backend.records.lifecycle import request_kind
from backend.records.models import Crate, CrateStatus, RequestStatus
from tests.support.factories import PASSWORD, CrateFactory, UnitFactory, UserFactory, make_request, unit_staff
from tests.support.signing import signed
from workers.cli import bulk_body, parse_targets

pytestmark = pytest.mark.django_db
KINDS = {"withdrawal": "withdrawal-requests", "destruction": "destruction-requests"}
DECISIONS = [a for a in ACTIONS.values() if a.decision]


def _run_queued() -> list[Job]:
    """Run every queued job as the worker would (the jobs waited until now: a paused worker)."""
    return [job_execute(job_id=str(job.id)) for job in Job.objects.filter(status="queued").order_by("created_at")]


def _edit(api, user, kind: str, request, **body):
    response = api(user).patch(
        f"/api/{KINDS[kind]}/{request.id}/", {"change_reason": "insider edit", **body}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()


def test_an_admin_who_changed_a_destruction_request_cannot_approve_it(api, enqueued):
    # given a destruction request for crate A, filed by the requester
    staff = unit_staff(UnitFactory())
    crate_a, crate_b = CrateFactory(unit=staff["admin"].unit), CrateFactory(unit=staff["admin"].unit)
    request = make_request("destruction", staff["requester"], crates=[crate_a])
    # and the admin swaps it to crate B (a legitimate edit, with a reason)
    _edit(api, staff["admin"], "destruction", request, crates=[str(crate_b.id)])

    # when the same admin approves it, alone or in a bulk
    single = api(staff["admin"]).post(f"/api/destruction-requests/{request.id}/approve/", signed("approve"), format="json")
    bulk = api(staff["admin"]).post(
        "/api/bulk-actions/", signed("approve", {"entity": "destruction", "action": "approve", "ids": [str(request.id)]}),
        format="json",
    )
    _run_queued()

    # then the single path is 403 four_eyes before any signature, the bulk item a four_eyes outcome,
    assert (single.status_code, single.json()["code"]) == (403, "four_eyes")
    assert bulk.status_code == 202
    (outcome,) = JobOutcome.objects.filter(job_id=bulk.json()["job"]["id"])
    assert (outcome.succeeded, outcome.code) == (False, "four_eyes")
    # and crate B is still in storage
    crate_b.refresh_from_db()
    assert crate_b.status == CrateStatus.IN_STORAGE


def test_a_request_tells_its_reader_whether_they_filed_or_changed_it(api):
    # given a transfer request filed by the requester and edited by the admin, and a second one
    # nobody edited (a transfer: its destination unit reads it too)
    staff = unit_staff(UnitFactory())
    destination = unit_staff(UnitFactory())
    edited = make_request("transfer", staff["requester"], destination_unit_id=destination["admin"].unit_id)
    untouched = make_request("transfer", staff["requester"], destination_unit_id=destination["admin"].unit_id)
    changed = api(staff["admin"]).patch(f"/api/transfer-requests/{edited.id}/",
                                        {"change_reason": "by phone", "reason": "a better reason"}, format="json")
    assert changed.status_code == 200, changed.content

    # when each reads the requests, listed and one by one
    # then `contributed` says who four eyes keeps from deciding: whoever filed or changed it
    expected = {"requester": {edited.id: True, untouched.id: True}, "admin": {edited.id: True, untouched.id: False},
                "approver": {edited.id: False, untouched.id: False}}
    readers = [*((staff[who], who) for who in expected), (destination["admin"], "approver")]
    for user, like in readers:
        listed = api(user).get("/api/transfer-requests/").json()["results"]
        assert {uuid.UUID(r["id"]): r["contributed"] for r in listed} == expected[like], user.username
        for request in (edited, untouched):
            one = api(user).get(f"/api/transfer-requests/{request.id}/").json()
            assert one["contributed"] is expected[like][request.id], (user.username, request.request_number)
    # and what it says is what the server enforces
    refused = api(staff["admin"]).post(f"/api/transfer-requests/{edited.id}/approve/", signed("approve"), format="json")
    assert (refused.status_code, refused.json()["code"]) == (403, "four_eyes")


def test_contributed_is_read_for_a_whole_page_at_once(api):
    # given an approver's unit with 3 and then 12 pending requests, each edited by someone
    staff = unit_staff(UnitFactory())
    client = api(staff["approver"])

    def queries_for_the_list(n: int) -> int:
        for _ in range(n):
            _edit(api, staff["admin"], "withdrawal", make_request("withdrawal", staff["requester"]), reason="edited")
        with CaptureQueriesContext(connection) as seen:
            assert client.get("/api/withdrawal-requests/?page_size=50").status_code == 200
        return len(seen)

    # then the list's queries do not grow with its rows
    assert queries_for_the_list(3) == queries_for_the_list(9)


@pytest.mark.parametrize("path", ["single", "bulk-ids", "cli"])
def test_a_signature_never_lands_on_crates_swapped_in_while_the_job_waits(api, enqueued, path):
    # given a withdrawal request for crate A and an approver who approves it without naming a version
    staff = unit_staff(UnitFactory())
    crate_a, crate_b = CrateFactory(unit=staff["admin"].unit), CrateFactory(unit=staff["admin"].unit)
    request = make_request("withdrawal", staff["requester"], crates=[crate_a])
    client = api(staff["approver"])
    if path == "single":
        answer = client.post(f"/api/withdrawal-requests/{request.id}/approve/", signed("approve"), format="json")
    else:
        body = (
            signed("approve", {"entity": "withdrawal", "action": "approve", "ids": [str(request.id)]})
            if path == "bulk-ids" else bulk_body("approve", "withdrawal", parse_targets([str(request.id)]), "", lambda: PASSWORD)
        )
        answer = client.post("/api/bulk-actions/", body, format="json")
    assert answer.status_code == 202, answer.content

    # when the requester swaps the crates while the job waits in the queue (the worker is busy)
    _edit(api, staff["requester"], "withdrawal", request, crates=[str(crate_b.id)])
    (job,) = _run_queued()

    # then nothing is decided: the request changed after the version the signature was given for
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    code = job.error["code"] if path == "single" else JobOutcome.objects.get(job=job).code
    assert code == "stale_version"
    assert set(Crate.objects.filter(id__in=[crate_a.id, crate_b.id]).values_list("status", flat=True)) == {"in_storage"}
    # and the trail says the signature was not applied to the request, with the signature and why
    (entry,) = AuditEntry.objects.filter(record_id=request.id, action="signature_not_applied")
    assert str(entry.signature_id) == job.params["signature_id"] and entry.reason.startswith("stale_version")


def test_a_later_bulk_chunk_is_pinned_to_what_was_signed(api, enqueued, settings):
    # given 6 pending requests, decided in chunks of 2
    settings.BULK_CHUNK_SIZE = 2
    staff = unit_staff(UnitFactory())
    requests = sorted((make_request("withdrawal", staff["requester"]) for _ in range(6)), key=lambda r: str(r.id))
    answer = api(staff["approver"]).post(
        "/api/bulk-actions/",
        signed("approve", {"entity": "withdrawal", "action": "approve", "ids": [str(r.id) for r in requests]}),
        format="json",
    )
    assert answer.status_code == 202
    # when the last one is edited after the decision was signed (before its chunk runs)
    _edit(api, staff["requester"], "withdrawal", requests[-1], reason="changed after signing")
    (job,) = _run_queued()

    # then the first five are approved, the edited one is stale and undecided
    outcomes = {o.target: o.code for o in JobOutcome.objects.filter(job=job)}
    assert outcomes == {**{str(r.id): "" for r in requests[:-1]}, str(requests[-1].id): "stale_version"}


@pytest.mark.parametrize("spelling", ["send-back", "send_back"])
def test_every_spelling_of_send_back_checks_counts_and_audits_the_signature(api, enqueued, spelling):
    staff = unit_staff(UnitFactory())
    request = make_request("withdrawal", staff["requester"])
    body = {"entity": "withdrawal", "action": spelling, "ids": [str(request.id)], "reason": "illegible"}

    # a wrong password is refused, counted and audited, whatever the spelling
    wrong = api(staff["approver"]).post(
        "/api/bulk-actions/", {**body, "signature": {"password": "not-it", "meaning": "returned"}}, format="json"
    )
    assert (wrong.status_code, wrong.json()["code"]) == (403, "signature_invalid")
    assert wrong.json()["details"]["attempts_left"] == 4
    assert AuditEntry.objects.filter(record_id=staff["approver"].id, action="signature_failed").count() == 1
    assert not Job.objects.exists()

    # and the right one decides it: the job sends the request back
    right = api(staff["approver"]).post("/api/bulk-actions/", signed("send_back", body), format="json")
    assert right.status_code == 202, right.content
    (job,) = _run_queued()
    assert (job.status, job.progress["failed"]) == ("succeeded", 0)
    request.refresh_from_db()
    assert request.status == RequestStatus.SENT_BACK


def test_the_cli_body_for_send_back_is_signed_with_the_vocabularys_meaning():
    body = bulk_body("send-back", "withdrawal", parse_targets(["WR-2026-0001", f"{uuid.uuid4()}@2"]), "why", lambda: "pw")
    assert body["signature"] == {"password": "pw", "meaning": "returned"}
    with pytest.raises(ValueError, match="signed decision"):
        bulk_body("approve", "withdrawal", parse_targets(["WR-2026-0001"]), "", lambda: None)
    assert "signature" not in bulk_body("resubmit", "withdrawal", parse_targets(["WR-2026-0001"]), "", lambda: None)


@pytest.mark.parametrize("named", ["items", "ids"])
def test_a_superuser_of_a_unit_decides_nothing_of_another_unit_in_bulk(api, enqueued, named):
    # given a superuser who belongs to a unit (and signs), and a pending request of another unit
    home, other = UnitFactory(), UnitFactory()
    root = UserFactory(unit=home, role=Role.APPROVER, is_superuser=True, first_name="Root", last_name="Signer")
    request = make_request("withdrawal", unit_staff(other)["requester"])
    # when they approve it in a bulk of their unit (by id with the version they read, or by plain id)
    target = {"items": [{"id": str(request.id), "version": request.version}]} if named == "items" else {"ids": [str(request.id)]}
    answer = api(root).post(
        "/api/bulk-actions/", signed("approve", {"entity": "withdrawal", "action": "approve", **target}), format="json",
    )
    assert answer.status_code == 202, answer.content
    (job,) = _run_queued()

    # then, as for any id of another unit, its outcome is not_found and it is never touched
    (outcome,) = JobOutcome.objects.filter(job=job)
    assert (outcome.succeeded, outcome.code) == (False, "not_found")
    request.refresh_from_db()
    assert request.status == RequestStatus.PENDING
    assert not AuditEntry.objects.filter(record_id=request.id, action="approved").exists()


# --- the generated campaign ----------------------------------------------------------------------



@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    kind=st.sampled_from(sorted(KINDS)),
    action=st.sampled_from(DECISIONS),
    spelling=st.booleans(),
    creator=st.sampled_from(("requester", "admin")),
    editors=st.sets(st.sampled_from(("requester", "colleague", "admin")), max_size=2),
    # the deciders that matter most are those who may decide by role: the two admins and the approver
    decider=st.sampled_from(("approver", "admin", "admin", "second_admin", "requester")),
    path=st.sampled_from(("single", "bulk", "cli")),
    send_version=st.booleans(),
    racing_edit=st.sampled_from((None, None, "requester", "colleague")),
    right_password=st.sampled_from((True, True, False)),
)
def test_campaign_no_decision_by_a_contributor_nor_on_a_version_after_the_pinned_one(
    api, enqueued, kind, action, spelling, creator, editors, decider, path, send_version, racing_edit, right_password,
):
    """role x who created x who edited x path x version sent or not x an edit racing the job x password.
    Fresh people per example, so no throttle or lock of an earlier example decides this one."""
    unit = UnitFactory()
    people = {
        "requester": UserFactory(unit=unit, role=Role.REQUESTER), "colleague": UserFactory(unit=unit, role=Role.REQUESTER),
        "approver": UserFactory(unit=unit, role=Role.APPROVER), "admin": UserFactory(unit=unit, role=Role.ADMIN),
        "second_admin": UserFactory(unit=unit, role=Role.ADMIN),
    }
    crates = [CrateFactory(unit=unit) for _ in range(3)]
    request = make_request(kind, people[creator], crates=[crates[0]])
    for n, editor in enumerate(sorted(editors)):
        _edit(api, people[editor], kind, request, reason=f"edited by {editor} {n}")
    request.refresh_from_db()
    seen = request.version
    actor = people[decider]
    contributors = {people[creator].id, *(people[e].id for e in editors)}
    password = PASSWORD if right_password else "wrong-password"
    spelled = action.path if spelling else action.name
    reason = "" if action.name == "approve" else "because"
    failures_before = AuditEntry.objects.filter(record_id=actor.id, action="signature_failed").count()

    # when the decider submits on the chosen path
    if path == "single":
        body = {"reason": reason, "signature": {"password": password, "meaning": action.meaning}}
        if send_version:
            body["version"] = seen
        answer = api(actor).post(f"/api/{KINDS[kind]}/{request.id}/{action.path}/", body, format="json")
    elif path == "bulk":  # the console's body, in either spelling of the action
        body = {"entity": kind, "action": spelled, "reason": reason,
                "signature": {"password": password, "meaning": action.meaning}}
        body.update({"items": [{"id": str(request.id), "version": seen}]} if send_version else {"ids": [str(request.id)]})
        answer = api(actor).post("/api/bulk-actions/", body, format="json")
    else:  # the batch CLI's own body (ID or ID@VERSION)
        token = f"{request.id}@{seen}" if send_version else str(request.id)
        body = bulk_body(action.path, kind, parse_targets([token]), reason, lambda: password)
        answer = api(actor).post("/api/bulk-actions/", body, format="json")
    # and someone edits the request while the job waits
    if racing_edit and answer.status_code == 202:
        _edit(api, people[racing_edit], kind, request, crates=[str(crates[1].id)])
    _run_queued()

    # then: a wrong password is counted and audited on every path, and decides nothing
    failures = AuditEntry.objects.filter(record_id=actor.id, action="signature_failed").count()
    role_may_decide = decider in ("approver", "admin", "second_admin")
    refused_before_signing = answer.status_code in (403, 409) and answer.json()["code"] in (
        "four_eyes", "permission_denied", "stale_version", "invalid_transition",
    )
    if not right_password and role_may_decide and not refused_before_signing:
        assert answer.status_code == 403 and answer.json()["code"] == "signature_invalid", answer.content
        assert failures == failures_before + 1
    else:
        assert failures == failures_before
    # no decision by a contributor, and none on a version after the one pinned
    decided = AuditEntry.objects.filter(record_id=request.id, action=action.past)
    for entry in decided:
        assert entry.actor_id not in contributors, "a contributor decided"
        assert entry.version == seen + 1, "a decision applied to a version after the one its signer saw"
    request_now = request_kind(kind).model.objects.get(id=request.id)
    if decided.exists():
        assert right_password and role_may_decide and actor.id not in contributors and not racing_edit
        assert request_now.status == {"approve": "approved", "reject": "rejected", "send_back": "sent_back"}[action.name]
    elif right_password and role_may_decide and actor.id not in contributors and not racing_edit:
        pytest.fail(f"a decision that every rule allows was not applied: {answer.status_code} {answer.content!r}")

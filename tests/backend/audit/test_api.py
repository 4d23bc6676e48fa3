"""The record layer over HTTP: four eyes, what the approver saw, reasons, soft deletes, decided-by,
and reading the trail (filters, cursor pages, a record's history)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from backend.audit.models import AuditEntry
from backend.jobs.models import Job
from backend.jobs.services import job_execute
from backend.records import services
from backend.records.models import Crate, CrateStatus, WithdrawalRequest
from tests.support.factories import CrateFactory, UnitFactory, make_request, unit_staff
from tests.support.signing import signed

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    return unit_staff(UnitFactory(code="north"))


def run_jobs(enqueued: list) -> list[Job]:
    """What the worker does with the jobs the views queued (here, in this process; the enqueue
    itself waits for a COMMIT these tests never make)."""
    return [job_execute(job_id=str(job.id)) for job in Job.objects.filter(status="queued").order_by("created_at")]


# --- four eyes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["approve", "reject", "send-back"])
def test_nobody_decides_on_a_request_they_filed(api, staff, enqueued, action):
    # given a request the unit admin filed (the admin holds every role)
    request = make_request("destruction", staff["admin"])

    # when the same admin decides on it
    response = api(staff["admin"]).post(f"/api/destruction-requests/{request.id}/{action}/",
        signed(action, {"reason": "r"}), format="json")

    # then 403 four_eyes, and nothing was queued
    assert (response.status_code, response.json()["code"]) == (403, "four_eyes")
    assert enqueued == []


def test_a_bulk_decision_refuses_the_deciders_own_requests_one_by_one(api, staff, enqueued):
    own = make_request("withdrawal", staff["admin"])
    theirs = make_request("withdrawal", staff["requester"])

    response = api(staff["admin"]).post(
        "/api/bulk-actions/",
            signed("approve", {"entity": "withdrawal", "action": "approve", "ids": [str(own.id), str(theirs.id)]}), format="json"
    )
    (job,) = run_jobs(enqueued)

    assert response.status_code == 202
    outcomes = {o.target: (o.succeeded, o.code) for o in job.outcomes.all()}
    assert outcomes == {str(own.id): (False, "four_eyes"), str(theirs.id): (True, "")}
    assert WithdrawalRequest.objects.get(id=own.id).status == "pending"


# --- what the approver saw ------------------------------------------------------------------------


def test_a_stale_decision_answers_409_with_the_state_and_who_changed_what_since(api, staff, enqueued):
    # given a request the approver saw at version 1, edited since by the requester
    request = make_request("withdrawal", staff["requester"])
    crates = [*request.crates.all(), CrateFactory(unit=request.unit)]
    services.request_update(entity="withdrawal", actor=staff["requester"], request_id=request.id, expected_version=1,
                            reason="now two crates", crate_ids=[c.id for c in crates], change_reason="forgot one")

    # when the approver approves what they saw
    response = api(staff["approver"]).post(f"/api/withdrawal-requests/{request.id}/approve/",
        signed("approve", {"version": 1}), format="json")

    # then 409 with the current request and the edit, by whom and why
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "stale_version"
    assert body["details"]["current_version"] == 2 and body["details"]["current"]["reason"] == "now two crates"
    (edit,) = body["details"]["history"]
    assert (edit["action"], edit["actor"]["username"], edit["reason"], edit["version"]) == (
        "updated", staff["requester"].username, "forgot one", 2,
    )
    assert set(edit["changes"]) == {"reason", "crates"}
    assert enqueued == []


def test_bulk_items_carry_the_versions_seen_and_a_changed_one_is_refused(api, staff, enqueued):
    seen, changed = make_request("withdrawal", staff["requester"]), make_request("withdrawal", staff["requester"])
    WithdrawalRequest.objects.filter(id=changed.id).update(version=5)

    items = [{"id": str(seen.id), "version": 1}, {"id": str(changed.id), "version": 1}]
    response = api(staff["approver"]).post(
        "/api/bulk-actions/", signed("approve", {"entity": "withdrawal", "action": "approve", "items": items}), format="json"
    )
    (job,) = run_jobs(enqueued)

    assert response.status_code == 202
    assert {o.target: o.code for o in job.outcomes.all()} == {str(seen.id): "", str(changed.id): "stale_version"}


# --- reasons ---------------------------------------------------------------------------------------


def test_editing_a_submitted_request_needs_a_reason(api, staff):
    request = make_request("withdrawal", staff["requester"])
    client = api(staff["requester"])

    refused = client.patch(f"/api/withdrawal-requests/{request.id}/", {"reason": "clearer"}, format="json")
    accepted = client.patch(
        f"/api/withdrawal-requests/{request.id}/", {"reason": "clearer", "change_reason": "typo"}, format="json"
    )

    assert (refused.status_code, refused.json()["code"]) == (400, "reason_required")
    assert accepted.status_code == 200
    entry = AuditEntry.objects.get(record_id=request.id, action="updated")
    assert (entry.reason, entry.changes) == ("typo", {"reason": ["test", "clearer"]})


def test_an_approval_keeps_its_optional_reason_and_says_who_decided(api, staff, enqueued):
    request = make_request("transfer", staff["requester"])
    api(staff["approver"]).post(f"/api/transfer-requests/{request.id}/approve/",
        signed("approve", {"reason": "as agreed with QA"}), format="json")
    run_jobs(enqueued)

    body = api(staff["requester"]).get(f"/api/transfer-requests/{request.id}/").json()

    assert (body["status"], body["decided_by"], body["decision_reason"]) == (
        "approved", str(staff["approver"].id), "as agreed with QA",
    )
    assert body["decided_at"]


# --- soft deletes ----------------------------------------------------------------------------------


def test_a_delete_needs_a_reason_and_keeps_the_record_for_unit_admins(api, staff):
    crate = CrateFactory(unit=staff["store"].unit)
    store = api(staff["store"])

    without = store.delete(f"/api/crates/{crate.id}/")
    deleted = store.delete(f"/api/crates/{crate.id}/", {"reason": "water damage, contents re-boxed"}, format="json")

    assert (without.status_code, without.json()["code"]) == (400, "reason_required")
    assert deleted.status_code == 204
    # kept, hidden from the lists and the detail
    assert Crate.objects.filter(id=crate.id).exists()
    assert store.get("/api/crates/").json()["count"] == 0
    assert store.get(f"/api/crates/{crate.id}/").status_code == 404
    assert store.get("/api/crates/?include_deleted=1").json()["count"] == 0  # (not a unit admin)
    # a unit admin asks for it and sees who deleted it, when and why
    admin = api(staff["admin"])
    (shown,) = admin.get("/api/crates/?include_deleted=1").json()["results"]
    assert (shown["id"], shown["deleted_by"], shown["delete_reason"]) == (
        str(crate.id), str(staff["store"].id), "water damage, contents re-boxed",
    )
    history = admin.get(f"/api/crates/{crate.id}/history/?include_deleted=1").json()["results"]
    assert [e["action"] for e in history] == ["deleted"]
    # and nothing can change it any more
    assert store.patch(f"/api/crates/{crate.id}/", {"location": "x"}, format="json").status_code == 404


def test_a_deleted_request_frees_its_crates(api, staff):
    request = make_request("withdrawal", staff["requester"])
    crate = request.crates.get()
    api(staff["requester"]).delete(f"/api/withdrawal-requests/{request.id}/", {"reason": "filed twice"}, format="json")

    again = make_request("withdrawal", staff["requester"], [crate])

    assert again.status == "pending"
    assert WithdrawalRequest.objects.get(id=request.id).deleted_at is not None


# --- reading the trail -------------------------------------------------------------------------------


def test_the_trail_is_the_units_newest_first_with_the_contract_fields(api, staff):
    crate = services.crate_create(actor=staff["store"], location="Aisle 1")
    services.crate_relocate(actor=staff["store"], crate_id=crate.id, location="Vault 2", reason="humidity")
    services.crate_create(actor=unit_staff(UnitFactory(code="south"))["store"])  # another unit's

    page = api(staff["approver"]).get("/api/audit-trail/").json()

    assert [e["action"] for e in page["results"]] == ["relocated", "created"]
    newest = page["results"][0]
    assert set(newest) >= {"id", "unit", "at", "actor", "entity", "record_id", "record_number", "action", "changes",
                           "reason", "signature", "job_id", "client", "hash", "prev_hash"}
    assert newest["actor"] == {"id": str(staff["store"].id), "username": staff["store"].username, "full_name": "",
                               "role": "store"}
    assert (newest["changes"], newest["reason"], newest["signature"]) == ({"location": ["Aisle 1", "Vault 2"]}, "humidity", None)
    assert newest["prev_hash"] == page["results"][1]["hash"]


def test_the_trail_filters_and_pages_by_cursor(api, staff):
    crates = [services.crate_create(actor=staff["store"]) for _ in range(5)]
    services.crate_update(actor=staff["admin"], crate_id=crates[0].id, expected_version=1, location="Vault")
    client = api(staff["admin"])

    by_actor = client.get("/api/audit-trail/", {"actor": staff["admin"].username}).json()["results"]
    by_action = client.get("/api/audit-trail/", {"action": "created", "entity": "crate"}).json()["results"]
    by_record = client.get("/api/audit-trail/", {"record": str(crates[0].id)}).json()["results"]
    future = client.get("/api/audit-trail/", {"since": (timezone.now() + timedelta(hours=1)).isoformat()}).json()["results"]

    assert [e["action"] for e in by_actor] == ["updated"]
    assert len(by_action) == 5
    assert [e["action"] for e in by_record] == ["updated", "created"]
    assert future == []
    # two entries a page, following `next`, each entry exactly once, newest first
    seen, url = [], "/api/audit-trail/?page_size=2"
    while url:
        page = client.get(url).json()
        seen += [e["id"] for e in page["results"]]
        url = page["next"]
    positions = list(AuditEntry.objects.filter(id__in=seen).order_by("-position").values_list("id", flat=True))
    assert seen == [str(p) for p in positions] and len(seen) == 6


def test_a_page_costs_the_same_queries_however_long_the_trail(api, staff):
    services.crates_create_bulk(actor=staff["store"], unit=staff["store"].unit, count=300)
    client = api(staff["admin"])
    with CaptureQueriesContext(connection) as first:
        page = client.get("/api/audit-trail/?page_size=50").json()
    with CaptureQueriesContext(connection) as deep:
        client.get(page["next"])
    assert len(deep) == len(first) <= 6


def test_a_transferred_crates_history_spans_both_units(api, staff, enqueued):
    far = UnitFactory(code="far")
    crate = CrateFactory(unit=staff["requester"].unit)
    transfer = make_request("transfer", staff["requester"], [crate], destination_unit_id=far.id)
    api(staff["approver"]).post(f"/api/transfer-requests/{transfer.id}/approve/", signed("approve"), format="json",
                                REMOTE_ADDR="10.9.8.7", HTTP_USER_AGENT="console/2")
    run_jobs(enqueued)

    history = api(unit_staff(far)["store"]).get(f"/api/crates/{crate.id}/history/").json()["results"]

    # (both written by the one approval, at one moment: each unit's chain records its side)
    assert {(e["action"], e["unit"]) for e in history} == {
        ("transferred", str(staff["requester"].unit_id)), ("received", str(far.id)),
    }
    assert len(history) == 2 and history[0]["at"] == history[1]["at"]
    assert all(e["changes"] == {"unit": ["north", "far"]} for e in history)
    # the job's entries carry the job; the reader's own unit's entry also the client that asked for
    # it, the other unit's entry no client at all (where its people work from is not the reader's)
    job = Job.objects.get()
    by_action = {e["action"]: e for e in history}
    assert {e["job_id"] for e in history} == {str(job.id)}
    assert by_action["received"]["client"] == {"ip": "10.9.8.7", "user_agent": "console/2"}
    assert "client" not in by_action["transferred"]
    assert Crate.objects.get(id=crate.id).status == CrateStatus.IN_STORAGE


def test_a_records_history_is_oldest_first(api, staff, enqueued):
    request = make_request("withdrawal", staff["requester"])
    client = api(staff["approver"])
    client.post(f"/api/withdrawal-requests/{request.id}/send-back/",
        signed("send-back", {"reason": "which shelf?"}), format="json")
    run_jobs(enqueued)
    api(staff["requester"]).post(f"/api/withdrawal-requests/{request.id}/resubmit/", {}, format="json")
    run_jobs(enqueued)

    history = client.get(f"/api/withdrawal-requests/{request.id}/history/").json()["results"]

    assert [(e["action"], e["actor"]["username"]) for e in history] == [
        ("created", staff["requester"].username), ("sent_back", staff["approver"].username),
        ("resubmitted", staff["requester"].username),
    ]
    assert history[1]["reason"] == "which shelf?"
    # another unit sees neither the request nor its history
    assert api(unit_staff(UnitFactory())["admin"]).get(f"/api/withdrawal-requests/{request.id}/history/").status_code == 404

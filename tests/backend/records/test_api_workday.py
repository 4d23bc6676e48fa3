"""What the console needs to carry a day's work (issue 32), through the API: crates named in an open
request are `reserved` (and filterable, so a new request is offered only free crates), requests are
found by the number of a crate they name, the requester's reason survives the decision beside the
decider's, a sent-back request is edited before it is resubmitted, and a bulk action is named by
request numbers and checked (`/api/bulk-actions/preview/`) before anything is signed."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.accounts.models import Role
from backend.audit.models import AuditEntry, Signature
from backend.jobs.models import Job
from backend.records.models import CrateStatus, RequestStatus
from backend.records.services import request_delete
from tests.support.factories import CrateFactory, UnitFactory, UserFactory, make_request, unit_staff
from tests.support.signing import sign, signed, transition_now

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    return unit_staff(UnitFactory(code="own"))


@pytest.fixture
def others():
    return unit_staff(UnitFactory(code="other"))


def _rows(response) -> dict[str, dict]:
    assert response.status_code == 200, response.content
    return {row["id"]: row for row in response.json()["results"]}


# --- reserved crates ---------------------------------------------------------------------------


def test_a_crate_in_an_open_request_is_reserved_until_the_request_is_decided_or_deleted(api, staff):
    # given three crates, two of them named in open requests (one pending, one sent back)
    unit = staff["store"].unit
    free, held, returned = (CrateFactory(unit=unit) for _ in range(3))
    pending = make_request("withdrawal", staff["requester"], crates=[held])
    sent_back = make_request("destruction", staff["requester"], crates=[returned])
    transition_now(entity="destruction", action="send_back", actor=staff["approver"], request_id=sent_back.id,
                   reason="add the label", signature_id=sign(staff["approver"], "destruction", "send_back"))
    client = api(staff["store"])

    # then the list and the detail say which are reserved, and by which request
    rows = _rows(client.get("/api/crates/"))
    assert (rows[str(free.id)]["reserved"], rows[str(free.id)]["reserved_by"]) == (False, None)
    assert (rows[str(held.id)]["reserved"], rows[str(held.id)]["reserved_by"]) == (True, pending.request_number)
    assert rows[str(returned.id)]["reserved_by"] == sent_back.request_number
    assert rows[str(held.id)]["status"] == CrateStatus.IN_STORAGE
    detail = client.get(f"/api/crates/{held.id}/").json()
    assert (detail["reserved"], detail["reserved_by"]) == (True, pending.request_number)
    # and the filters find them: reserved, and free for a new request
    assert set(_rows(client.get("/api/crates/?reserved=true"))) == {str(held.id), str(returned.id)}
    assert set(_rows(client.get("/api/crates/?reserved=false"))) == {str(free.id)}
    assert set(_rows(client.get("/api/crates/?available=true"))) == {str(free.id)}

    # when the pending one is rejected and the sent-back one deleted, both crates are free again
    transition_now(entity="withdrawal", action="reject", actor=staff["approver"], request_id=pending.id,
                   reason="not needed", signature_id=sign(staff["approver"], "withdrawal", "reject"))
    request_delete(entity="destruction", actor=staff["requester"], request_id=sent_back.id, expected_version=None,
                   reason="filed twice")
    assert set(_rows(client.get("/api/crates/?available=true"))) == {str(free.id), str(held.id), str(returned.id)}
    assert _rows(client.get("/api/crates/?reserved=true")) == {}


def test_an_approved_withdrawal_leaves_its_crate_withdrawn_not_reserved_and_not_available(api, staff):
    crate = CrateFactory(unit=staff["store"].unit)
    request = make_request("withdrawal", staff["requester"], crates=[crate])
    transition_now(entity="withdrawal", action="approve", actor=staff["approver"], request_id=request.id,
                   signature_id=sign(staff["approver"], "withdrawal", "approve"))
    row = _rows(api(staff["store"]).get("/api/crates/"))[str(crate.id)]
    assert (row["status"], row["reserved"]) == (CrateStatus.WITHDRAWN, False)
    assert _rows(api(staff["store"]).get("/api/crates/?available=true")) == {}
    assert set(_rows(api(staff["store"]).get("/api/crates/?available=false"))) == {str(crate.id)}


def test_another_units_reservations_are_not_seen_and_its_crates_not_offered(api, staff, others):
    # given a crate of the other unit held by the other unit's open request
    theirs = CrateFactory(unit=others["store"].unit)
    make_request("withdrawal", others["requester"], crates=[theirs])
    mine = CrateFactory(unit=staff["store"].unit)
    client = api(staff["requester"])
    # then our lists show none of it, whatever the filter
    for query in ("", "?reserved=true", "?reserved=false", "?available=true", "?available=false"):
        assert str(theirs.id) not in _rows(client.get(f"/api/crates/{query}"))
    assert set(_rows(client.get("/api/crates/?available=true"))) == {str(mine.id)}
    assert client.get(f"/api/crates/{theirs.id}/").status_code == 404


def test_the_crate_list_pages_with_its_filters(api, staff):
    unit = staff["store"].unit
    crates = [CrateFactory(unit=unit) for _ in range(5)]
    make_request("withdrawal", staff["requester"], crates=[crates[0]])
    client = api(staff["store"])
    first = client.get("/api/crates/?available=true&page_size=3").json()
    assert (first["count"], len(first["results"])) == (4, 3) and first["next"]
    second = client.get("/api/crates/?available=true&page_size=3&page=2").json()
    assert len(second["results"]) == 1 and second["previous"] and not second["next"]
    assert {r["id"] for r in first["results"] + second["results"]} == {str(c.id) for c in crates[1:]}


# --- requests by crate number; both reasons; edit before resubmit ------------------------------


def test_requests_are_found_by_the_number_of_a_crate_they_name(api, staff, others):
    unit = staff["store"].unit
    wanted = CrateFactory(unit=unit, crate_number="CR-2026-0777")
    other = CrateFactory(unit=unit, crate_number="CR-2026-0888")
    hit = make_request("withdrawal", staff["requester"], crates=[wanted, CrateFactory(unit=unit)])
    make_request("withdrawal", staff["requester"], crates=[other])
    # another unit's request on a crate whose number contains the same digits
    lookalike = CrateFactory(unit=others["store"].unit, crate_number="CR-2026-07770")
    make_request("withdrawal", others["requester"], crates=[lookalike])
    client = api(staff["approver"])
    assert set(_rows(client.get("/api/withdrawal-requests/?search=CR-2026-0777"))) == {str(hit.id)}
    assert set(_rows(client.get("/api/withdrawal-requests/?search=0777"))) == {str(hit.id)}
    assert set(_rows(client.get("/api/withdrawal-requests/?crate_number=cr-2026-0777"))) == {str(hit.id)}
    assert _rows(client.get("/api/withdrawal-requests/?crate_number=CR-2026-07770")) == {}
    # one row per request, however many of its crates match
    page = client.get("/api/withdrawal-requests/?search=CR-2026").json()
    assert page["count"] == 2 and len(page["results"]) == 2


def test_a_decided_request_keeps_the_requesters_reason_beside_the_deciders(api, staff):
    request = make_request("withdrawal", staff["requester"])  # reason "test"
    transition_now(entity="withdrawal", action="reject", actor=staff["approver"], request_id=request.id,
                   reason="labels illegible", signature_id=sign(staff["approver"], "withdrawal", "reject"))
    row = _rows(api(staff["requester"]).get("/api/withdrawal-requests/"))[str(request.id)]
    assert (row["reason"], row["decision_reason"], row["status"]) == ("test", "labels illegible", "rejected")


def test_a_sent_back_request_is_edited_then_resubmitted(api, staff, enqueued):
    # given a request sent back for a missing crate
    unit = staff["store"].unit
    first, added = CrateFactory(unit=unit), CrateFactory(unit=unit)
    request = make_request("withdrawal", staff["requester"], crates=[first])
    transition_now(entity="withdrawal", action="send_back", actor=staff["approver"], request_id=request.id,
                   reason="add the second crate", signature_id=sign(staff["approver"], "withdrawal", "send_back"))
    client = api(staff["requester"])
    # when its requester edits it (crates, reason, why) at the version they saw
    edited = client.patch(f"/api/withdrawal-requests/{request.id}/", {
        "crates": [str(first.id), str(added.id)], "reason": "both crates", "change_reason": "added the crate", "version": 2,
    }, format="json")
    assert edited.status_code == 200, edited.content
    body = edited.json()
    assert (body["status"], body["version"], body["reason"]) == (RequestStatus.SENT_BACK, 3, "both crates")
    assert set(body["crates"]) == {str(first.id), str(added.id)}
    # and resubmits it at the edited version
    resubmitted = client.post(f"/api/withdrawal-requests/{request.id}/resubmit/", {"version": 3}, format="json")
    assert resubmitted.status_code == 202, resubmitted.content
    # an edit without its reason, or by an approver, is refused
    unexplained = client.patch(f"/api/withdrawal-requests/{request.id}/", {"reason": "x"}, format="json")
    assert unexplained.json()["code"] == "reason_required"
    refused = api(staff["approver"]).patch(
        f"/api/withdrawal-requests/{request.id}/", {"reason": "x", "change_reason": "y"}, format="json"
    )
    assert refused.status_code == 403


# --- bulk by request number, checked before signing --------------------------------------------


def _preview(client, **body):
    return client.post("/api/bulk-actions/preview/", {"entity": "withdrawal", "action": "approve", **body}, format="json")


def test_the_preview_says_what_the_job_would_do_with_each_named_request(api, staff, others):
    # given the approver's unit's pending requests (one the approver filed), an approved one, one
    # edited since the approver saw it, and another unit's request
    people = staff
    fine, edited = (make_request("withdrawal", people["requester"]) for _ in range(2))
    admin = people["admin"]  # who may both file and decide: four eyes keeps their own from them
    filed_by_admin = make_request("withdrawal", admin)
    approved = make_request("withdrawal", people["requester"])
    transition_now(entity="withdrawal", action="approve", actor=people["approver"], request_id=approved.id,
                   signature_id=sign(people["approver"], "withdrawal", "approve"))
    from backend.records.services import request_update

    request_update(entity="withdrawal", actor=people["requester"], request_id=edited.id, expected_version=1,
                   reason="changed", change_reason="typo")
    # (numbers are per unit: the other unit's sixth has a number no request of ours has)
    theirs = [make_request("withdrawal", others["requester"]) for _ in range(6)][-1]

    signatures, entries = Signature.objects.count(), AuditEntry.objects.count()

    # when the admin checks an approval of them, by number (any case) and by id, one named twice
    response = _preview(api(admin), numbers=[
        fine.request_number.lower(), approved.request_number, filed_by_admin.request_number,
        theirs.request_number, "WR-9999-0001", fine.request_number,
    ], items=[{"id": str(edited.id), "version": 1}])

    # then each comes back with what the job would do, in the order named
    assert response.status_code == 200, response.content
    body = response.json()
    got = [(i["ref"], i["ok"], i["code"], i["request_number"]) for i in body["items"]]
    assert got == [
        (fine.request_number.lower(), True, None, fine.request_number),
        (approved.request_number, False, "invalid_transition", approved.request_number),
        (filed_by_admin.request_number, False, "four_eyes", filed_by_admin.request_number),
        (theirs.request_number, False, "not_found", None),  # another unit's: as if it did not exist
        ("WR-9999-0001", False, "not_found", None),
        (fine.request_number, False, "duplicate", fine.request_number),
        (str(edited.id), False, "stale_version", edited.request_number),
    ]
    assert (body["count"], body["refused"]) == (1, 6)
    first = body["items"][0]
    assert (first["id"], first["version"], first["status"]) == (str(fine.id), 1, "pending")
    assert all(i["message"] for i in body["items"][1:])
    # and nothing was queued, signed or audited
    assert not Job.objects.exists()
    assert (Signature.objects.count(), AuditEntry.objects.count()) == (signatures, entries)


def test_the_preview_refuses_what_the_job_would_refuse_whole(api, staff):
    request = make_request("withdrawal", staff["requester"])
    number = request.request_number
    denied = _preview(api(staff["requester"]), numbers=[number])
    assert (denied.status_code, denied.json()["code"]) == (403, "permission_denied")
    no_reason = _preview(api(staff["approver"]), action="reject", numbers=[number])
    assert (no_reason.status_code, no_reason.json()["code"]) == (400, "reason_required")
    nothing = _preview(api(staff["approver"]))
    assert nothing.status_code == 400
    resubmit = _preview(api(staff["requester"]), action="resubmit", numbers=[number])
    assert resubmit.json()["items"][0]["code"] == "invalid_transition"
    # a superuser (no unit) takes no bulk action; a deleted request is not there to name
    root = UserFactory(unit=None, username="root-wt32", is_superuser=True, role=Role.ADMIN)
    unit_less = _preview(api(root), numbers=[number])
    assert (unit_less.status_code, unit_less.json()["code"]) == (400, "unit_required")
    request_delete(entity="withdrawal", actor=staff["requester"], request_id=request.id, expected_version=None,
                   reason="filed twice")
    gone = _preview(api(staff["approver"]), numbers=[number]).json()["items"][0]
    assert (gone["ok"], gone["code"], gone["id"]) == (False, "not_found", None)


def test_a_bulk_action_by_request_numbers_queues_their_ids(api, staff, enqueued):
    pending = [make_request("withdrawal", staff["requester"]) for _ in range(2)]
    response = api(staff["approver"]).post("/api/bulk-actions/", signed("approve", {
        "entity": "withdrawal", "action": "approve", "numbers": [pending[0].request_number, pending[1].request_number.lower()],
    }), format="json")
    assert response.status_code == 202, response.content
    job = Job.objects.get(id=response.json()["job"]["id"])
    assert set(job.targets) == {str(r.id) for r in pending}
    # pinned to the versions current when signed, as plain ids are
    assert job.params["versions"] == {str(r.id): 1 for r in pending}


def test_an_unknown_number_refuses_the_bulk_action_before_the_password_is_checked(api, staff, others, enqueued):
    mine = make_request("withdrawal", staff["requester"])
    theirs = make_request("withdrawal", others["requester"])
    response = api(staff["approver"]).post("/api/bulk-actions/", signed("approve", {
        "entity": "withdrawal", "action": "approve", "numbers": [mine.request_number, theirs.request_number + "x", "nonsense"],
    }, password="wrong-password"), format="json")
    assert (response.status_code, response.json()["code"]) == (400, "unknown_numbers")
    assert response.json()["details"] == {"numbers": [theirs.request_number + "x", "nonsense"]}
    # no job, and the wrong password was never tried (no failed signature counted)
    assert not Job.objects.exists()
    assert not AuditEntry.objects.filter(action="signature_failed").exists()


# --- inputs: lists and previews never fail on what a client sends ------------------------------

LIST_PARAMS = st.dictionaries(
    st.sampled_from(["page", "page_size", "status", "reserved", "available", "crate_number", "search", "ordering"]),
    st.one_of(
        st.text(max_size=20), st.integers(-5, 1000).map(str),
        st.sampled_from(["true", "false", "in_storage", "pending", "0"]),
    ),
    max_size=4,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=LIST_PARAMS, path=st.sampled_from(["/api/crates/", "/api/withdrawal-requests/", "/api/transfer-requests/"]))
def test_list_filters_and_paging_answer_every_input_without_a_server_error(api, staff, params, path):
    response = api(staff["approver"]).get(path, params)
    assert response.status_code in (200, 400, 404), (params, response.status_code)
    body = response.json()
    if response.status_code == 200:
        assert isinstance(body["results"], list) and body["count"] >= len(body["results"])
    else:
        assert body["code"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    numbers=st.lists(st.one_of(st.text(max_size=70), st.uuids().map(str)), max_size=5),
    action=st.sampled_from(["approve", "reject", "send-back", "resubmit", "explode"]),
    entity=st.sampled_from(["withdrawal", "transfer", "crate"]),
)
def test_the_preview_answers_every_input_with_a_defined_code(api, staff, numbers, action, entity):
    response = api(staff["approver"]).post(
        "/api/bulk-actions/preview/", {"entity": entity, "action": action, "numbers": numbers, "reason": "r"}, format="json"
    )
    assert response.status_code in (200, 400, 403), response.content
    if response.status_code == 200:
        assert [i["ok"] for i in response.json()["items"]] == [False] * len(numbers)
    else:
        assert response.json()["code"]

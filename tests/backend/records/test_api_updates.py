"""Synchronous writes over HTTP: create, PUT (all fields) vs PATCH (some), delete, and their events."""

from __future__ import annotations

import pytest

from backend.records.models import Crate, TransferRequest, WithdrawalRequest
from tests.support.db import events, last_seq
from tests.support.factories import CrateFactory, UnitFactory, make_request, unit_staff

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    return unit_staff(UnitFactory(code="own"))


def test_create_a_crate_answers_201_with_the_crate(api, staff):
    response = api(staff["store"]).post("/api/crates/", {"location": "Aisle 4", "destruction_due": "2031-12-31"}, format="json")
    assert response.status_code == 201
    crate = Crate.objects.get()
    assert response.json() == {
        "id": str(crate.id), "crate_number": crate.crate_number, "unit": str(staff["store"].unit_id), "status": "in_storage",
        "location": "Aisle 4", "destruction_due": "2031-12-31", "version": 1,
        "created_at": response.json()["created_at"], "updated_at": response.json()["updated_at"],
        "deleted_at": None, "deleted_by": None, "delete_reason": "", "reserved": False, "reserved_by": None,
        "on_hold": False,
    }


def test_create_a_request_answers_201_and_ignores_a_version(api, staff):
    crate = CrateFactory(unit=staff["requester"].unit)
    response = api(staff["requester"]).post(
        "/api/withdrawal-requests/", {"crates": [str(crate.id)], "reason": "Audit", "version": 9}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    assert (body["status"], body["version"], body["reason"], body["crates"], body["created_by"]) == (
        "pending", 1, "Audit", [str(crate.id)], str(staff["requester"].id),
    )
    assert body["request_number"].startswith("WR-")


def test_put_needs_every_required_field(api, staff):
    request = make_request("withdrawal", staff["requester"])
    response = api(staff["requester"]).put(f"/api/withdrawal-requests/{request.id}/", {"reason": "only this"}, format="json")
    assert (response.status_code, response.json()["code"]) == (400, "invalid")
    assert set(response.json()["details"]) == {"crates"}
    assert WithdrawalRequest.objects.get(id=request.id).version == 1


def test_put_replaces_crates_and_reason(api, staff):
    request = make_request("withdrawal", staff["requester"])
    crate = CrateFactory(unit=staff["requester"].unit)
    response = api(staff["requester"]).put(
        f"/api/withdrawal-requests/{request.id}/", {"crates": [str(
            crate.id,
        )], "reason": "new", "version": 1, "change_reason": "wrong crate"}, format="json"
    )
    assert response.status_code == 200
    assert (response.json()["crates"], response.json()["reason"], response.json()["version"]) == ([str(crate.id)], "new", 2)


def test_patch_changes_only_what_it_names(api, staff):
    request = make_request("withdrawal", staff["requester"])
    crates = [str(c.id) for c in request.crates.all()]
    seq = last_seq(staff["requester"].unit)
    response = api(
        staff["requester"],
    ).patch(f"/api/withdrawal-requests/{request.id}/", {"reason": "clarified", "change_reason": "unclear"}, format="json")
    assert response.status_code == 200
    assert (response.json()["crates"], response.json()["reason"], response.json()["version"]) == (crates, "clarified", 2)
    assert [e[:2] for e in events(staff["requester"].unit, seq)] == [("withdrawal", "updated")]


def test_patch_can_move_a_transfer_to_another_destination(api, staff):
    old, new = UnitFactory(code="old"), UnitFactory(code="new")
    transfer = make_request("transfer", staff["requester"], destination_unit_id=old.id)
    seqs = (last_seq(old), last_seq(new))
    response = api(staff["requester"]).patch(
        f"/api/transfer-requests/{transfer.id}/", {"destination_unit": str(new.id), "change_reason": "moved site"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["destination_unit"] == str(new.id)
    assert TransferRequest.objects.get(id=transfer.id).destination_unit_id == new.id
    assert [e[:2] for e in events(old, seqs[0])] == [("transfer", "deleted")]
    assert [e[:2] for e in events(new, seqs[1])] == [("transfer", "created")]
    # and the old destination no longer sees it, the new one does
    assert api(unit_staff(old)["admin"]).get(f"/api/transfer-requests/{transfer.id}/").status_code == 404
    assert api(unit_staff(new)["admin"]).get(f"/api/transfer-requests/{transfer.id}/").status_code == 200


def test_patch_cannot_point_a_transfer_at_its_own_unit(api, staff):
    transfer = make_request("transfer", staff["requester"])
    response = api(staff["requester"]).patch(
        f"/api/transfer-requests/{transfer.id}/", {"destination_unit": str(
            staff["requester"].unit_id,
        ), "change_reason": "why not"}, format="json"
    )
    assert (response.status_code, response.json()["code"]) == (400, "destination_same_unit")


def test_put_on_a_transfer_needs_its_destination(api, staff):
    transfer = make_request("transfer", staff["requester"])
    crates = [str(c.id) for c in transfer.crates.all()]
    response = api(staff["requester"]).put(f"/api/transfer-requests/{transfer.id}/", {"crates": crates}, format="json")
    assert (response.status_code, response.json()["code"]) == (400, "invalid")
    assert set(response.json()["details"]) == {"destination_unit"}


def test_editing_a_decided_request_is_409(api, staff):
    request = make_request("withdrawal", staff["requester"])
    WithdrawalRequest.objects.filter(id=request.id).update(status="approved")
    response = api(
        staff["requester"],
    ).patch(f"/api/withdrawal-requests/{request.id}/", {"reason": "x", "change_reason": "y"}, format="json")
    assert (response.status_code, response.json()["code"]) == (409, "invalid_transition")


def test_delete_a_request_answers_204(api, staff):
    request = make_request("destruction", staff["requester"])
    response = api(staff["requester"]).delete(
        f"/api/destruction-requests/{request.id}/", {"reason": "filed twice"}, format="json", HTTP_IF_MATCH='"1"'
    )
    assert response.status_code == 204 and response.content == b""
    assert api(staff["requester"]).get(f"/api/destruction-requests/{request.id}/").status_code == 404


def test_patch_a_crate_and_clear_its_due_date(api, staff):
    crate = CrateFactory(unit=staff["store"].unit, location="A", destruction_due="2030-01-01")
    response = api(staff["store"]).patch(f"/api/crates/{crate.id}/", {"destruction_due": None}, format="json")
    assert response.status_code == 200
    assert (response.json()["location"], response.json()["destruction_due"], response.json()["version"]) == ("A", None, 2)

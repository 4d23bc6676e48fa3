"""`X-Records-Seq` on the unit lists: the unit's seq as of the list's own database snapshot."""

from __future__ import annotations

import pytest

from backend.accounts.models import Role
from backend.events.models import UnitSequence
from backend.events.snapshot import EPOCH_HEADER, SEQ_HEADER
from backend.records import services
from tests.support.factories import CrateFactory, UnitFactory, UserFactory, make_request, unit_staff

pytestmark = pytest.mark.django_db

LISTS = ["/api/crates/", "/api/withdrawal-requests/", "/api/destruction-requests/", "/api/transfer-requests/",
         "/api/sendback-records/"]


@pytest.fixture
def staff():
    return unit_staff(UnitFactory(code="wm"))


@pytest.mark.parametrize("path", LISTS)
def test_every_unit_list_names_the_units_seq_and_epoch(api, staff, path):
    # given a unit whose stream is at seq 3
    crate = CrateFactory(unit=staff[Role.STORE].unit)
    for bay in ("A", "B", "C"):
        services.crate_relocate(actor=staff[Role.STORE], crate_id=crate.id, location=bay)
    counter = UnitSequence.objects.get(unit_id=staff[Role.STORE].unit_id)

    # when any of its lists is read
    response = api(staff[Role.APPROVER]).get(path)

    # then it carries that seq and the stream's epoch
    assert response.status_code == 200
    assert (response[SEQ_HEADER], response[EPOCH_HEADER]) == ("3", counter.epoch)


def test_the_seq_is_the_readers_units_not_another_units(api, staff):
    other = unit_staff(UnitFactory(code="wm-other"))
    make_request("withdrawal", other[Role.REQUESTER])  # seq 1 of the other unit, none of ours
    make_request("withdrawal", other[Role.REQUESTER])

    response = api(staff[Role.REQUESTER]).get("/api/withdrawal-requests/")

    assert response[SEQ_HEADER] == "0"
    assert response.json()["results"] == []


def test_a_superusers_list_spans_units_and_carries_no_seq(api, staff):
    root = UserFactory(unit=staff[Role.STORE].unit, role=Role.ADMIN, is_superuser=True, is_staff=True)
    make_request("withdrawal", staff[Role.REQUESTER])

    response = api(root).get("/api/withdrawal-requests/")

    assert response.status_code == 200
    assert SEQ_HEADER not in response and EPOCH_HEADER not in response
    # positive control: the same list for a unit user does carry it
    assert api(staff[Role.REQUESTER]).get("/api/withdrawal-requests/")[SEQ_HEADER] == "1"


def test_one_object_and_writes_carry_no_seq(api, staff):
    request = make_request("withdrawal", staff[Role.REQUESTER])
    client = api(staff[Role.REQUESTER])

    assert SEQ_HEADER not in client.get(f"/api/withdrawal-requests/{request.id}/")
    assert SEQ_HEADER in client.get("/api/withdrawal-requests/")

"""Lists: `?status=` and `?search=` filters, a stable order, and page-number pagination."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from backend.records.models import Crate, CrateStatus, WithdrawalRequest
from tests.support.factories import CrateFactory, UnitFactory, make_request, unit_staff
from tests.support.signing import sign, transition_now

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    return unit_staff(UnitFactory(code="own"))


def _ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_crates_filter_by_one_or_more_statuses(api, staff):
    unit = staff["store"].unit
    stored = CrateFactory(unit=unit)
    withdrawn = CrateFactory(unit=unit, status=CrateStatus.WITHDRAWN)
    destroyed = CrateFactory(unit=unit, status=CrateStatus.DESTROYED)
    client = api(staff["store"])
    assert _ids(client.get("/api/crates/?status=in_storage")) == [str(stored.id)]
    assert set(_ids(client.get("/api/crates/?status=withdrawn&status=destroyed"))) == {str(withdrawn.id), str(destroyed.id)}
    bad = client.get("/api/crates/?status=lost")
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid")
    assert set(bad.json()["details"]) == {"status"}


def test_crates_search_by_number_and_location(api, staff):
    unit = staff["store"].unit
    a = CrateFactory(unit=unit, crate_number="CR-2026-0042", location="Vault North")
    b = CrateFactory(unit=unit, crate_number="CR-2026-0043", location="Aisle 5")
    client = api(staff["store"])
    assert _ids(client.get("/api/crates/?search=0042")) == [str(a.id)]
    assert _ids(client.get("/api/crates/?search=aisle")) == [str(b.id)]
    assert _ids(client.get("/api/crates/?search=nothing-like-it")) == []


def test_crates_come_newest_first_in_a_stable_order_across_pages(api, staff):
    # given 5 crates, three of them created at the same instant (the tie the id breaks)
    unit = staff["store"].unit
    now = timezone.now()
    same = [CrateFactory(unit=unit, created_at=now) for _ in range(3)]
    older = CrateFactory(unit=unit, created_at=now - timedelta(minutes=1))
    newer = CrateFactory(unit=unit, created_at=now + timedelta(minutes=1))
    expected = [str(newer.id), *sorted(str(c.id) for c in same), str(older.id)]

    # when they are read two per page
    client = api(staff["store"])
    first = client.get("/api/crates/?page_size=2")
    body = first.json()

    # then pages carry count/next/previous and together give every crate exactly once, in order
    assert body["count"] == 5 and body["previous"] is None
    assert body["next"].endswith("/api/crates/?page=2&page_size=2")
    pages = _ids(first) + _ids(client.get("/api/crates/?page=2&page_size=2"))
    pages += _ids(client.get("/api/crates/?page=3&page_size=2"))
    assert pages == expected
    assert client.get("/api/crates/?page=3&page_size=2").json()["next"] is None
    # and the same order every time
    assert _ids(client.get("/api/crates/?page_size=5")) == expected


def test_explicit_ordering_is_allowed_on_listed_fields(api, staff):
    unit = staff["store"].unit
    crates = [CrateFactory(unit=unit, crate_number=f"CR-2026-{n:04d}") for n in (3, 1, 2)]
    numbers = [row["crate_number"] for row in api(staff["store"]).get("/api/crates/?ordering=crate_number").json()["results"]]
    assert numbers == ["CR-2026-0001", "CR-2026-0002", "CR-2026-0003"]
    assert len(crates) == 3


def test_page_size_is_capped(api, staff):
    # given more crates than the largest page
    Crate.objects.bulk_create(Crate(unit=staff["store"].unit, crate_number=f"CR-CAP-{i:04d}") for i in range(501))
    # when a client asks for a page far larger than the cap
    body = api(staff["store"]).get("/api/crates/?page_size=100000").json()
    # then it gets the capped page (500) and a link to the rest
    assert (body["count"], len(body["results"])) == (501, 500)
    assert body["next"] is not None


def test_crate_rows_have_the_contract_fields(api, staff):
    crate = CrateFactory(unit=staff["store"].unit, location="Aisle 2")
    row = api(staff["store"]).get(f"/api/crates/{crate.id}/").json()
    assert {"id", "crate_number", "unit", "status", "location", "destruction_due", "version"} <= set(row)
    assert (row["unit"], row["status"], row["version"]) == (str(crate.unit_id), "in_storage", 1)


@pytest.fixture
def requests(staff):
    """Four withdrawal requests: pending, approved, rejected, sent back (oldest first)."""
    made = {}
    for status, action in [("pending", None), ("approved", "approve"), ("rejected", "reject"), ("sent_back", "send_back")]:
        request = make_request("withdrawal", staff["requester"])
        if action:
            request = transition_now(
                entity="withdrawal", action=action, actor=staff["approver"], request_id=request.id, reason="r",
                    signature_id=sign(staff["approver"], "withdrawal", action)
            )
        made[status] = request
    return made


def test_requests_filter_by_status(api, staff, requests):
    client = api(staff["requester"])
    for status, request in requests.items():
        assert _ids(client.get(f"/api/withdrawal-requests/?status={status}")) == [str(request.id)]
    both = set(_ids(client.get("/api/withdrawal-requests/?status=pending&status=sent_back")))
    assert both == {str(requests["pending"].id), str(requests["sent_back"].id)}


def test_requests_search_by_number_and_reason(api, staff, requests):
    WithdrawalRequest.objects.filter(id=requests["rejected"].id).update(reason="Tax audit 2019")
    client = api(staff["requester"])
    number = requests["approved"].request_number
    assert _ids(client.get(f"/api/withdrawal-requests/?search={number}")) == [str(requests["approved"].id)]
    assert _ids(client.get("/api/withdrawal-requests/?search=tax%20audit")) == [str(requests["rejected"].id)]


def test_requests_filter_by_crate(api, staff, requests):
    crate = requests["approved"].crates.get()
    assert _ids(api(staff["requester"]).get(f"/api/withdrawal-requests/?crate={crate.id}")) == [str(requests["approved"].id)]


def test_requests_are_listed_newest_first_and_paginated(api, staff, requests):
    client = api(staff["requester"])
    newest_first = [str(requests[s].id) for s in ("sent_back", "rejected", "approved", "pending")]
    first = client.get("/api/withdrawal-requests/?page_size=3")
    assert first.json()["count"] == 4 and first.json()["next"].endswith("page=2&page_size=3")
    assert _ids(first) + _ids(client.get("/api/withdrawal-requests/?page=2&page_size=3")) == newest_first


def test_request_rows_have_the_contract_fields(api, staff, requests):
    row = api(staff["requester"]).get(f"/api/withdrawal-requests/{requests['sent_back'].id}/").json()
    contract = {"id", "request_number", "unit", "crates", "status", "reason", "created_by", "created_at", "updated_at", "version"}
    assert contract <= set(row)
    assert row["crates"] == [str(requests["sent_back"].crates.get().id)]
    assert (row["status"], row["version"], row["decision_reason"]) == ("sent_back", 2, "r")


def test_default_page_size_is_50(api, staff):
    Crate.objects.bulk_create(Crate(unit=staff["store"].unit, crate_number=f"CR-P-{n:03d}") for n in range(51))
    body = api(staff["store"]).get("/api/crates/").json()
    assert (body["count"], len(body["results"])) == (51, 50)


def test_sendback_records_are_listed_with_the_contract_fields_and_filter_by_request(api, staff, requests):
    # given a second sent-back request of another kind
    other = make_request("destruction", staff["requester"])
    transition_now(
        entity="destruction", action="send_back", actor=staff["approver"], request_id=other.id, reason="x",
            signature_id=sign(staff["approver"], "destruction", "send_back")
    )
    client = api(staff["requester"])

    # then both records are listed, newest first, each naming its request
    rows = client.get("/api/sendback-records/").json()["results"]
    assert [(r["entity"], r["request_id"]) for r in rows] == [
        ("destruction", str(other.id)), ("withdrawal", str(requests["sent_back"].id)),
    ]
    assert set(rows[1]) == {"id", "entity", "request_id", "reason", "created_by", "created_at"}
    assert (rows[1]["reason"], rows[1]["created_by"]) == ("r", str(staff["approver"].id))
    # and filter by the request they belong to
    only = client.get(f"/api/sendback-records/?request_id={other.id}").json()["results"]
    assert [r["request_id"] for r in only] == [str(other.id)]


def test_list_filters_narrow_lists_not_the_object_an_action_names(api, staff, requests):
    """An action on one crate or request finds it by id and by what the user may see, never by a
    list's filters: they are not run (django-filter builds and validates a FilterSet each time,
    ~1.4 ms of a relocation's ~12 ms of CPU), and a stray `?status=` or `?search=` on its URL
    neither hides the object nor turns into a 400."""
    crate = CrateFactory(unit=staff["store"].unit, location="Aisle 2")
    store, requester = api(staff["store"]), api(staff["requester"])
    assert store.get(f"/api/crates/{crate.id}/?status=withdrawn&search=nothing").status_code == 200
    assert store.get(f"/api/crates/{crate.id}/?status=lost").status_code == 200
    moved = store.post(f"/api/crates/{crate.id}/relocate/?status=lost", {"location": "Bay 1"}, format="json")
    assert moved.status_code == 202, moved.content
    pending = requests["pending"]
    assert requester.get(f"/api/withdrawal-requests/{pending.id}/?status=approved").status_code == 200
    # while the lists still filter (and refuse a status that does not exist)
    assert str(crate.id) not in _ids(store.get("/api/crates/?status=withdrawn"))
    assert _ids(store.get("/api/crates/?search=nothing-like-it")) == []
    assert store.get("/api/crates/?status=lost").status_code == 400

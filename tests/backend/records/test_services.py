"""Synchronous services other than transitions: crates, request create / edit / delete, numbering."""

from __future__ import annotations

from datetime import date

import pytest
from django.utils import timezone

from backend.common.errors import (
    CrateUnavailable,
    InvalidTransition,
    NotFound,
    RoleRequired,
    StaleVersion,
    ValidationFailed,
)
from backend.events.models import OutboxEvent
from backend.records import services
from backend.records.models import Crate, CrateStatus, RequestStatus, TransferRequest, WithdrawalRequest
from tests.support.db import events, last_seq, make_superuser, request_snapshot
from tests.support.factories import CrateFactory, UnitFactory, make_request, unit_staff
from tests.support.signing import sign, transition_now

pytestmark = pytest.mark.django_db
YEAR = timezone.now().year


@pytest.fixture
def unit():
    return UnitFactory()


@pytest.fixture
def staff(unit):
    return unit_staff(unit)


def _crate_event(crate: Crate, action: str, by) -> tuple:
    data = {"id": str(crate.id), "status": crate.status, "crate_number": crate.crate_number, "actor": by.username}
    return ("crate", action, data)


def _request_event(request, action: str, by, entity: str = "withdrawal") -> tuple:
    data = {"id": str(request.id), "status": request.status, "request_number": request.request_number, "actor": by.username}
    return (entity, action, data)


# --- crates -----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["store", "admin"])
def test_store_and_admin_create_numbered_crates(unit, staff, role):
    # given the archive-wide crate counter at zero
    seq = last_seq(unit)

    # when two crates are created
    first = services.crate_create(actor=staff[role], location="Aisle 3", destruction_due=date(2030, 1, 1))
    second = services.crate_create(actor=staff[role])

    # then they are numbered in sequence, in storage, at version 1, and announced
    assert (first.crate_number, second.crate_number) == (f"CR-{YEAR}-0001", f"CR-{YEAR}-0002")
    assert (first.unit_id, first.status, first.location, first.destruction_due, first.version) == (
        unit.id, CrateStatus.IN_STORAGE, "Aisle 3", date(2030, 1, 1), 1,
    )
    assert events(unit, seq) == [_crate_event(first, "created", staff[role]), _crate_event(second, "created", staff[role])]


@pytest.mark.parametrize("role", ["requester", "approver"])
def test_other_roles_cannot_create_crates(unit, staff, role):
    with pytest.raises(RoleRequired):
        services.crate_create(actor=staff[role])
    assert Crate.objects.count() == 0 and OutboxEvent.objects.count() == 0


def test_a_superuser_creates_crates_only_for_a_named_unit(unit):
    root = make_superuser()
    with pytest.raises(ValidationFailed) as refused:
        services.crate_create(actor=root)
    assert refused.value.code == "unit_required"
    crate = services.crate_create(actor=root, unit=unit)
    assert crate.unit_id == unit.id


def test_crate_numbers_are_archive_wide_so_a_transferred_crate_stays_unique():
    # given two units creating crates in turn
    north, south = UnitFactory(), UnitFactory()
    a = services.crate_create(actor=unit_staff(north)["store"])
    b = services.crate_create(actor=unit_staff(south)["store"])
    assert (a.crate_number, b.crate_number) == (f"CR-{YEAR}-0001", f"CR-{YEAR}-0002")


def test_bulk_crates_take_one_contiguous_block_and_one_event_each(unit, staff):
    services.crate_create(actor=staff["store"])
    seq = last_seq(unit)
    crates = services.crates_create_bulk(actor=staff["store"], unit=unit, count=3)
    assert [c.crate_number for c in crates] == [f"CR-{YEAR}-{n:04d}" for n in (2, 3, 4)]
    assert events(unit, seq) == [_crate_event(c, "created", staff["store"]) for c in crates]
    with pytest.raises(NotFound):
        services.crates_create_bulk(actor=staff["store"], unit=UnitFactory(), count=1)


def test_crate_update_bumps_the_version_and_announces_it(unit, staff):
    crate = CrateFactory(unit=unit)
    seq = last_seq(unit)
    updated = services.crate_update(actor=staff["store"], crate_id=crate.id, expected_version=1, location="Aisle 9")
    crate.refresh_from_db()
    assert (crate.location, crate.version, updated.version) == ("Aisle 9", 2, 2)
    assert events(unit, seq) == [_crate_event(crate, "updated", staff["store"])]


def test_crate_update_refuses_stale_versions_other_units_and_destroyed_crates(unit, staff):
    crate = CrateFactory(unit=unit, version=3)
    with pytest.raises(StaleVersion):
        services.crate_update(actor=staff["store"], crate_id=crate.id, expected_version=2, location="x")
    with pytest.raises(NotFound):
        services.crate_update(actor=unit_staff(UnitFactory())["store"], crate_id=crate.id, expected_version=None, location="x")
    with pytest.raises(RoleRequired):
        services.crate_update(actor=staff["approver"], crate_id=crate.id, expected_version=None, location="x")
    gone = CrateFactory(unit=unit, status=CrateStatus.DESTROYED)
    with pytest.raises(InvalidTransition):
        services.crate_update(actor=staff["store"], crate_id=gone.id, expected_version=None, location="x")
    crate.refresh_from_db()
    assert (crate.location, crate.version) == ("Aisle 1", 3)
    assert OutboxEvent.objects.count() == 0


def test_relocation_needs_a_location(unit, staff):
    crate = CrateFactory(unit=unit)
    with pytest.raises(ValidationFailed) as refused:
        services.crate_relocate(actor=staff["store"], crate_id=crate.id, location="   ")
    assert refused.value.code == "location_required"
    moved = services.crate_relocate(actor=staff["store"], crate_id=crate.id, location="  Vault 2 ")
    assert (moved.location, moved.version) == ("Vault 2", 2)


def test_a_crate_never_requested_can_be_deleted(unit, staff):
    crate = CrateFactory(unit=unit)
    seq = last_seq(unit)
    services.crate_delete(reason="deleted in a test", actor=staff["store"], crate_id=crate.id, expected_version=1)
    # kept, marked deleted (soft delete), and announced as gone
    crate.refresh_from_db()
    assert (crate.deleted_by, crate.delete_reason, crate.version) == (staff["store"], "deleted in a test", 2)
    assert crate.deleted_at is not None
    assert events(unit, seq) == [_crate_event(crate, "deleted", staff["store"])]


@pytest.mark.parametrize("path", [[], ["reject"]], ids=["open-request", "closed-request"])
def test_a_crate_that_was_ever_requested_stays(unit, staff, path):
    # given a crate in a request, open or already decided
    crate = CrateFactory(unit=unit)
    request = make_request("withdrawal", staff["requester"], [crate])
    for action in path:
        transition_now(
            entity="withdrawal", action=action, actor=staff["approver"], request_id=request.id, reason="r",
                signature_id=sign(staff["approver"], "withdrawal", action)
        )
    events_before = OutboxEvent.objects.count()

    # when the store tries to delete it
    with pytest.raises(CrateUnavailable):
        services.crate_delete(reason="deleted in a test", actor=staff["store"], crate_id=crate.id, expected_version=None)

    # then it is still there, in the request, and nothing was announced
    assert Crate.objects.filter(id=crate.id).exists()
    assert list(WithdrawalRequest.objects.get(id=request.id).crates.all()) == [crate]
    assert OutboxEvent.objects.count() == events_before


def test_crate_delete_refuses_stale_versions_roles_and_other_units(unit, staff):
    crate = CrateFactory(unit=unit, version=2)
    with pytest.raises(StaleVersion):
        services.crate_delete(reason="deleted in a test", actor=staff["store"], crate_id=crate.id, expected_version=1)
    with pytest.raises(RoleRequired):
        services.crate_delete(reason="deleted in a test", actor=staff["requester"], crate_id=crate.id, expected_version=None)
    with pytest.raises(NotFound):
        services.crate_delete(
            reason="deleted in a test", actor=unit_staff(UnitFactory())["admin"], crate_id=crate.id, expected_version=None,
        )
    assert Crate.objects.filter(id=crate.id).exists() and OutboxEvent.objects.count() == 0


# --- request create ---------------------------------------------------------------------------


@pytest.mark.parametrize("entity,prefix", [("withdrawal", "WR"), ("destruction", "DR"), ("transfer", "TR")])
def test_request_numbers_are_per_unit_and_kind(entity, prefix):
    # given two units
    a, b = unit_staff(UnitFactory()), unit_staff(UnitFactory())
    # when each files requests
    first = make_request(entity, a["requester"])
    second = make_request(entity, a["requester"])
    other = make_request(entity, b["requester"])
    # then each unit counts on its own
    assert [first.request_number, second.request_number, other.request_number] == [
        f"{prefix}-{YEAR}-0001", f"{prefix}-{YEAR}-0002", f"{prefix}-{YEAR}-0001",
    ]


def test_request_numbers_are_never_reused_after_a_delete(unit, staff):
    first = make_request("withdrawal", staff["requester"])
    second = make_request("withdrawal", staff["requester"])
    services.request_delete(
        reason="deleted in a test", entity="withdrawal", actor=staff["requester"], request_id=second.id, expected_version=1,
    )
    third = make_request("withdrawal", staff["requester"])
    assert (first.request_number, third.request_number) == (f"WR-{YEAR}-0001", f"WR-{YEAR}-0003")


def test_a_created_request_is_pending_with_its_crates_and_event(unit, staff):
    crates = [CrateFactory(unit=unit), CrateFactory(unit=unit)]
    seq = last_seq(unit)
    request = services.request_create(
        entity="withdrawal", actor=staff["requester"], crate_ids=[c.id for c in crates], reason="audit"
    )
    assert (request.status, request.version, request.reason, request.created_by_id) == (
        RequestStatus.PENDING, 1, "audit", staff["requester"].id,
    )
    assert set(request.crates.all()) == set(crates)
    assert events(unit, seq) == [_request_event(request, "created", staff["requester"])]


def test_a_created_transfer_is_announced_to_both_units(unit, staff):
    destination = UnitFactory()
    seq, destination_seq = last_seq(unit), last_seq(destination)
    request = make_request("transfer", staff["requester"], destination_unit_id=destination.id)
    assert events(unit, seq) == [_request_event(request, "created", staff["requester"], "transfer")]
    assert events(destination, destination_seq) == [_request_event(request, "created", staff["requester"], "transfer")]


@pytest.mark.parametrize("role", ["approver", "store"])
def test_only_requesters_and_admins_file_requests(unit, staff, role):
    with pytest.raises(RoleRequired):
        make_request("withdrawal", staff[role])
    assert WithdrawalRequest.objects.count() == 0


@pytest.mark.parametrize(
    "crates,code",
    [("none", "crates_required"), ("unknown", "unknown_crate"), ("other_unit", "unknown_crate")],
)
def test_request_crates_must_exist_in_the_unit(unit, staff, crates, code):
    crate_ids = {
        "none": [],
        "unknown": [CrateFactory.build().id],
        "other_unit": [CrateFactory(unit=UnitFactory()).id],
    }[crates]
    with pytest.raises(ValidationFailed) as refused:
        services.request_create(entity="withdrawal", actor=staff["requester"], crate_ids=crate_ids)
    assert refused.value.code == code
    assert WithdrawalRequest.objects.count() == 0 and OutboxEvent.objects.count() == 0


def test_a_crate_in_an_open_request_of_any_kind_is_unavailable(unit, staff):
    crate = CrateFactory(unit=unit)
    make_request("destruction", staff["requester"], [crate])
    with pytest.raises(CrateUnavailable) as refused:
        make_request("withdrawal", staff["requester"], [crate])
    assert refused.value.details == {"crates": [crate.crate_number]}


def test_a_crate_of_a_rejected_request_is_free_again(unit, staff):
    crate = CrateFactory(unit=unit)
    first = make_request("withdrawal", staff["requester"], [crate])
    transition_now(entity="withdrawal", action="reject", actor=staff["approver"], request_id=first.id, reason="no",
        signature_id=sign(staff["approver"], "withdrawal", "reject"))
    again = make_request("withdrawal", staff["requester"], [crate])
    assert list(again.crates.all()) == [crate]


def test_a_crate_out_of_storage_is_unavailable(unit, staff):
    crate = CrateFactory(unit=unit, status=CrateStatus.WITHDRAWN)
    with pytest.raises(CrateUnavailable):
        make_request("destruction", staff["requester"], [crate])


@pytest.mark.parametrize("destination,code", [(None, "destination_required"), ("own", "destination_same_unit")])
def test_a_transfer_needs_another_existing_unit(unit, staff, destination, code):
    destination_id = unit.id if destination == "own" else None
    with pytest.raises(ValidationFailed) as refused:
        make_request("transfer", staff["requester"], destination_unit_id=destination_id)
    assert refused.value.code == code


def test_a_superuser_cannot_file_requests_without_a_unit():
    with pytest.raises(ValidationFailed) as refused:
        services.request_create(entity="withdrawal", actor=make_superuser(), crate_ids=[CrateFactory().id])
    assert refused.value.code == "unit_required"


# --- request update / delete ------------------------------------------------------------------


def test_request_update_changes_reason_and_crates_and_bumps_the_version(unit, staff):
    # given a pending request with one crate
    request = make_request("withdrawal", staff["requester"])
    replacement = CrateFactory(unit=unit)
    seq = last_seq(unit)
    # when the requester edits reason and crates
    updated = services.request_update(change_reason="edited in a test",
        entity="withdrawal", actor=staff["requester"], request_id=request.id, expected_version=1,
        reason="new reason", crate_ids=[replacement.id],
    )
    # then the request carries them, at version 2, and says so once
    request.refresh_from_db()
    assert (request.reason, request.version, updated.version) == ("new reason", 2, 2)
    assert list(request.crates.all()) == [replacement]
    assert events(unit, seq) == [_request_event(request, "updated", staff["requester"])]


def test_request_update_may_keep_its_own_crates(unit, staff):
    crate = CrateFactory(unit=unit)
    request = make_request("withdrawal", staff["requester"], [crate])
    updated = services.request_update(change_reason="edited in a test",
        entity="withdrawal", actor=staff["requester"], request_id=request.id, expected_version=1, crate_ids=[crate.id]
    )
    assert list(updated.crates.all()) == [crate]


@pytest.mark.parametrize("other_kind", ["withdrawal", "destruction", "transfer"])
def test_request_update_refuses_crates_of_another_open_request(unit, staff, other_kind):
    # given two open requests
    mine = make_request("withdrawal", staff["requester"])
    busy = CrateFactory(unit=unit)
    make_request(other_kind, staff["requester"], [busy])
    before = request_snapshot(mine)
    # when the first is edited to take the other's crate
    with pytest.raises(CrateUnavailable) as refused:
        services.request_update(change_reason="edited in a test",
            entity="withdrawal", actor=staff["requester"], request_id=mine.id, expected_version=1,
            crate_ids=[busy.id],
        )
    # then it is refused and nothing changed
    assert refused.value.details == {"crates": [busy.crate_number]}
    assert request_snapshot(mine) == before


def test_request_update_refuses_stale_and_decided_requests(unit, staff):
    request = make_request("withdrawal", staff["requester"])
    with pytest.raises(StaleVersion):
        services.request_update(change_reason="edited in a test",
            entity="withdrawal", actor=staff["requester"], request_id=request.id, expected_version=7, reason="x"
        )
    transition_now(entity="withdrawal", action="approve", actor=staff["approver"], request_id=request.id,
        signature_id=sign(staff["approver"], "withdrawal", "approve"))
    before = request_snapshot(request)
    with pytest.raises(InvalidTransition):
        services.request_update(change_reason="edited in a test",
            entity="withdrawal", actor=staff["requester"], request_id=request.id, expected_version=None, reason="x"
        )
    with pytest.raises(InvalidTransition):
        services.request_delete(reason="deleted in a test",
            entity="withdrawal", actor=staff["requester"], request_id=request.id, expected_version=None
        )
    assert request_snapshot(request) == before


def test_a_sent_back_request_can_still_be_edited(unit, staff):
    request = make_request("destruction", staff["requester"])
    transition_now(
        entity="destruction", action="send_back", actor=staff["approver"], request_id=request.id, reason="r",
            signature_id=sign(staff["approver"], "destruction", "send_back")
    )
    updated = services.request_update(change_reason="edited in a test",
        entity="destruction", actor=staff["requester"], request_id=request.id, expected_version=2, reason="fixed"
    )
    assert (updated.status, updated.reason, updated.version) == (RequestStatus.SENT_BACK, "fixed", 3)


def test_changing_a_transfers_destination_moves_it_between_units(unit, staff):
    # given a transfer to one unit
    old, new = UnitFactory(), UnitFactory()
    request = make_request("transfer", staff["requester"], destination_unit_id=old.id)
    seqs = {u: last_seq(u) for u in (unit, old, new)}
    # when the requester points it at another unit
    services.request_update(change_reason="edited in a test",
        entity="transfer", actor=staff["requester"], request_id=request.id, expected_version=1,
        destination_unit_id=new.id,
    )
    request.refresh_from_db()
    # then the source sees an update, the old destination sees it leave, the new one sees it arrive
    assert request.destination_unit_id == new.id
    assert events(unit, seqs[unit]) == [_request_event(request, "updated", staff["requester"], "transfer")]
    assert events(old, seqs[old]) == [_request_event(request, "deleted", staff["requester"], "transfer")]
    assert events(new, seqs[new]) == [_request_event(request, "created", staff["requester"], "transfer")]


def test_a_transfer_cannot_be_pointed_at_its_own_unit_even_by_a_superuser(unit, staff):
    request = make_request("transfer", staff["requester"])
    before = request_snapshot(request)
    for actor in (staff["requester"], make_superuser()):
        with pytest.raises(ValidationFailed) as refused:
            services.request_update(change_reason="edited in a test",
                entity="transfer", actor=actor, request_id=request.id, expected_version=1, destination_unit_id=unit.id
            )
        assert refused.value.code == "destination_same_unit"
    assert request_snapshot(request) == before


def test_a_transfers_destination_cannot_edit_or_delete_it(unit, staff):
    request = make_request("transfer", staff["requester"])
    outsider = unit_staff(TransferRequest.objects.get(id=request.id).destination_unit)["admin"]
    before = request_snapshot(request)
    with pytest.raises(RoleRequired):
        services.request_update(
            change_reason="edited in a test", entity="transfer", actor=outsider, request_id=request.id,
            expected_version=None, reason="x",
        )
    with pytest.raises(RoleRequired):
        services.request_delete(
            reason="deleted in a test", entity="transfer", actor=outsider, request_id=request.id, expected_version=None,
        )
    assert request_snapshot(request) == before


@pytest.mark.parametrize("role", ["approver", "store"])
def test_only_requesters_edit_and_delete_requests(unit, staff, role):
    request = make_request("withdrawal", staff["requester"])
    before = request_snapshot(request)
    with pytest.raises(RoleRequired):
        services.request_update(
            change_reason="edited in a test", entity="withdrawal", actor=staff[role], request_id=request.id,
            expected_version=None, reason="x",
        )
    with pytest.raises(RoleRequired):
        services.request_delete(
            reason="deleted in a test", entity="withdrawal", actor=staff[role], request_id=request.id, expected_version=None,
        )
    assert request_snapshot(request) == before


def test_request_delete_announces_it_to_every_unit_that_saw_it_and_frees_the_crates(unit, staff):
    destination = UnitFactory()
    crate = CrateFactory(unit=unit)
    request = make_request("transfer", staff["requester"], [crate], destination_unit_id=destination.id)
    seq, destination_seq = last_seq(unit), last_seq(destination)
    services.request_delete(
        reason="deleted in a test", entity="transfer", actor=staff["requester"], request_id=request.id, expected_version=1,
    )
    request.refresh_from_db()
    assert request.deleted_at is not None and request.delete_reason == "deleted in a test"
    assert events(unit, seq) == [_request_event(request, "deleted", staff["requester"], "transfer")]
    assert events(destination, destination_seq) == [_request_event(request, "deleted", staff["requester"], "transfer")]
    assert make_request("withdrawal", staff["requester"], [crate]).status == RequestStatus.PENDING

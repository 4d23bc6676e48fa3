"""Per-unit seqs under real concurrency on PostgreSQL: every committed change gets the next number,
with no gap and no duplicate, in the order the changes commit."""

from __future__ import annotations

import time
import uuid

import pytest
from django.db import transaction

from backend.accounts.models import Unit
from backend.events.models import OutboxEvent, UnitSequence
from backend.events.services import Change, outbox_write
from backend.records import services
from backend.records.models import Crate, CrateStatus, RequestStatus, TransferRequest
from tests.support.db import postgres_only, run_concurrently
from tests.support.factories import CrateFactory, UnitFactory, make_request, unit_staff
from tests.support.signing import sign, transition_now

pytestmark = postgres_only
N = 20


class Rollback(Exception):
    pass


@pytest.fixture(autouse=True)
def _no_broadcast(monkeypatch):
    # Publishing after COMMIT is the relay's business (tested with real processes elsewhere); here
    # only what commits to the outbox matters.
    monkeypatch.setattr("backend.events.services.outbox_publish", lambda ids: None)


def _committed_seqs(unit) -> list[int]:
    return list(OutboxEvent.objects.filter(unit=unit).order_by("seq").values_list("seq", flat=True))


def test_concurrent_changes_in_one_unit_get_consecutive_seqs():
    # given one unit with N crates
    unit = UnitFactory()
    store = unit_staff(unit)["store"]
    crates = [CrateFactory(unit=unit) for _ in range(N)]

    # when N transactions change them at the same time
    results = run_concurrently(
        N, lambda i: services.crate_update(actor=store, crate_id=crates[i].id, expected_version=1, location=f"Bay {i}")
    )

    # then all committed, and the unit's seqs are exactly 1..N, one per change
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert _committed_seqs(unit) == list(range(1, N + 1))
    assert UnitSequence.objects.get(unit=unit).last_seq == N
    assert sorted(OutboxEvent.objects.filter(unit=unit).values_list("object_id", flat=True), key=str) == sorted(
        (c.id for c in crates), key=str
    )


def test_the_first_changes_of_a_unit_without_a_counter_row_still_line_up():
    # given a unit whose seq counter row does not exist yet
    unit = Unit.objects.create(code="fresh", name="Fresh archive")
    assert not UnitSequence.objects.filter(unit=unit).exists()

    # when N transactions write its first events at the same time
    def change(i):
        with transaction.atomic():
            outbox_write([Change(unit.id, "crate", "updated", {"id": str(uuid.uuid4()), "status": "in_storage"})])

    results = run_concurrently(N, change)

    # then exactly one counter row was made and the seqs are 1..N
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert _committed_seqs(unit) == list(range(1, N + 1))
    assert UnitSequence.objects.get(unit=unit).last_seq == N


def test_rolled_back_transactions_leave_no_gap():
    # given one unit
    unit = UnitFactory()

    # when N transactions write events at once and every third rolls back after writing (holding its
    # numbers for a moment, so the others queue behind it)
    def change(i):
        with transaction.atomic():
            outbox_write([Change(unit.id, "crate", "updated", {"id": str(uuid.uuid4()), "status": "in_storage"})] * 2)
            time.sleep(0.01)
            if i % 3 == 0:
                raise Rollback(i)
        return i

    results = run_concurrently(N, change)

    # then only the committed ones hold seqs, and those are gap-free: 2 per committed transaction
    rolled_back = [r for r in results if isinstance(r, Rollback)]
    assert len(rolled_back) == len(range(0, N, 3))
    committed = [r for r in results if isinstance(r, int)]
    assert len(committed) == N - len(rolled_back)
    assert _committed_seqs(unit) == list(range(1, 2 * len(committed) + 1))
    assert UnitSequence.objects.get(unit=unit).last_seq == 2 * len(committed)


def test_transfers_approved_both_ways_at_once_neither_deadlock_nor_skip():
    # given pending transfers from A to B and from B to A
    a, b = UnitFactory(), UnitFactory()
    staff_a, staff_b = unit_staff(a), unit_staff(b)
    pairs = [(make_request("transfer", staff_a["requester"], destination_unit_id=b.id), staff_a["approver"]) for _ in range(5)]
    pairs += [(make_request("transfer", staff_b["requester"], destination_unit_id=a.id), staff_b["approver"]) for _ in range(5)]
    seqs_before = {a.id: UnitSequence.objects.get(unit=a).last_seq, b.id: UnitSequence.objects.get(unit=b).last_seq}

    # when all are approved at the same time (each touches both units' counters)
    results = run_concurrently(
        len(pairs),
        lambda i: transition_now(
            entity="transfer", action="approve", actor=pairs[i][1], request_id=pairs[i][0].id,
                signature_id=sign(pairs[i][1], "transfer", "approve")
        ),
    )

    # then every approval committed, and each unit's seqs still run 1..last without a gap
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert set(TransferRequest.objects.values_list("status", flat=True)) == {RequestStatus.APPROVED}
    assert Crate.objects.filter(unit=a).count() == Crate.objects.filter(unit=b).count() == 5
    assert set(Crate.objects.values_list("status", flat=True)) == {CrateStatus.IN_STORAGE}
    for unit in (a, b):
        last = UnitSequence.objects.get(unit=unit).last_seq
        # 10 transfers x (request updated) + 5 crates out + 5 crates in, per unit
        assert last == seqs_before[unit.id] + 10 + 5 + 5
        assert _committed_seqs(unit) == list(range(1, last + 1))

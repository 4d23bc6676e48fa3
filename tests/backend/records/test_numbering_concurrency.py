"""Request numbers under real concurrency on PostgreSQL: distinct, consecutive, never reused."""

from __future__ import annotations

import pytest
from django.utils import timezone

from backend.events.models import OutboxEvent
from backend.records import services
from backend.records.models import NumberCounter, WithdrawalRequest
from tests.support.db import postgres_only, run_concurrently
from tests.support.factories import CrateFactory, UnitFactory, unit_staff

pytestmark = postgres_only
N = 20


@pytest.fixture(autouse=True)
def _no_broadcast(monkeypatch):
    monkeypatch.setattr("backend.events.services.outbox_publish", lambda ids: None)


def test_concurrent_creates_get_distinct_consecutive_numbers_and_never_reuse_them():
    # given a unit that has never numbered a withdrawal (no counter row yet) and N free crates
    year = timezone.now().year
    unit = UnitFactory()
    requester = unit_staff(unit)["requester"]
    crates = [CrateFactory(unit=unit) for _ in range(N)]
    assert not NumberCounter.objects.filter(scope=str(unit.id), prefix="WR").exists()

    # when N requesters file at the same time
    results = run_concurrently(
        N,
        lambda i: services.request_create(entity="withdrawal", actor=requester, crate_ids=[crates[i].id]).request_number,
    )

    # then every create committed with its own number, WR-<year>-0001..0020, and its own seq
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert sorted(results) == [f"WR-{year}-{n:04d}" for n in range(1, N + 1)]
    assert sorted(WithdrawalRequest.objects.values_list("request_number", flat=True)) == sorted(results)
    assert sorted(OutboxEvent.objects.filter(unit=unit).values_list("seq", flat=True)) == list(range(1, N + 1))

    # and after the newest is deleted, the next create does not get its number again
    newest = WithdrawalRequest.objects.get(request_number=f"WR-{year}-{N:04d}")
    services.request_delete(
        reason="deleted in a test", entity="withdrawal", actor=requester, request_id=newest.id, expected_version=1,
    )
    again = services.request_create(entity="withdrawal", actor=requester, crate_ids=[CrateFactory(unit=unit).id])
    assert again.request_number == f"WR-{year}-{N + 1:04d}"

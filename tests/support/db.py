"""Reading back what the services wrote: outbox frames, counters and a snapshot of a request's world."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, connections

from backend.accounts.models import Unit, User
from backend.events.models import OutboxEvent, UnitSequence
from backend.records.models import BaseRequest, SendBackRecord
from tests.support.factories import UserFactory


def last_seq(unit: Unit) -> int:
    return UnitSequence.objects.filter(unit=unit).values_list("last_seq", flat=True).first() or 0


def frames(unit: Unit, after_seq: int = 0) -> list[dict[str, Any]]:
    """The unit's decoded `data_update` frames after `after_seq`, in seq order."""
    rows = OutboxEvent.objects.filter(unit=unit, seq__gt=after_seq).order_by("seq")
    return [json.loads(row.frame) for row in rows]


def events(unit: Unit, after_seq: int = 0) -> list[tuple[str, str, dict]]:
    """(entity, action, data) of the unit's events after `after_seq`, in seq order."""
    return [(f["entity"], f["action"], f["data"]) for f in frames(unit, after_seq)]


def outbox_after(unit: Unit, after_seq: int) -> list[OutboxEvent]:
    """The unit's outbox rows after `after_seq`, in seq order."""
    return list(OutboxEvent.objects.filter(unit=unit, seq__gt=after_seq).order_by("seq"))


def seqs(unit: Unit, after_seq: int = 0) -> list[int]:
    return list(OutboxEvent.objects.filter(unit=unit, seq__gt=after_seq).order_by("seq").values_list("seq", flat=True))


def make_superuser() -> User:
    """A Django superuser with no unit: sees and may act on every unit."""
    return UserFactory(unit=None, username="root", is_superuser=True, is_staff=True)


def request_snapshot(request: BaseRequest) -> dict[str, Any]:
    """Everything a refused change must leave untouched."""
    fresh = type(request).objects.get(id=request.id)
    units = {request.unit_id, getattr(request, "destination_unit_id", request.unit_id)}
    return {
        "status": fresh.status,
        "version": fresh.version,
        "decision_reason": fresh.decision_reason,
        "crates": sorted((str(c.id), c.status, str(c.unit_id), c.version) for c in fresh.crates.all()),
        "outbox": OutboxEvent.objects.count(),
        "seqs": {str(u): UnitSequence.objects.get(unit_id=u).last_seq for u in units},
        "sendbacks": SendBackRecord.objects.count(),
    }


def run_concurrently(count: int, work: Callable[[int], Any], timeout: float = 60) -> list[Any]:
    """Run `work(i)` for i in range(count) on real threads released together; each thread has its own
    database connection, closed when it ends. Returns each call's result or the exception it raised."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=timeout)
            results[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - reported to the test, which asserts on it
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,), name=f"concurrent-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(t.is_alive() for t in threads), "a concurrent transaction never finished"
    return results



# SQLite serialises writers (BEGIN IMMEDIATE): there is no race to lose there.
postgres_only = [
    pytest.mark.postgres,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL"),
    pytest.mark.django_db(transaction=True),
]

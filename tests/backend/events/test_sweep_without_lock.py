"""The relay's sweep every second (backend/events/outbox.outbox_sweep) looks for stranded events
without a transaction: on SQLite every transaction takes the one write lock (BEGIN IMMEDIATE), and
a sweep that finds nothing must not stand in the way of the requests' and the worker's writes
(issue 33). One that finds something still publishes it under the lock."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.db import transaction
from django.utils import timezone

from backend.events import outbox
from backend.events.models import OutboxEvent
from backend.records import services
from tests.support.factories import CrateFactory, UnitFactory, unit_staff

pytestmark = pytest.mark.django_db


def test_a_sweep_that_finds_nothing_stranded_opens_no_transaction():
    with mock.patch.object(outbox.transaction, "atomic", side_effect=AssertionError("a transaction was opened")):
        assert outbox.outbox_sweep() == 0


def test_a_sweep_that_finds_a_stranded_event_publishes_it(monkeypatch):
    unit = UnitFactory()
    # (within the test's transaction the publish after COMMIT never runs: as after a crash there)
    with transaction.atomic():
        services.crate_update(actor=unit_staff(unit)["store"], crate_id=CrateFactory(unit=unit).id,
                              expected_version=None, location="Bay 1")
    OutboxEvent.objects.update(created_at=timezone.now() - timedelta(minutes=5))
    sent = []
    monkeypatch.setattr(outbox, "_publish_rows", lambda rows: sent.extend(rows))
    assert outbox.outbox_sweep() >= 1
    assert sent and not OutboxEvent.objects.filter(published_at__isnull=True).exists()

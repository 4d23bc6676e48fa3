"""The publishing side of a late update: when a change's events reach the channel layer more than
REALTIME_STALL_WARN_MS after their timestamp, the committing process logs it, split into the time
before the send (the rest of the transaction, COMMIT) and the send. In-process, real database and
the test's own Redis (the channel layer)."""

from __future__ import annotations

import logging
import re
import time
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from backend.events import outbox
from backend.records import services
from bench.realtime import publish_trace
from tests.support.factories import CrateFactory, UnitFactory, unit_staff

pytestmark = pytest.mark.django_db(transaction=True)

LATE = re.compile(
    r"1 event\(s\) \(unit (?P<unit>\S+) seq (?P<seq>\d+) \.\. unit \S+ seq \d+\) reached the channel layer "
    r"(?P<late>\d+) ms after they were written: (?P<before>\d+) ms before the send \(the rest of the "
    r"transaction, COMMIT\), (?P<send>\d+) ms the send"
)


@pytest.fixture
def crate():
    unit = UnitFactory()
    return unit_staff(unit)["store"], CrateFactory(unit=unit)


def relocate(store, crate, location: str, hold: float = 0.0) -> None:
    with transaction.atomic():
        services.crate_update(actor=store, crate_id=crate.id, expected_version=None, location=location)
        time.sleep(hold)  # the transaction stays open after its events were written


def late_lines(caplog) -> list[re.Match]:
    return [m for r in caplog.records if r.name == outbox.__name__ and (m := LATE.search(r.getMessage()))]


def test_an_update_published_in_time_logs_nothing(crate, caplog):
    store, box = crate
    relocate(store, box, "Bay 1")  # (warm: the channel layer's connection)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=outbox.__name__):
        relocate(store, box, "Bay 2")
    assert late_lines(caplog) == []


def test_a_transaction_held_open_after_its_change_is_logged_as_time_before_the_send(crate, caplog):
    store, box = crate
    with caplog.at_level(logging.WARNING, logger=outbox.__name__):
        relocate(store, box, "Bay 3", hold=0.2)
    [line] = late_lines(caplog)
    assert line["unit"] == str(box.unit_id) and int(line["seq"]) >= 1
    assert int(line["before"]) >= 190 and int(line["late"]) >= int(line["before"])
    # and `make bench` reads that very line from the worker's log
    trace = publish_trace(line.string)
    assert trace["late_publishes"] == 1 and trace["longest_before_send_ms"] == int(line["before"])


def test_a_slow_send_is_logged_as_the_send(crate, caplog, monkeypatch):
    store, box = crate
    relocate(store, box, "Bay 4")
    send = outbox.unit_events_send

    def slow_send(by_unit):
        time.sleep(0.2)
        send(by_unit)

    monkeypatch.setattr(outbox, "unit_events_send", slow_send)
    with caplog.at_level(logging.WARNING, logger=outbox.__name__):
        relocate(store, box, "Bay 5")
    [line] = late_lines(caplog)
    assert int(line["send"]) >= 190 and int(line["before"]) < 100


def test_a_bulk_chunks_late_publish_is_information_not_a_warning(caplog, monkeypatch):
    # given a publish of more events than a change makes (a bulk chunk), written 300 ms ago (rows
    # of no table: marking them published updates nothing)
    monkeypatch.setattr(outbox, "unit_events_send", lambda by_unit: None)
    written = timezone.now() - timedelta(milliseconds=300)
    rows = [{"id": n, "unit_id": "u", "seq": n, "frame": "{}", "activity": "", "created_at": written}
            for n in range(1, outbox.LATE_WARNING_MAX_EVENTS + 2)]
    with caplog.at_level(logging.INFO, logger=outbox.__name__):
        outbox.outbox_publish(rows)
    [record] = [r for r in caplog.records if r.name == outbox.__name__]
    assert record.levelno == logging.INFO and "reached the channel layer" in record.getMessage()

"""The destruction-due alert run by two beat instances at the same moment (two threads, each with its
own database connection): every alert is written and sent exactly once."""

from __future__ import annotations

import pytest

from backend.notifications.models import Notification
from backend.records.services.notices import destruction_due_notify
from tests.support.db import postgres_only, run_concurrently
from tests.support.factories import destruction_due_world

pytestmark = postgres_only


@pytest.fixture
def sent(monkeypatch) -> list:
    calls: list = []
    monkeypatch.setattr("backend.notifications.services.notifications_send", calls.append)
    return calls


def test_two_runs_at_once_write_and_send_each_alert_once(sent, settings):
    settings.NOTIFY_DESTRUCTION_DUE_DAYS = [30, 7]
    destruction_due_world()

    for _ in range(3):  # a few rounds: the race is real only when both insert at the same moment
        Notification.objects.all().delete()
        sent.clear()
        written = run_concurrently(2, lambda i: destruction_due_notify())
        assert not any(isinstance(w, BaseException) for w in written), written
        assert sum(written) == Notification.objects.count() == 6
        ids = sorted(n["id"] for call in sent for items in call.values() for n in items)
        assert ids == sorted(str(pk) for pk in Notification.objects.values_list("id", flat=True))

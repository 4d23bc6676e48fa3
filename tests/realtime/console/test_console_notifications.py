"""The notifications bell in the console, in a real Chromium against real Daphne and Celery
processes: a requester's bell counts up the moment an approver approves their request, the panel
lists it, clicking it marks it read and opens the request's history, and "Mark all read" clears it."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from backend.accounts.models import Role
from backend.notifications.models import Notification
from tests.support.browser import WAIT_MS
from tests.support.factories import UnitFactory, UserFactory, make_request

from .signing import sign_in_dialog

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_the_requesters_bell_counts_up_when_their_request_is_approved(console_daphne, worker, consoles):
    # given a requester with two pending withdrawals, each in their console, and an approver in theirs
    console_daphne.ensure_running()
    unit = UnitFactory()
    requester = UserFactory(unit=unit, role=Role.REQUESTER)
    approver = UserFactory(unit=unit, role=Role.APPROVER)
    first, second = make_request("withdrawal", requester), make_request("withdrawal", requester)
    mine = consoles.open(console_daphne.port, requester.username)
    theirs = consoles.open(console_daphne.port, approver.username)
    expect(mine.get_by_test_id("notifications-count")).to_have_text("0")

    # when the approver approves the first one, signed in the dialog
    theirs.get_by_test_id(f"approve-{first.id}").click()
    sign_in_dialog(theirs)

    # then the requester's bell counts it, live, without a reload
    expect(mine.get_by_test_id("notifications-count")).to_have_text("1", timeout=WAIT_MS)
    notification = Notification.objects.get(user=requester, kind="request_decided")
    # and the panel lists it; clicking it marks it read and opens the request's history
    mine.get_by_test_id("notifications-bell").click()
    item = mine.get_by_test_id(f"notification-{notification.id}")
    expect(item).to_contain_text(f"{first.request_number} approved")
    consoles.shot(mine, "notifications-panel")
    item.click()
    expect(mine.get_by_test_id("history-panel")).to_be_visible()
    expect(mine.get_by_test_id("history-title")).to_have_text(f"History of {first.request_number}")
    expect(mine.get_by_test_id("notifications-count")).to_have_text("0")
    mine.keyboard.press("Escape")

    # when the second is rejected, the bell counts again; "Mark all read" clears it, and a reload keeps 0
    theirs.get_by_test_id(f"reject-{second.id}").click()
    sign_in_dialog(theirs, reason="wrong crate")
    expect(mine.get_by_test_id("notifications-count")).to_have_text("1", timeout=WAIT_MS)
    mine.get_by_test_id("notifications-bell").click()
    mine.get_by_test_id("notifications-read-all").click()
    expect(mine.get_by_test_id("notifications-count")).to_have_text("0")
    assert not Notification.objects.filter(user=requester, read_at__isnull=True).exists()
    mine.reload()
    expect(mine.get_by_test_id("status-badge")).to_have_text("Live", timeout=WAIT_MS)
    expect(mine.get_by_test_id("notifications-count")).to_have_text("0")
    # the approver's own bell counts only their own jobs (job_finished), never the requester's
    assert not Notification.objects.filter(user=approver, kind="request_decided").exists()

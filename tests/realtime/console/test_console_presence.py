"""Presence and selective updates in the console, in a real Chromium against real Daphne (and the
services for the changes): users of a unit see each other online; a record one of them views or is
about to change carries a badge in the others' lists (several users listed), gone when they stop; a
user who signs out or closes the tab is no longer online; "only mine" keeps someone else's update
out of the live feed and lets one's own in; and a stale decision's dialog reloads the list."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from backend.accounts.models import Role
from backend.records import services
from tests.support.browser import CONSOLE_OPTIONS, WAIT_MS
from tests.support.factories import UnitFactory, UserFactory, make_request
from tests.support.signing import sign, transition_now

from .signing import sign_in_dialog

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Lists that never refetch on their own (an update schedules a refetch 10 minutes later).
FROZEN_LISTS = {**CONSOLE_OPTIONS, "debounceMs": 600_000}


def test_two_users_see_each_other_online_and_what_the_other_views_or_edits(console_daphne, consoles):
    # given a pending withdrawal filed by a requester, who watches the console, an approver and an admin
    console_daphne.ensure_running()
    unit = UnitFactory()
    requester = UserFactory(unit=unit, role=Role.REQUESTER)
    approver = UserFactory(unit=unit, role=Role.APPROVER)
    admin = UserFactory(unit=unit, role=Role.ADMIN)
    request = make_request("withdrawal", requester)
    watcher = consoles.open(console_daphne.port, requester.username)
    deciding = consoles.open(console_daphne.port, approver.username)
    third = consoles.open(console_daphne.port, admin.username)

    # then each sees the other online, and themselves as "you"
    for page, me, other in ((watcher, requester, approver), (deciding, approver, requester)):
        online = page.get_by_test_id("online-users")
        expect(online.get_by_test_id(f"online-{other.username}")).to_have_text(other.username)
        expect(online.get_by_test_id(f"online-{me.username}")).to_have_text("you")
    # (over a socket that asked for presence)
    assert all(query.get("presence") == "1" for query in consoles.sockets(watcher))
    badge = watcher.get_by_test_id(f"presence-{request.id}")
    expect(badge).to_have_count(0)

    # when the approver opens the request's history, the requester's row says so
    deciding.get_by_test_id(f"history-{request.id}").click()
    expect(badge).to_have_text(f"{approver.username} is viewing")
    expect(watcher.get_by_test_id(f"online-{approver.username}")).to_have_attribute("data-state", "viewing")
    # and with the admin viewing it too, both are listed
    third.get_by_test_id(f"history-{request.id}").click()
    expect(badge).to_have_text(f"{admin.username}, {approver.username} are viewing")
    consoles.shot(watcher, "viewing")
    # and when they close it, the badge goes
    third.get_by_test_id("history-close").click()
    deciding.get_by_test_id("history-close").click()
    expect(badge).to_have_count(0)

    # when the approver opens the Reject dialog (about to change the request), the row says editing
    deciding.get_by_test_id(f"reject-{request.id}").click()
    expect(deciding.get_by_test_id("sign-dialog")).to_be_visible()
    expect(badge).to_have_text(f"{approver.username} is editing")
    expect(badge).to_have_attribute("data-editing", approver.username)
    consoles.shot(watcher, "editing")
    # (the approver's own console shows no badge about the approver)
    expect(deciding.get_by_test_id(f"presence-{request.id}")).to_have_count(0)
    # and when they cancel it, the badge goes
    deciding.get_by_test_id("sign-cancel").click()
    expect(badge).to_have_count(0)

    # when the approver signs out, and the admin closes the tab, the requester no longer sees them online
    expect(watcher.get_by_test_id(f"online-{admin.username}")).to_be_visible()
    deciding.get_by_test_id("sign-out").click()
    third.close()
    expect(watcher.get_by_test_id(f"online-{approver.username}")).to_have_count(0, timeout=WAIT_MS)
    expect(watcher.get_by_test_id(f"online-{admin.username}")).to_have_count(0, timeout=WAIT_MS)
    expect(watcher.get_by_test_id("online-users").locator("li")).to_have_count(1)
    expect(watcher.get_by_test_id(f"online-{requester.username}")).to_have_text("you")


def test_only_mine_keeps_someone_elses_update_out_of_the_feed_and_lets_mine_in(console_daphne, consoles):
    # given a requester with a pending withdrawal of their own, and a colleague who files another one
    console_daphne.ensure_running()
    unit = UnitFactory()
    requester = UserFactory(unit=unit, role=Role.REQUESTER)
    colleague = UserFactory(unit=unit, role=Role.REQUESTER)
    approver = UserFactory(unit=unit, role=Role.APPROVER)
    own = make_request("withdrawal", requester)
    page = consoles.open(console_daphne.port, requester.username)

    # when the requester turns "only mine" on
    page.get_by_test_id("only-mine").check()
    expect(page.get_by_test_id("only-mine-note")).to_be_visible()
    # (the socket handles one message after the other: once the requester's later presence change is
    # back, the subscription before it is in force)
    page.get_by_test_id(f"history-{own.id}").click()
    expect(page.get_by_test_id(f"online-{requester.username}")).to_have_attribute("data-state", "viewing")
    page.get_by_test_id("history-close").click()

    # and the colleague files a request, then the approver approves the requester's one
    theirs = make_request("withdrawal", colleague)
    transition_now(
        entity="withdrawal", action="approve", actor=approver, request_id=own.id,
        signature_id=sign(approver, "withdrawal", "approve"),
    )

    # then the feed shows the approval of the requester's request, and nothing of the colleague's
    feed = page.get_by_test_id("feed")
    expect(feed.locator(".feed-item").filter(has_text=f"{own.request_number} updated")).to_have_count(1, timeout=WAIT_MS)
    expect(feed).not_to_contain_text(theirs.request_number)
    assert page.evaluate("window.realtimeStats.byEntity.withdrawal") == 1
    # and the list, read again for that update, shows both as they are
    expect(page.get_by_test_id(f"request-status-{own.id}")).to_have_text("Approved")
    expect(page.get_by_test_id(f"request-row-{theirs.id}")).to_be_visible()
    consoles.shot(page, "only-mine")

    # when it goes off again, the whole unit's updates come back
    page.get_by_test_id("only-mine").uncheck()
    expect(page.get_by_test_id("only-mine-note")).to_be_hidden()
    later = make_request("withdrawal", colleague)
    expect(feed).to_contain_text(f"{later.request_number} created", timeout=WAIT_MS)


def test_a_stale_decision_offers_to_reload_the_list(console_daphne, consoles):
    # given an approver looking at a pending withdrawal whose list does not refetch by itself
    console_daphne.ensure_running()
    unit = UnitFactory()
    requester = UserFactory(unit=unit, role=Role.REQUESTER)
    approver = UserFactory(unit=unit, role=Role.APPROVER)
    request = make_request("withdrawal", requester)
    page = consoles.open(console_daphne.port, approver.username, options=FROZEN_LISTS)

    # when the requester changes it behind the approver's back and the approver approves what they saw
    services.request_update(
        entity="withdrawal", actor=requester, request_id=request.id, expected_version=1, reason="changed",
        change_reason="typo",
    )
    expect(page.get_by_test_id("feed")).to_contain_text(f"{request.request_number} updated")
    page.get_by_test_id(f"approve-{request.id}").click()
    sign_in_dialog(page)
    dialog = page.get_by_test_id("stale-dialog")
    expect(dialog).to_be_visible()
    assert page.evaluate("window.realtimeStats.fetches.requests") == 1

    # then Reload closes the dialog and reads the list again
    page.get_by_test_id("stale-reload").click()
    expect(dialog).to_be_hidden()
    page.wait_for_function("() => window.realtimeStats.fetches.requests === 2")
    expect(page.get_by_test_id(f"request-row-{request.id}")).to_contain_text("changed")
    expect(page.get_by_test_id(f"request-status-{request.id}")).to_have_text("Pending")

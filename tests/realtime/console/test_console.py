"""The live console (`/`) and its realtime client (the client kit's bundle, static/realtime/kit/records-client.js) in a real
Chromium, against real Daphne and Celery processes: updates reach other consoles of the unit without
a reload, never another unit's; a restarted server is found again and what was missed is replayed;
an expired access token is refreshed and the connection comes back by itself."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from backend.accounts.models import Role
from tests.support.browser import CONSOLE_OPTIONS, WAIT_MS, RestartableDaphne
from tests.support.factories import CrateFactory, UnitFactory, UserFactory, make_request
from tests.support.signing import sign, transition_now

from .signing import sign_in_dialog

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def staff(unit, *roles: str) -> dict:
    return {role: UserFactory(unit=unit, role=role) for role in roles}


def stats(page) -> dict:
    return page.evaluate("window.realtimeStats")


def request_ids(page) -> list[str]:
    rows = page.locator('[data-testid="requests-body"] tr')
    return [testid.removeprefix("request-row-") for testid in rows.evaluate_all("rows => rows.map(r => r.dataset.testid)")]


def test_an_approval_in_one_console_appears_in_another_without_a_reload(console_daphne, worker, consoles):
    # given a unit with a pending withdrawal of one crate, and two of its people in the console
    console_daphne.ensure_running()
    unit = UnitFactory()
    people = staff(unit, Role.REQUESTER, Role.APPROVER, Role.ADMIN)
    crate = CrateFactory(unit=unit)
    request = make_request("withdrawal", people[Role.REQUESTER], [crate])
    approver = consoles.open(console_daphne.port, people[Role.APPROVER].username)
    watcher = consoles.open(console_daphne.port, people[Role.ADMIN].username)
    status = watcher.get_by_test_id(f"request-status-{request.id}")
    expect(status).to_have_text("Pending")
    # (its crate is named in the open request: reserved, not free for another one)
    expect(watcher.get_by_test_id(f"crate-status-{crate.id}")).to_have_text("Reserved")
    expect(watcher.get_by_test_id(f"crate-reserved-by-{crate.id}")).to_have_text(f" in {request.request_number}")

    # when the approver clicks Approve and signs it (a job on the Celery worker)
    approver.get_by_test_id(f"approve-{request.id}").click()
    sign_in_dialog(approver, title=f"Approve {request.request_number}")

    # then the other console shows the request approved and its crate withdrawn, in the same document
    expect(status).to_have_text("Approved", timeout=WAIT_MS)
    expect(watcher.get_by_test_id(f"crate-status-{crate.id}")).to_have_text("Withdrawn")
    assert watcher.evaluate("window.__sameDocument") == "marker"
    assert consoles.loads(watcher) == 1
    # exactly the approval's two updates arrived, over a ticket handshake (the JWT never in a URL),
    # with the activity feed and presence asked for
    assert stats(watcher)["updates"] == 2
    assert stats(watcher)["byEntity"] == {"withdrawal": 1, "crate": 1}
    assert [set(query) for query in consoles.sockets(watcher)] == [{"ticket", "batch", "activity", "presence"}]
    # and the approver sees its job succeed and the row change too
    expect(approver.locator('[data-testid="jobs"] li').first).to_have_attribute("data-status", "succeeded")
    expect(approver.get_by_test_id(f"request-status-{request.id}")).to_have_text("Approved")
    consoles.shot(approver, "approver")
    consoles.shot(watcher, "watcher")


def test_a_console_of_another_unit_hears_nothing(console_daphne, worker, consoles):
    # given two units, each with a pending request and an approver in the console
    console_daphne.ensure_running()
    here, there = UnitFactory(), UnitFactory()
    ours, theirs = staff(here, Role.REQUESTER, Role.APPROVER), staff(there, Role.REQUESTER, Role.APPROVER)
    mine = make_request("withdrawal", ours[Role.REQUESTER])
    their_request = make_request("withdrawal", theirs[Role.REQUESTER])
    approver = consoles.open(console_daphne.port, ours[Role.APPROVER].username)
    outsider = consoles.open(console_daphne.port, theirs[Role.APPROVER].username)
    assert request_ids(outsider) == [str(their_request.id)]

    # when our unit's request is approved (and our console has seen it, so it went through Daphne)
    approver.get_by_test_id(f"approve-{mine.id}").click()
    sign_in_dialog(approver)
    expect(approver.get_by_test_id(f"request-status-{mine.id}")).to_have_text("Approved", timeout=WAIT_MS)
    # and afterwards something happens in the other unit: if ours had leaked, it would have come first
    newer = make_request("withdrawal", theirs[Role.REQUESTER])
    expect(outsider.get_by_test_id(f"request-row-{newer.id}")).to_be_visible()

    # then the other unit's console got exactly its own one update and none of ours
    assert stats(outsider)["updates"] == 1
    assert stats(outsider)["byEntity"] == {"withdrawal": 1}
    assert request_ids(outsider) == [str(newer.id), str(their_request.id)]
    expect(outsider.get_by_test_id(f"request-status-{their_request.id}")).to_have_text("Pending")
    # and its lists were fetched once at sign-in and once for its own update (a request's update
    # also reads the crates again: which it reserves changed), never for ours
    assert stats(outsider)["fetches"] == {"requests": 2, "crates": 2}
    consoles.shot(outsider, "outsider")


def test_the_console_resumes_after_the_server_restarts(console_daphne, consoles):
    # given a live console with a pending withdrawal in its unit
    console_daphne.ensure_running()
    unit = UnitFactory()
    people = staff(unit, Role.REQUESTER, Role.APPROVER)
    crate, spare = CrateFactory(unit=unit), CrateFactory(unit=unit)
    request = make_request("withdrawal", people[Role.REQUESTER], [crate])
    page = consoles.open(console_daphne.port, people[Role.APPROVER].username)
    badge = page.get_by_test_id("status-badge")
    seq_before = stats(page)["lastSeq"]

    # when Daphne goes away
    console_daphne.stop()
    expect(badge).to_have_attribute("data-status", "syncing")
    expect(badge).to_have_text("Syncing")
    consoles.shot(page, "syncing")
    # and, meanwhile, the request is approved and another one filed (through the services)
    transition_now(
        entity="withdrawal", action="approve", actor=people[Role.APPROVER], request_id=request.id,
            signature_id=sign(people[Role.APPROVER], "withdrawal", "approve")
    )
    filed = make_request("destruction", people[Role.REQUESTER], [spare])
    # and Daphne comes back on the same port
    console_daphne.start()

    # then the console is live again and shows both changes, in the same document
    expect(badge).to_have_attribute("data-status", "live", timeout=WAIT_MS)
    expect(badge).to_have_text("Live")
    expect(page.get_by_test_id(f"request-status-{request.id}")).to_have_text("Approved")
    expect(page.get_by_test_id(f"crate-status-{crate.id}")).to_have_text("Withdrawn")
    expect(page.get_by_test_id(f"request-status-{filed.id}")).to_have_text("Pending")
    assert page.evaluate("window.__sameDocument") == "marker"
    assert consoles.loads(page) == 1
    # because the reconnect resumed from the last seq it had, and the server replayed the three
    # missed updates (no full resync)
    resumed = [query for query in consoles.sockets(page) if "last_seq" in query]
    assert resumed and {query["last_seq"] for query in resumed} == {str(seq_before)}
    assert stats(page)["updates"] == 3
    assert stats(page)["resyncs"] == 0
    consoles.shot(page, "live-again")


@pytest.fixture(scope="module")
def short_token_daphne(live_env):
    """A Daphne whose access tokens live 8 s (JWT_ACCESS_SECONDS, see docs/client.md): long enough for
    a slow machine to sign in and connect first, short enough to expire within the test."""
    server = RestartableDaphne({**live_env, "JWT_ACCESS_SECONDS": "8"})
    yield server
    server.stop()


def test_an_expired_token_is_refreshed_and_the_console_reconnects_by_itself(short_token_daphne, worker, consoles):
    # given a console signed in with an access token that lives 8 seconds, whose client does not
    # renew it on the open socket (a client written before that, or one whose refresh came too late)
    unit = UnitFactory()
    people = staff(unit, Role.REQUESTER, Role.APPROVER)
    request = make_request("withdrawal", people[Role.REQUESTER])
    options = {"client": {**CONSOLE_OPTIONS["client"], "refreshOnSocket": False}}
    page = consoles.open(short_token_daphne.port, people[Role.APPROVER].username, options=options)

    # when the token runs out while connected, the server closes with 4002
    page.wait_for_function(
        "() => window.realtimeStats.closes.includes(4002) && window.realtimeStats.refreshes >= 1", timeout=WAIT_MS
    )

    # then the console refreshed the token and is live again without the user doing anything
    expect(page.get_by_test_id("status-badge")).to_have_attribute("data-status", "live", timeout=WAIT_MS)
    statuses = stats(page)["statuses"]
    assert statuses[:3] == ["syncing", "live", "syncing"] and "live" in statuses[3:]
    expect(page.get_by_test_id("login")).to_be_hidden()
    # and it still works on the refreshed credentials: an approval goes out and its update comes in
    page.get_by_test_id(f"approve-{request.id}").click()
    sign_in_dialog(page)
    expect(page.get_by_test_id(f"request-status-{request.id}")).to_have_text("Approved", timeout=WAIT_MS)
    assert page.evaluate("window.__sameDocument") == "marker"
    assert consoles.loads(page) == 1
    # every reconnect bought a fresh ticket and resumed where the last connection stopped
    sockets = consoles.sockets(page)
    assert len(sockets) >= 2 and all("ticket" in query and "token" not in query for query in sockets)
    assert all("last_seq" in query for query in sockets[1:])
    consoles.shot(page, "refreshed")


def test_a_console_left_open_renews_its_token_on_the_socket_and_never_reconnects(short_token_daphne, worker,
                                                                                consoles):
    # given a console signed in with access tokens that live 8 seconds (the client renews them
    # halfway, on the open socket)
    short_token_daphne.ensure_running()
    unit = UnitFactory()
    people = staff(unit, Role.REQUESTER, Role.APPROVER)
    request = make_request("withdrawal", people[Role.REQUESTER])
    page = consoles.open(short_token_daphne.port, people[Role.APPROVER].username)

    # when it stays open across three of those lifetimes
    page.wait_for_function("() => window.realtimeStats.socketRefreshes >= 6", timeout=40_000)

    # then the socket was never closed: the one it opened is still live, on renewed credentials
    assert stats(page)["closes"] == []
    assert stats(page)["statuses"] == ["syncing", "live"]
    assert len(consoles.sockets(page)) == 1
    # and it still works: an approval goes out and its update comes in on that same socket
    page.get_by_test_id(f"approve-{request.id}").click()
    sign_in_dialog(page)
    expect(page.get_by_test_id(f"request-status-{request.id}")).to_have_text("Approved", timeout=WAIT_MS)
    assert stats(page)["closes"] == [] and len(consoles.sockets(page)) == 1
    consoles.shot(page, "renewed-on-the-socket")


def test_a_bulk_approval_shows_its_progress_and_updates_the_list(console_daphne, worker, consoles):
    # given three pending withdrawals in a unit (and one destruction that must stay out of it)
    console_daphne.ensure_running()
    unit = UnitFactory()
    people = staff(unit, Role.REQUESTER, Role.APPROVER)
    pending = [make_request("withdrawal", people[Role.REQUESTER]) for _ in range(3)]
    other = make_request("destruction", people[Role.REQUESTER])
    page = consoles.open(console_daphne.port, people[Role.APPROVER].username)

    # when the approver picks "select all pending" withdrawals, runs Approve and signs it once
    page.get_by_test_id("bulk-entity").select_option("withdrawal")
    page.get_by_test_id("bulk-action").select_option("approve")
    page.get_by_test_id("bulk-select-pending").click()
    ids = page.get_by_test_id("bulk-ids")
    expect(ids).not_to_have_value("")
    assert set(ids.input_value().split()) == {r.request_number for r in pending}
    page.get_by_test_id("bulk-submit").click()
    # (the signing dialog lists exactly the requests it signs)
    expect(page.get_by_test_id("sign-item")).to_have_text(ids.input_value().split())
    sign_in_dialog(page, title="Approve 3 withdrawal requests")

    # then the progress bar runs to the end, the job's own messages having driven it
    progress = page.get_by_test_id("bulk-progress")
    expect(progress).to_have_attribute("data-status", "succeeded", timeout=WAIT_MS)
    expect(progress).to_have_attribute("aria-valuenow", "100")
    expect(page.get_by_test_id("bulk-progress-text")).to_have_text("Succeeded: 3 of 3 processed, 0 failed")
    assert stats(page)["jobUpdates"] >= 1
    # and every request of the bulk shows approved without a reload; the other one is untouched
    for request in pending:
        expect(page.get_by_test_id(f"request-status-{request.id}")).to_have_text("Approved")
    expect(page.get_by_test_id(f"request-status-{other.id}")).to_have_text("Pending")
    assert consoles.loads(page) == 1
    consoles.shot(page, "bulk-done")

"""The console and the record layer, in a real Chromium against real Daphne and Celery processes: a
record's history panel, four eyes on the decision buttons, a stale decision explained (who changed
what since the version the approver saw), and a bulk action that sends the versions it was shown."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from backend.accounts.models import Role
from backend.jobs.models import Job
from backend.records import services
from tests.support.browser import CONSOLE_OPTIONS, WAIT_MS
from tests.support.factories import CrateFactory, UnitFactory, UserFactory, make_request
from tests.support.signing import sign, transition_now

from .signing import sign_in_dialog

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

FOUR_EYES = "You filed this request: someone else decides (four eyes)"
FOUR_EYES_CHANGED = "You changed this request: someone else decides (four eyes)"
# A console whose lists do not refetch on their own within a test: what it shows stays what the user
# saw while the record changes behind its back (the update still reaches the live feed).
FROZEN_LISTS = {**CONSOLE_OPTIONS, "debounceMs": 600_000}


def staff(unit, *roles: str) -> dict:
    return {role: UserFactory(unit=unit, role=role) for role in roles}


def test_the_history_panel_lists_who_did_what_oldest_first_with_the_job(console_daphne, worker, consoles):
    # given a pending withdrawal a requester filed, and an approver in the console
    console_daphne.ensure_running()
    unit = UnitFactory()
    people = staff(unit, Role.REQUESTER, Role.APPROVER)
    requester, approver = people[Role.REQUESTER], people[Role.APPROVER]
    crate = CrateFactory(unit=unit)
    request = make_request("withdrawal", requester, [crate])
    page = consoles.open(console_daphne.port, approver.username)

    # when the approver approves it (signed), then opens its history
    page.get_by_test_id(f"approve-{request.id}").click()
    sign_in_dialog(page)
    expect(page.get_by_test_id(f"request-status-{request.id}")).to_have_text("Approved", timeout=WAIT_MS)
    job = Job.objects.get(kind="withdrawal.approve", requested_by=approver)
    history_button = page.get_by_test_id(f"history-{request.id}")
    history_button.click()

    # then a dialog lists the filing and the approval, oldest first: who, what, the change, the job
    panel = page.get_by_test_id("history-panel")
    expect(panel).to_be_visible()
    expect(page.get_by_test_id("history-title")).to_have_text(f"History of {request.request_number}")
    entries = panel.get_by_test_id("history-entry")
    expect(entries).to_have_count(2)
    created, approved = entries.nth(0), entries.nth(1)
    expect(created).to_have_attribute("data-action", "created")
    expect(created).to_contain_text(f"Created by {requester.username} (requester)")
    expect(created).to_contain_text(f"crates: {crate.crate_number}")
    expect(approved).to_have_attribute("data-action", "approved")
    expect(approved).to_contain_text(f"Approved by {approver.get_full_name()} (approver)")
    expect(approved).to_contain_text("status: Pending → Approved")
    expect(approved).to_contain_text(f"via job {str(job.id)[:8]}")
    expect(approved.locator("[data-job]")).to_have_attribute("data-job", str(job.id))
    expect(approved.get_by_test_id("history-signature")).to_contain_text(
        f"Signed: approved by {approver.get_full_name()} ({approver.username}), "
    )
    # the moment in local time, UTC on hover
    expect(approved.locator(".history-head time")).to_have_attribute("title", re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"))
    consoles.shot(page, "request-history")
    # and Esc closes it, giving the focus back to the History button
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(history_button).to_be_focused()

    # and the crate's own history shows it withdrawn by the approver, by the same job
    page.get_by_test_id(f"history-{crate.id}").click()
    expect(page.get_by_test_id("history-title")).to_have_text(f"History of {crate.crate_number}")
    last = panel.get_by_test_id("history-entry").last
    expect(last).to_have_attribute("data-action", "withdrawn")
    expect(last).to_contain_text(f"by {approver.get_full_name()} (approver)")
    expect(last).to_contain_text(f"via job {str(job.id)[:8]}")
    # and the live feed said who made the change
    expect(page.get_by_test_id("feed")).to_contain_text(f"{request.request_number} updated by {approver.username}")


def decisions_off(page, request, why: str, *, beside) -> None:
    """`request`'s decisions are disabled, titled `why`; those of `beside` are on, with no such title."""
    for action in ("approve", "reject", "send-back"):
        button = page.get_by_test_id(f"{action}-{request.id}")
        expect(button).to_be_disabled()
        expect(button).to_have_attribute("title", why)
        expect(page.get_by_test_id(f"{action}-{beside.id}")).to_be_enabled()
        expect(page.get_by_test_id(f"{action}-{beside.id}")).not_to_have_attribute("title", why)


def approve_anyway(page, request) -> None:
    """What a user who re-enables a disabled Approve (the browser's tools) would send: signed."""
    approve = page.get_by_test_id(f"approve-{request.id}")
    approve.evaluate("button => { button.disabled = false; }")
    approve.click()
    sign_in_dialog(page)


def test_the_decision_buttons_are_off_on_requests_the_user_filed(console_daphne, consoles):
    # given a unit admin (who holds every role) and two pending requests: one the admin filed
    console_daphne.ensure_running()
    unit = UnitFactory()
    people = staff(unit, Role.REQUESTER, Role.ADMIN)
    own = make_request("withdrawal", people[Role.ADMIN])
    theirs = make_request("withdrawal", people[Role.REQUESTER])

    # when the admin opens the console
    page = consoles.open(console_daphne.port, people[Role.ADMIN].username)

    # then the admin's own request shows its decisions disabled, saying why (four eyes), and the
    # other request's decisions are the admin's to take
    decisions_off(page, own, FOUR_EYES, beside=theirs)
    consoles.shot(page, "four-eyes")
    # and were the decision sent anyway, the API's refusal (403 four_eyes) is a clear toast
    approve_anyway(page, own)
    expect(page.get_by_test_id("toasts")).to_contain_text(
        f"Approve {own.request_number}: you filed this request, so someone else must decide on it (four eyes)."
    )


def test_a_request_the_user_changed_has_its_decisions_off_and_the_server_refuses_in_those_words(console_daphne, consoles):
    # given a requester's pending withdrawal that the unit admin edited, and another nobody changed
    console_daphne.ensure_running()
    unit = UnitFactory()
    people = staff(unit, Role.REQUESTER, Role.ADMIN)
    request = make_request("withdrawal", people[Role.REQUESTER])
    untouched = make_request("withdrawal", people[Role.REQUESTER])
    services.request_update(entity="withdrawal", actor=people[Role.ADMIN], request_id=request.id, expected_version=1,
                            reason="one more crate", change_reason="asked by phone")

    # when the admin opens the console
    page = consoles.open(console_daphne.port, people[Role.ADMIN].username)

    # then the edited request's decisions are off, saying the admin changed it (the API's
    # `contributed`), and it has no tick box for a bulk action; the untouched one's are on
    decisions_off(page, request, FOUR_EYES_CHANGED, beside=untouched)
    expect(page.get_by_test_id(f"select-{request.id}")).to_have_count(0)
    expect(page.get_by_test_id(f"select-{untouched.id}")).to_have_count(1)

    # and were the approval sent anyway, the server's four_eyes refusal says what the admin did:
    # changed it, not filed it
    approve_anyway(page, request)
    expect(page.get_by_test_id("toasts")).to_contain_text(
        f"Approve {request.request_number}: you changed this request, so someone else must decide on it (four eyes)."
    )


def test_a_stale_approval_says_who_changed_what_since_and_shows_the_request_as_it_is(console_daphne, consoles):
    # given an approver looking at a pending withdrawal (version 1)
    console_daphne.ensure_running()
    unit = UnitFactory()
    people = staff(unit, Role.REQUESTER, Role.APPROVER)
    requester = people[Role.REQUESTER]
    first, second = CrateFactory(unit=unit), CrateFactory(unit=unit)
    request = make_request("withdrawal", requester, [first])
    page = consoles.open(console_daphne.port, people[Role.APPROVER].username, options=FROZEN_LISTS)
    expect(page.get_by_test_id(f"request-row-{request.id}")).to_contain_text("test")

    # when the requester edits it behind the approver's back (the console hears of it, its list has
    # not been refetched yet) and the approver approves what they saw
    services.request_update(
        entity="withdrawal", actor=requester, request_id=request.id, expected_version=1,
        crate_ids=[first.id, second.id], reason="now two crates", change_reason="forgot one",
    )
    expect(page.get_by_test_id("feed")).to_contain_text(f"{request.request_number} updated by {requester.username}")
    page.get_by_test_id(f"approve-{request.id}").click()
    sign_in_dialog(page)

    # then nothing is queued, and a dialog says who changed what since, and why
    dialog = page.get_by_test_id("stale-dialog")
    expect(dialog).to_be_visible()
    expect(page.get_by_test_id("stale-title")).to_contain_text(f"{request.request_number} changed since you saw it")
    change = dialog.get_by_test_id("stale-change")
    expect(change).to_have_count(1)
    expect(change).to_contain_text(f"{requester.username} updated it")
    expect(change).to_contain_text(
        f"crates: {first.crate_number} → {', '.join(sorted([first.crate_number, second.crate_number]))}"
    )
    expect(change).to_contain_text("reason: test → now two crates")
    expect(change).to_contain_text("reason given: forgot one")
    expect(page.get_by_test_id("stale-next")).to_contain_text("version 2")
    consoles.shot(page, "stale")
    assert not Job.objects.filter(kind="withdrawal.approve").exists()
    # and the row shows the request as it is now, without a refetch of the list
    row = page.get_by_test_id(f"request-row-{request.id}")
    expect(row).to_contain_text("now two crates")
    assert page.evaluate("window.realtimeStats.fetches.requests") == 1
    page.get_by_test_id("stale-ok").click()
    expect(dialog).to_be_hidden()

    # and its history, left open, follows a change as it happens
    page.get_by_test_id(f"history-{request.id}").click()
    entries = page.get_by_test_id("history-panel").get_by_test_id("history-entry")
    expect(entries).to_have_count(2)
    expect(entries.nth(1)).to_contain_text(f"Updated by {requester.username} (requester)")
    expect(entries.nth(1)).to_contain_text("Reason: forgot one")
    transition_now(
        entity="withdrawal", action="reject", actor=people[Role.APPROVER], request_id=request.id, reason="not yet",
            signature_id=sign(people[Role.APPROVER], "withdrawal", "reject")
    )
    expect(entries).to_have_count(3)
    expect(entries.nth(2)).to_contain_text(f"Rejected by {people[Role.APPROVER].get_full_name()} (approver)")
    expect(entries.nth(2)).not_to_contain_text("via job")


def test_select_all_pending_sends_the_versions_seen_and_the_check_refuses_what_changed_before_signing(
    console_daphne, worker, consoles
):
    # given a unit admin, two pending withdrawals someone else filed and one the admin filed
    console_daphne.ensure_running()
    unit = UnitFactory()
    people = staff(unit, Role.REQUESTER, Role.ADMIN)
    requester, admin = people[Role.REQUESTER], people[Role.ADMIN]
    kept, edited = (make_request("withdrawal", requester) for _ in range(2))
    own = make_request("withdrawal", admin)
    page = consoles.open(console_daphne.port, admin.username)

    # when the admin selects all pending withdrawals (their own is left out, four eyes): by number
    page.get_by_test_id("bulk-entity").select_option("withdrawal")
    page.get_by_test_id("bulk-action").select_option("approve")
    page.get_by_test_id("bulk-select-pending").click()
    ids = page.get_by_test_id("bulk-ids")
    expect(ids).not_to_have_value("")
    assert set(ids.input_value().split()) == {kept.request_number, edited.request_number}
    expect(page.get_by_test_id("bulk-note")).to_have_text("Left out 1 request you filed or changed (four eyes).")
    # and one of them is edited meanwhile, one more is filed, and the admin types that one's number
    # and their own by hand, and runs it
    services.request_update(
        entity="withdrawal", actor=requester, request_id=edited.id, expected_version=1, reason="changed",
        change_reason="clarified",
    )
    typed = make_request("withdrawal", requester)
    ids.fill(f"{ids.input_value()}\n{typed.request_number}\n{own.request_number}")
    page.get_by_test_id("bulk-submit").click()

    # then the check refuses, before any password is asked, the one changed since it was selected and
    # the admin's own, each with why
    refusals = page.get_by_test_id("bulk-refusal-list")
    expect(refusals.locator("li")).to_have_count(2)
    expect(page.get_by_test_id(f"bulk-refusal-{edited.request_number}")).to_contain_text("changed since you saw them")
    expect(page.get_by_test_id(f"bulk-refusal-{own.request_number}")).to_contain_text("four eyes")
    expect(page.get_by_test_id("sign-dialog")).to_be_hidden()
    assert not Job.objects.filter(requested_by=admin).exists()
    consoles.shot(page, "bulk-refusals")

    # when the admin removes them and runs it again
    page.get_by_test_id("bulk-drop-refused").click()
    assert set(ids.input_value().split()) == {kept.request_number, typed.request_number}
    page.get_by_test_id("bulk-submit").click()
    sign_in_dialog(page, title="Approve 2 withdrawal requests")

    # then the job got the selected one with the version the admin saw and the typed one the version
    # it had when it was checked (every decision is pinned)
    progress = page.get_by_test_id("bulk-progress")
    expect(progress).to_have_attribute("data-status", "succeeded", timeout=WAIT_MS)
    job = Job.objects.get(kind="bulk.withdrawal.approve", requested_by=admin)
    assert job.params["versions"] == {str(kept.id): 1, str(typed.id): 1}
    expect(page.get_by_test_id("bulk-progress-text")).to_have_text("Succeeded: 2 of 2 processed, 0 failed")
    expect(page.get_by_test_id(f"request-status-{kept.id}")).to_have_text("Approved")
    expect(page.get_by_test_id(f"request-status-{typed.id}")).to_have_text("Approved")
    expect(page.get_by_test_id(f"request-status-{edited.id}")).to_have_text("Pending")
    expect(page.get_by_test_id(f"request-status-{own.id}")).to_have_text("Pending")

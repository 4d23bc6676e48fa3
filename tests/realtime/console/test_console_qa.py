"""Print, Review and Hold in the console (realtime/static/realtime/records-qa.js), in a real Chromium
against a real Daphne: every record prints its PDF report (audited), QA signs off the unit's
unreviewed entries in one step (its own stay for someone else), and places and releases a legal hold
on a crate in the signing dialog (the crate shows On hold). A requester sees neither Review nor Hold."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from backend.accounts.models import Role
from backend.audit.models import AuditEntry, AuditReview
from backend.records import services
from backend.records.models import Crate, LegalHold
from tests.support.browser import WAIT_MS
from tests.support.factories import PASSWORD, CrateFactory, UnitFactory, UserFactory, make_request

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_every_record_prints_its_pdf_report_and_printing_is_audited(console_daphne, consoles):
    console_daphne.ensure_running()
    unit = UnitFactory()
    requester = UserFactory(unit=unit, role=Role.REQUESTER)
    qa = UserFactory(unit=unit, role=Role.QA, first_name="Quinn", last_name="Quality")
    crate = CrateFactory(unit=unit)
    request = make_request("destruction", requester)
    page = consoles.open(console_daphne.port, qa.username)

    # when Print is clicked on a request row, a tab opens with the report
    with page.context.expect_page() as opened:
        page.get_by_test_id(f"print-{request.id}").click()
    tab = opened.value
    page.wait_for_function("() => window.recordsQaStats.printed.length === 1")
    printed = page.evaluate("window.recordsQaStats.printed[0]")
    assert (printed["status"], printed["type"]) == (200, "application/pdf") and printed["bytes"] > 1000
    # (the tab opens blank at the click and is sent to the report once it is fetched: its
    # navigation may still be on its way when the stats already say printed)
    expect(tab).to_have_url(re.compile(r"^blob:"), timeout=WAIT_MS)
    # and on a crate row too
    page.get_by_test_id(f"print-{crate.id}").click()
    page.wait_for_function("() => window.recordsQaStats.printed.length === 2")
    assert page.evaluate("window.recordsQaStats.printed[1].status") == 200
    # each printing is an audit entry of QA's
    assert set(AuditEntry.objects.filter(action="printed").values_list("record_id", "actor_id")) == {
        (request.id, qa.id), (crate.id, qa.id)}
    consoles.shot(page, "print")


def test_qa_reviews_the_trail_in_one_signed_step_and_its_own_entries_wait(console_daphne, consoles):
    console_daphne.ensure_running()
    unit = UnitFactory()
    requester = UserFactory(unit=unit, role=Role.REQUESTER)
    qa = UserFactory(unit=unit, role=Role.QA, first_name="Quinn", last_name="Quality")
    for _ in range(3):
        make_request("withdrawal", requester)
    services.crate_create(actor=UserFactory(unit=unit, role=Role.STORE), location="Aisle 3")
    page = consoles.open(console_daphne.port, qa.username)

    # the Review page lists the unreviewed entries, filterable
    page.get_by_test_id("open-review").click()
    panel = page.get_by_test_id("review-panel")
    expect(panel).to_be_visible()
    entries = panel.get_by_test_id("review-entry")
    expect(entries).to_have_count(4)  # three requests filed, a crate made
    page.get_by_test_id("review-entity").select_option("withdrawal")
    panel.get_by_role("button", name="Filter").click()
    expect(entries).to_have_count(3)
    expect(page.get_by_test_id("review-manifest")).to_have_text(f"Signed by Quinn Quality ({qa.username}) — meaning: reviewed")
    consoles.shot(page, "review")

    # a wrong password signs nothing; then a comment and the password sign it off
    page.get_by_test_id("review-comment").fill("Monthly review: filings only, nothing unusual")
    page.get_by_test_id("review-password").fill("wrong-password")
    page.get_by_test_id("review-sign").click()
    expect(page.get_by_test_id("review-error")).to_contain_text("Wrong password")
    assert not AuditReview.objects.exists()
    page.get_by_test_id("review-password").fill(PASSWORD)
    page.get_by_test_id("review-sign").click()
    page.wait_for_function("() => window.recordsQaStats.reviews === 1")

    review = AuditReview.objects.get()
    assert review.reviewer_id == qa.id and review.comment == "Monthly review: filings only, nothing unusual"
    assert review.signature.meaning == "reviewed" and review.signature.signer_full_name == "Quinn Quality"
    # what remains is QA's own: the wrong password and the review, shown as theirs, for someone else
    page.get_by_test_id("review-entity").select_option("")
    panel.get_by_role("button", name="Filter").click()
    expect(entries).to_have_count(2)
    expect(panel.get_by_test_id("review-own")).to_have_count(2)
    expect(page.get_by_test_id("review-last")).to_contain_text("by Quinn Quality")


def test_qa_holds_a_crate_and_releases_it_in_the_signing_dialog(console_daphne, consoles):
    console_daphne.ensure_running()
    unit = UnitFactory()
    requester = UserFactory(unit=unit, role=Role.REQUESTER)
    qa = UserFactory(unit=unit, role=Role.QA, first_name="Quinn", last_name="Quality")
    crate = CrateFactory(unit=unit)
    page = consoles.open(console_daphne.port, qa.username)

    # when Hold is clicked, the dialog says who signs meaning what; a reason is required
    page.get_by_test_id(f"hold-{crate.id}").click()
    dialog = page.get_by_test_id("qa-sign-dialog")
    expect(dialog).to_be_visible()
    expect(page.get_by_test_id("qa-sign-manifest")).to_have_text(f"Signed by Quinn Quality ({qa.username}) — meaning: hold")
    page.get_by_test_id("qa-sign-password").fill(PASSWORD)
    page.get_by_test_id("qa-sign-confirm").click()
    expect(page.get_by_test_id("qa-sign-error")).to_contain_text("Give a reason")
    page.get_by_test_id("qa-sign-reason").fill("Smith v. Pharma, case 26-114")
    page.get_by_test_id("qa-sign-password").fill(PASSWORD)
    page.get_by_test_id("qa-sign-confirm").click()
    expect(dialog).to_be_hidden()

    # then the crate is on hold, in the database and in the list
    expect(page.get_by_test_id(f"on-hold-{crate.id}")).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_test_id(f"hold-{crate.id}")).to_have_count(0)
    hold = LegalHold.objects.get()
    assert hold.reason == "Smith v. Pharma, case 26-114" and hold.placed_signature.meaning == "hold"
    assert Crate.objects.get(id=crate.id).on_hold
    consoles.shot(page, "held")

    # when it is released from the holds list, signed
    page.get_by_test_id("open-holds").click()
    page.get_by_test_id(f"release-{hold.id}").click()
    expect(page.get_by_test_id("qa-sign-manifest")).to_contain_text("meaning: released")
    page.get_by_test_id("qa-sign-reason").fill("Case settled")
    page.get_by_test_id("qa-sign-password").fill(PASSWORD)
    page.get_by_test_id("qa-sign-confirm").click()
    expect(page.get_by_test_id(f"hold-{hold.id}-row")).to_have_attribute("data-state", "released")
    page.get_by_test_id("holds-close").click()
    expect(page.get_by_test_id(f"on-hold-{crate.id}")).to_have_count(0, timeout=WAIT_MS)
    assert LegalHold.objects.get().released_signature.meaning == "released"
    assert not Crate.objects.get(id=crate.id).on_hold

    # a requester sees neither Review nor Legal holds nor Hold, but does print
    other = consoles.open(console_daphne.port, requester.username)
    expect(other.get_by_test_id(f"print-{crate.id}")).to_be_visible()
    expect(other.get_by_test_id("open-review")).to_be_hidden()
    expect(other.get_by_test_id("open-holds")).to_be_hidden()
    expect(other.get_by_test_id(f"hold-{crate.id}")).to_have_count(0)

"""Electronic signatures, the unit's time zone and the audit trail page in the console, in a real
Chromium against real Daphne and Celery processes: a decision is signed in the signing dialog (a wrong
password is said and the dialog stays), a bulk decision is signed once, the history shows who signed
what meaning when (and a signature the record no longer matches), times are in the unit's zone, and
approvers page, filter and export the trail."""

from __future__ import annotations

import csv
import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from backend.accounts.models import Role
from backend.audit.models import AuditEntry, Signature, SignedRecord
from backend.jobs.models import Job
from backend.records import services
from tests.support.browser import WAIT_MS
from tests.support.factories import PASSWORD, UnitFactory, UserFactory, make_request
from tests.support.signing import sign, transition_now

from .signing import sign_in_dialog

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def ids_of(locator, prefix: str) -> list[str]:
    return [t.removeprefix(prefix) for t in locator.evaluate_all("nodes => nodes.map(n => n.dataset.testid)")]


def test_an_approval_is_signed_in_the_dialog_and_its_history_shows_the_signature(console_daphne, worker, consoles):
    # given a pending withdrawal and an approver, Ada Approver, in the console
    console_daphne.ensure_running()
    unit = UnitFactory()
    requester = UserFactory(unit=unit, role=Role.REQUESTER)
    approver = UserFactory(unit=unit, role=Role.APPROVER, first_name="Ada", last_name="Approver")
    request = make_request("withdrawal", requester)
    page = consoles.open(console_daphne.port, approver.username)

    # when Approve is clicked, the signing dialog says what is signed, by whom, meaning what
    page.get_by_test_id(f"approve-{request.id}").click()
    dialog = page.get_by_test_id("sign-dialog")
    expect(dialog).to_be_visible()
    expect(page.get_by_test_id("sign-title")).to_have_text(f"Approve {request.request_number}")
    expect(page.get_by_test_id("sign-manifest")).to_have_text(f"Signed by {approver.username} — meaning: approved")
    password = page.get_by_test_id("sign-password")
    expect(password).to_have_attribute("type", "password")
    expect(password).to_have_attribute("autocomplete", "current-password")
    expect(password).to_be_focused()
    consoles.shot(page, "sign-dialog")
    # and with a wrong password the server's message shows, the dialog stays, the reason is kept
    page.get_by_test_id("sign-reason").fill("checked the crates")
    password.fill("not-my-password")
    page.get_by_test_id("sign-confirm").click()
    expect(page.get_by_test_id("sign-error")).to_contain_text("Wrong password")
    expect(dialog).to_be_visible()
    expect(page.get_by_test_id("sign-reason")).to_have_value("checked the crates")
    expect(password).to_have_value("")
    assert not Job.objects.filter(kind="withdrawal.approve").exists()
    assert AuditEntry.objects.filter(record_id=approver.id, action="signature_failed").count() == 1
    consoles.shot(page, "sign-wrong-password")

    # when the right password is given
    password.fill(PASSWORD)
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/approve/")) as sent:
        page.get_by_test_id("sign-confirm").click()
    expect(dialog).to_be_hidden()

    # then the decision went with the version seen, the reason and the signature; nothing is kept
    assert sent.value.post_data_json == {
        "version": 1, "reason": "checked the crates", "signature": {"password": PASSWORD, "meaning": "approved"},
    }
    expect(password).to_have_value("")
    assert PASSWORD not in page.evaluate("JSON.stringify({...sessionStorage}) + JSON.stringify(window.realtimeStats)")
    expect(page.get_by_test_id(f"request-status-{request.id}")).to_have_text("Approved", timeout=WAIT_MS)
    signature = Signature.objects.get(signer_id=approver.id)
    assert signature.meaning == "approved"

    # and the history shows the signed approval and, on top, the request's signatures
    page.get_by_test_id(f"history-{request.id}").click()
    entries = page.get_by_test_id("history-panel").get_by_test_id("history-entry")
    expect(entries).to_have_count(2)
    signed_line = entries.nth(1).get_by_test_id("history-signature")
    expect(signed_line).to_contain_text(f"Signed: approved by Ada Approver ({approver.username}), ")
    expect(signed_line.locator("time")).to_have_attribute("title", re.compile(r" UTC$"))
    expect(entries.nth(1)).to_contain_text("Reason: checked the crates")
    shown = page.get_by_test_id("history-signatures").get_by_test_id(f"signature-{signature.id}")
    expect(shown).to_contain_text(f"Signed: approved by Ada Approver ({approver.username}), ")
    expect(shown).to_contain_text("version 2")
    expect(shown).to_have_attribute("data-matches-record", "true")
    expect(page.get_by_test_id(f"signature-warning-{signature.id}")).to_have_count(0)
    consoles.shot(page, "signed-history")


def test_a_bulk_rejection_is_signed_once_with_the_forms_reason(console_daphne, worker, consoles):
    # given two pending withdrawals and an approver who selects them all for a rejection
    console_daphne.ensure_running()
    unit = UnitFactory()
    requester = UserFactory(unit=unit, role=Role.REQUESTER)
    approver = UserFactory(unit=unit, role=Role.APPROVER)
    pending = [make_request("withdrawal", requester) for _ in range(2)]
    page = consoles.open(console_daphne.port, approver.username)
    page.get_by_test_id("bulk-entity").select_option("withdrawal")
    page.get_by_test_id("bulk-action").select_option("reject")
    page.get_by_test_id("bulk-select-pending").click()
    expect(page.get_by_test_id("bulk-ids")).not_to_have_value("")
    page.get_by_test_id("bulk-reason").fill("labels illegible")

    # when Run opens the signing dialog: the count, the meaning, the form's reason (no field of its own)
    page.get_by_test_id("bulk-submit").click()
    expect(page.get_by_test_id("sign-manifest")).to_have_text(f"Signed by {approver.username} — meaning: rejected")
    expect(page.get_by_test_id("sign-fixed-reason")).to_have_text("Reason: labels illegible")
    expect(page.get_by_test_id("sign-reason")).to_be_hidden()
    sign_in_dialog(page, title="Reject 2 withdrawal requests")

    # then the job rejects both, on one signature applied to each request
    expect(page.get_by_test_id("bulk-progress")).to_have_attribute("data-status", "succeeded", timeout=WAIT_MS)
    for request in pending:
        expect(page.get_by_test_id(f"request-status-{request.id}")).to_have_text("Rejected")
    signature = Signature.objects.get(signer_id=approver.id)
    assert signature.meaning == "rejected"
    assert {r.record_id for r in SignedRecord.objects.filter(signature=signature)} == {r.id for r in pending}
    assert Job.objects.get(kind="bulk.withdrawal.reject").params["reason"] == "labels illegible"


def test_the_audit_page_filters_follows_updates_and_exports_what_it_shows(console_daphne, consoles, tmp_path):
    # given a unit in Auckland's zone with a filed and an approved withdrawal, and its approver
    console_daphne.ensure_running()
    zone = "Pacific/Auckland"
    unit = UnitFactory(timezone=zone)
    requester = UserFactory(unit=unit, role=Role.REQUESTER)
    approver = UserFactory(unit=unit, role=Role.APPROVER)
    decided, other = make_request("withdrawal", requester), make_request("withdrawal", requester)
    transition_now(
        entity="withdrawal", action="approve", actor=approver, request_id=decided.id,
        signature_id=sign(approver, "withdrawal", "approve"),
    )
    page = consoles.open(console_daphne.port, requester.username)
    # (a requester has no audit page)
    expect(page.get_by_test_id("open-audit")).to_be_hidden()
    page.close()
    page = consoles.open(console_daphne.port, approver.username)

    # when the approver opens the audit page: the unit's entries, newest first
    page.get_by_test_id("open-audit").click()
    audit = page.get_by_test_id("audit-page")
    expect(audit).to_be_visible()
    expect(page.get_by_test_id("workspace")).to_be_hidden()
    rows = page.get_by_test_id("audit-body").locator("tr")
    everything = list(AuditEntry.objects.filter(unit=unit).order_by("-at", "-position").values_list("id", flat=True))
    expect(rows).to_have_count(len(everything))
    assert ids_of(rows, "audit-row-") == [str(i) for i in everything]
    approved = page.get_by_test_id(f"audit-row-{AuditEntry.objects.get(record_id=decided.id, action='approved').id}")
    expect(approved).to_contain_text("status: Pending → Approved")
    expect(approved).to_contain_text(f"Signed: approved by {approver.get_full_name()} ({approver.username}), ")

    # and filters it: withdrawals, approved, by the approver, since ten minutes ago in the unit's zone
    page.get_by_test_id("audit-entity").select_option("withdrawal")
    page.get_by_test_id("audit-action").fill("approved")
    page.get_by_test_id("audit-actor").fill(approver.username)
    since = (timezone.now() - timedelta(minutes=10)).astimezone(ZoneInfo(zone))
    page.get_by_test_id("audit-since").fill(since.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_test_id("audit-apply").click()
    expect(rows).to_have_count(1)
    expect(approved).to_be_visible()
    # (an hour ahead in the unit's zone is in the future: nothing matches)
    later = (timezone.now() + timedelta(hours=1)).astimezone(ZoneInfo(zone))
    page.get_by_test_id("audit-since").fill(later.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_test_id("audit-apply").click()
    expect(page.get_by_test_id("audit-empty")).to_be_visible()
    page.get_by_test_id("audit-since").fill(since.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_test_id("audit-action").fill("")
    page.get_by_test_id("audit-actor").fill("")
    page.get_by_test_id("audit-apply").click()
    expect(rows).to_have_count(3)  # the two filings and the approval (the crate's entry is not a withdrawal)

    # and a change while it is open shows up without a click
    services.request_update(
        entity="withdrawal", actor=requester, request_id=other.id, expected_version=1, reason="two labels",
        change_reason="typo",
    )
    expect(rows).to_have_count(4)
    expect(rows.first).to_have_attribute("data-action", "updated")
    expect(rows.first).to_contain_text("typo")
    consoles.shot(page, "audit-page")

    # and Export CSV downloads the entries the page shows, with the same filters
    with page.expect_download() as download_info:
        page.get_by_test_id("export-csv").click()
    download = download_info.value
    assert re.fullmatch(rf"audit-trail-{unit.code}-.+\.csv", download.suggested_filename)
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    with path.open(newline="", encoding="utf-8") as file:
        exported = list(csv.DictReader(file))
    assert {row["id"] for row in exported} == set(ids_of(rows, "audit-row-"))
    assert {row["entity"] for row in exported} == {"withdrawal"}
    assert [row["signature_meaning"] for row in exported if row["action"] == "approved"] == ["approved"]

    # and a record number opens that record's history
    page.get_by_test_id(f"audit-record-{AuditEntry.objects.get(record_id=decided.id, action='approved').id}").click()
    expect(page.get_by_test_id("history-title")).to_have_text(f"History of {decided.request_number}")
    expect(page.get_by_test_id("history-panel").get_by_test_id("history-entry")).to_have_count(2)


def test_times_show_in_the_units_time_zone_and_a_signature_the_record_outgrew_is_flagged(console_daphne, consoles):
    # given a unit in Tokyo's zone whose request was sent back (signed), then resubmitted
    console_daphne.ensure_running()
    unit = UnitFactory(timezone="Asia/Tokyo")
    requester = UserFactory(unit=unit, role=Role.REQUESTER)
    approver = UserFactory(unit=unit, role=Role.APPROVER)
    request = make_request("withdrawal", requester)
    transition_now(
        entity="withdrawal", action="send_back", actor=approver, request_id=request.id, reason="add a crate",
        signature_id=sign(approver, "withdrawal", "send_back"),
    )
    transition_now(entity="withdrawal", action="resubmit", actor=requester, request_id=request.id)
    signature = Signature.objects.get(signer_id=approver.id)

    # when the approver opens the console
    page = consoles.open(console_daphne.port, approver.username)

    # then the top bar names the unit's zone, and the history's times are Tokyo's (UTC on hover)
    expect(page.get_by_test_id("unit-timezone")).to_have_text("Asia/Tokyo · GMT+9")
    page.get_by_test_id(f"history-{request.id}").click()
    entries = page.get_by_test_id("history-panel").get_by_test_id("history-entry")
    expect(entries).to_have_count(3)
    sent_back = AuditEntry.objects.get(record_id=request.id, action="sent_back")
    tokyo = sent_back.at.astimezone(ZoneInfo("Asia/Tokyo"))
    moment = entries.nth(1).locator(".history-head time")
    expect(moment).to_contain_text(f"{tokyo:%H:%M:%S} GMT+9")
    expect(moment).to_contain_text(str(tokyo.day))
    expect(moment).to_have_attribute("title", f"{sent_back.at.astimezone(ZoneInfo('UTC')):%Y-%m-%d %H:%M:%S} UTC")
    expect(entries.nth(1).get_by_test_id("history-signature")).to_contain_text(
        f"Signed: returned by {approver.get_full_name()} ({approver.username}), "
    )
    # and the send-back's signature no longer matches the request, which was resubmitted since
    shown = page.get_by_test_id(f"signature-{signature.id}")
    expect(shown).to_have_attribute("data-matches-record", "false")
    expect(page.get_by_test_id(f"signature-warning-{signature.id}")).to_contain_text(
        "no longer matches the record (changed after signing)"
    )
    consoles.shot(page, "tokyo-history")


def test_a_signed_approval_shows_in_another_users_activity_feed(console_daphne, worker, consoles):
    # given an approver and a requester of one unit, each in their own console
    console_daphne.ensure_running()
    unit = UnitFactory()
    requester = UserFactory(unit=unit, role=Role.REQUESTER)
    approver = UserFactory(unit=unit, role=Role.APPROVER)
    request = make_request("withdrawal", requester)
    watcher = consoles.open(console_daphne.port, requester.username)
    deciding = consoles.open(console_daphne.port, approver.username)

    # when the approver approves in the console, signing in the dialog
    deciding.get_by_test_id(f"approve-{request.id}").click()
    sign_in_dialog(deciding)

    # then the requester's live feed says who did what, signed with which meaning, on the
    # update's line (the activity feed: the audit entry, right after its update)
    said = f"{approver.username} approved {request.request_number}: signed, meaning approved"
    feed = watcher.get_by_test_id("feed-activity").filter(has_text=said)
    expect(feed).to_have_count(1, timeout=WAIT_MS)
    entry = AuditEntry.objects.get(record_id=request.id, action="approved")
    line = watcher.locator(f'.feed-item[data-seq="{entry.seq}"]')
    expect(line.get_by_test_id("feed-activity")).to_contain_text(said)
    consoles.shot(watcher, "activity-feed")

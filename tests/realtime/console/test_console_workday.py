"""A day's work in the console (issue 32), in a real Chromium against real Daphne and Celery
processes: a requester files a request in the form, offered only the crates free now (a crate in an
open request shows reserved); a store creates a crate; an approver bulk-signs by request number,
is told before any password which named requests cannot be signed and why, sees exactly the list
being signed, and after the job each request's result, a refused one shown as failed with why; a
decided request shows the requester's reason and the decider's; a sent-back request is edited
before it is resubmitted; the lists page and filter."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from backend.accounts.models import Role
from backend.audit.models import AuditEntry, Signature
from backend.jobs.models import Job
from backend.records import services
from backend.records.lifecycle import REQUEST_KINDS
from backend.records.models import Crate, RequestStatus, WithdrawalRequest
from tests.support.browser import CONSOLE_OPTIONS, WAIT_MS
from tests.support.factories import CrateFactory, UnitFactory, UserFactory, make_request, pending_requests_fast
from tests.support.signing import sign, transition_now

from .signing import sign_in_dialog

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def staff(unit, *roles: str) -> dict:
    return {role: UserFactory(unit=unit, role=role) for role in roles}


def test_a_requester_files_in_the_form_from_the_crates_free_now_and_a_store_adds_a_crate(
    console_daphne, worker, consoles
):
    # given two free crates and one held by an open request, a requester and a store in the console
    console_daphne.ensure_running()
    unit = UnitFactory()
    people = staff(unit, Role.REQUESTER, Role.STORE)
    requester = people[Role.REQUESTER]
    free = CrateFactory(unit=unit, crate_number="CR-2026-W0001")
    other_free = CrateFactory(unit=unit, crate_number="CR-2026-W0002")
    held = CrateFactory(unit=unit, crate_number="CR-2026-W0003")
    holder = make_request("withdrawal", requester, [held])
    page = consoles.open(console_daphne.port, requester.username)
    store = consoles.open(console_daphne.port, people[Role.STORE].username)

    # then the held crate shows reserved, by the request that holds it
    expect(page.get_by_test_id(f"crate-status-{held.id}")).to_have_text("Reserved")
    expect(page.get_by_test_id(f"crate-reserved-by-{held.id}")).to_contain_text(holder.request_number)
    expect(page.get_by_test_id(f"crate-status-{free.id}")).to_have_text("In storage")

    # when the requester opens New request: only the free crates are offered
    page.get_by_test_id("new-request").click()
    dialog = page.get_by_test_id("request-form-dialog")
    expect(dialog).to_be_visible()
    expect(page.get_by_test_id(f"pick-{free.crate_number}")).to_be_visible()
    expect(page.get_by_test_id(f"pick-{other_free.crate_number}")).to_be_visible()
    expect(page.get_by_test_id(f"pick-{held.crate_number}")).to_have_count(0)
    # and filing with no crate is refused in the form
    page.get_by_test_id("request-form-submit").click()
    expect(page.get_by_test_id("request-form-error")).to_have_text("Pick at least one crate.")
    # and they pick one, give the reason and file it
    page.get_by_test_id("request-form-crate-filter").fill("W0001")
    expect(page.get_by_test_id(f"pick-{other_free.crate_number}")).to_have_count(0)
    page.get_by_test_id(f"pick-{free.crate_number}").check()
    page.get_by_test_id("request-form-reason").fill("audit of batch 7")
    consoles.shot(page, "new-request")
    page.get_by_test_id("request-form-submit").click()
    expect(dialog).to_be_hidden()

    # then the request exists as filed, is listed with its reason, and its crate is now reserved
    filed = WithdrawalRequest.objects.exclude(id=holder.id).get(unit=unit)
    assert (filed.created_by_id, filed.reason, filed.status) == (requester.id, "audit of batch 7", RequestStatus.PENDING)
    assert list(filed.crates.values_list("id", flat=True)) == [free.id]
    expect(page.get_by_test_id(f"request-reason-{filed.id}")).to_have_text("audit of batch 7")
    expect(page.get_by_test_id(f"crate-status-{free.id}")).to_have_text("Reserved")
    # and another console of the unit shows it reserved too, live
    expect(store.get_by_test_id(f"crate-status-{free.id}")).to_have_text("Reserved", timeout=WAIT_MS)
    assert consoles.loads(page) == 1

    # when the store creates a crate in the form
    store.get_by_test_id("new-crate").click()
    store.get_by_test_id("crate-form-location").fill("Vault 9")
    store.get_by_test_id("crate-form-due").fill("2031-01-31")
    store.get_by_test_id("crate-form-submit").click()
    expect(store.get_by_test_id("crate-form-dialog")).to_be_hidden()

    # then it is numbered by the archive and listed in both consoles
    crate = Crate.objects.get(unit=unit, location="Vault 9")
    assert str(crate.destruction_due) == "2031-01-31"
    expect(store.get_by_test_id(f"crate-row-{crate.id}")).to_contain_text(crate.crate_number)
    expect(page.get_by_test_id(f"crate-status-{crate.id}")).to_have_text("In storage", timeout=WAIT_MS)
    # (a requester has no New crate button, a store no New request)
    expect(page.get_by_test_id("new-crate")).to_be_hidden()
    expect(store.get_by_test_id("new-request")).to_be_hidden()


def test_an_approver_bulk_signs_by_request_number_and_sees_each_result_a_refused_one_as_failed(
    console_daphne, worker, consoles
):
    # given three pending withdrawals and an approved one, and an approver in the console
    console_daphne.ensure_running()
    unit = UnitFactory()
    people = staff(unit, Role.REQUESTER, Role.APPROVER)
    requester, approver = people[Role.REQUESTER], people[Role.APPROVER]
    first, second, third, done = (make_request("withdrawal", requester) for _ in range(4))
    transition_now(entity="withdrawal", action="approve", actor=approver, request_id=done.id,
                   signature_id=sign(approver, "withdrawal", "approve"))
    page = consoles.open(console_daphne.port, approver.username)
    expect(page.get_by_test_id(f"request-status-{done.id}")).to_have_text("Approved")
    signatures = Signature.objects.count()

    # when the approver types request numbers (one in lower case, one decided already, one that
    # does not exist) and runs an approval
    page.get_by_test_id("bulk-entity").select_option("withdrawal")
    page.get_by_test_id("bulk-action").select_option("approve")
    ids = page.get_by_test_id("bulk-ids")
    ids.fill(f"{first.request_number}\n{second.request_number.lower()}\n{done.request_number}\nWR-2099-9999")
    page.get_by_test_id("bulk-submit").click()

    # then, before any password is asked, it says which cannot be approved and why
    expect(page.get_by_test_id("bulk-refusal-list").locator("li")).to_have_count(2)
    expect(page.get_by_test_id(f"bulk-refusal-{done.request_number}")).to_contain_text("no longer in a status that allows it")
    expect(page.get_by_test_id("bulk-refusal-WR-2099-9999")).to_contain_text("not found")
    expect(page.get_by_test_id("bulk-error")).to_contain_text("2 of 4 cannot be approved")
    expect(page.get_by_test_id("sign-dialog")).to_be_hidden()
    assert not Job.objects.filter(requested_by=approver).exists() and Signature.objects.count() == signatures
    consoles.shot(page, "bulk-checked")

    # when they remove those, tick the third in the list, and run it again
    page.get_by_test_id("bulk-drop-refused").click()
    page.get_by_test_id(f"select-{third.id}").check()
    assert ids.input_value().split() == [first.request_number, second.request_number.lower(), third.request_number]
    page.get_by_test_id("bulk-submit").click()

    # then the signing dialog lists exactly the three it signs, by number
    expect(page.get_by_test_id("sign-dialog")).to_be_visible()
    expect(page.get_by_test_id("sign-item")).to_have_text([first.request_number, second.request_number, third.request_number])
    expect(page.get_by_test_id("sign-items-count")).to_have_text("3 requests, each signed:")
    consoles.shot(page, "bulk-sign-list")
    # and while it is open, the requester changes the second one
    services.request_update(entity="withdrawal", actor=requester, request_id=second.id, expected_version=1,
                            reason="one more label", change_reason="typo")
    sign_in_dialog(page, title="Approve 3 withdrawal requests")

    # then the job looks partly failed, not green, and names the request that failed and why
    progress = page.get_by_test_id("bulk-progress")
    expect(progress).to_have_attribute("data-status", "partly_failed", timeout=WAIT_MS)
    expect(page.get_by_test_id("bulk-progress-text")).to_have_text(
        "Partly failed: 3 of 3 processed, 1 failed (1 changed since you saw them)"
    )
    failed = page.get_by_test_id(f"bulk-result-{second.request_number}")
    expect(failed).to_have_attribute("data-status", "failed")
    expect(failed).to_have_attribute("data-code", "stale_version")
    expect(failed).to_contain_text("failed: changed since you saw them")
    for request in (first, third):
        expect(page.get_by_test_id(f"bulk-result-{request.request_number}")).to_have_text(f"{request.request_number} — approved")
        expect(page.get_by_test_id(f"request-status-{request.id}")).to_have_text("Approved")
    expect(page.get_by_test_id(f"request-status-{second.id}")).to_have_text("Pending")
    job = Job.objects.get(kind="bulk.withdrawal.approve", requested_by=approver)
    expect(page.get_by_test_id(f"job-status-{job.id}")).to_have_text("Partly failed")
    # and the box is empty for the next one
    expect(ids).to_have_value("")
    assert job.params["versions"] == {str(r.id): 1 for r in (first, second, third)}
    consoles.shot(page, "bulk-results")


def test_a_decided_request_shows_both_reasons_and_a_sent_back_one_is_edited_before_it_is_resubmitted(
    console_daphne, worker, consoles
):
    # given a request sent back for a missing crate, one rejected, and a free crate
    console_daphne.ensure_running()
    unit = UnitFactory()
    people = staff(unit, Role.REQUESTER, Role.APPROVER)
    requester, approver = people[Role.REQUESTER], people[Role.APPROVER]
    kept, added = CrateFactory(unit=unit), CrateFactory(unit=unit)
    returned = make_request("withdrawal", requester, [kept])  # reason "test"
    transition_now(entity="withdrawal", action="send_back", actor=approver, request_id=returned.id,
                   reason="add the second crate", signature_id=sign(approver, "withdrawal", "send_back"))
    rejected = make_request("destruction", requester)
    transition_now(entity="destruction", action="reject", actor=approver, request_id=rejected.id,
                   reason="not due yet", signature_id=sign(approver, "destruction", "reject"))
    page = consoles.open(console_daphne.port, requester.username)

    # then each shows the requester's reason and, under it, the decision's
    expect(page.get_by_test_id(f"request-reason-{rejected.id}")).to_have_text("test")
    expect(page.get_by_test_id(f"decision-reason-{rejected.id}")).to_have_text("Rejected: not due yet")
    expect(page.get_by_test_id(f"decision-reason-{returned.id}")).to_have_text("Sent back: add the second crate")

    # when the requester edits the sent-back request: its crate is ticked, the free one offered
    page.get_by_test_id(f"edit-{returned.id}").click()
    expect(page.get_by_test_id("request-form-title")).to_have_text(f"Edit {returned.request_number}")
    expect(page.get_by_test_id("request-form-sent-back")).to_have_text("Sent back: add the second crate")
    expect(page.get_by_test_id(f"pick-{kept.crate_number}")).to_be_checked()
    page.get_by_test_id(f"pick-{added.crate_number}").check()
    page.get_by_test_id("request-form-reason").fill("both crates of batch 7")
    # (an edit says why)
    page.get_by_test_id("request-form-submit").click()
    expect(page.get_by_test_id("request-form-error")).to_contain_text("Say why it is changed")
    page.get_by_test_id("request-form-change-reason").fill("added the second crate")
    consoles.shot(page, "edit-request")
    page.get_by_test_id("request-form-submit").click()
    expect(page.get_by_test_id("request-form-dialog")).to_be_hidden()

    # then it is changed, still sent back, its crates both reserved
    returned.refresh_from_db()
    assert (returned.status, returned.version, returned.reason) == (RequestStatus.SENT_BACK, 3, "both crates of batch 7")
    assert set(returned.crates.values_list("id", flat=True)) == {kept.id, added.id}
    assert AuditEntry.objects.filter(record_id=returned.id, action="updated", reason="added the second crate").exists()
    expect(page.get_by_test_id(f"request-reason-{returned.id}")).to_have_text("both crates of batch 7")
    expect(page.get_by_test_id(f"crate-status-{added.id}")).to_have_text("Reserved")

    # when it is resubmitted, it is pending again, at the edited version
    page.get_by_test_id(f"resubmit-{returned.id}").click()
    expect(page.get_by_test_id(f"request-status-{returned.id}")).to_have_text("Pending", timeout=WAIT_MS)
    returned.refresh_from_db()
    assert (returned.status, returned.version) == (RequestStatus.PENDING, 4)


def test_the_lists_page_and_filter_and_requests_are_found_by_crate_number(console_daphne, worker, consoles):
    # given 55 crates, one of them in an open request, and an approver in the console
    console_daphne.ensure_running()
    unit = UnitFactory()
    people = staff(unit, Role.REQUESTER, Role.APPROVER)
    Crate.objects.bulk_create(Crate(unit=unit, crate_number=f"CR-2026-P{i:04d}", location="Aisle 3") for i in range(54))
    wanted = CrateFactory(unit=unit, crate_number="CR-2026-FIND")
    request = make_request("withdrawal", people[Role.REQUESTER], [wanted])
    other = make_request("withdrawal", people[Role.REQUESTER])
    page = consoles.open(console_daphne.port, people[Role.APPROVER].username)

    # then the crates come 50 to a page, and the next page holds the rest
    expect(page.get_by_test_id("crate-count")).to_have_text("50 of 56")
    expect(page.get_by_test_id("crates-page")).to_have_text("Page 1 of 2")
    expect(page.get_by_test_id("crates-prev")).to_be_disabled()
    page.get_by_test_id("crates-next").click()
    expect(page.get_by_test_id("crates-page")).to_have_text("Page 2 of 2")
    expect(page.get_by_test_id("crates-body").locator("tr")).to_have_count(6)
    expect(page.get_by_test_id("crates-next")).to_be_disabled()

    # when the status filter asks for reserved crates: back to page 1, the one reserved crate
    page.get_by_test_id("crate-status-filter").select_option("reserved")
    expect(page.get_by_test_id("crates-body").locator("tr")).to_have_count(2)  # the other request's crate too
    expect(page.get_by_test_id(f"crate-row-{wanted.id}")).to_be_visible()
    page.get_by_test_id("crate-status-filter").select_option("available")
    expect(page.get_by_test_id("crate-count")).to_have_text("50 of 54")
    expect(page.get_by_test_id(f"crate-row-{wanted.id}")).to_have_count(0)

    # and requests are found by the number of a crate they name
    page.get_by_test_id("request-search").fill("CR-2026-FIND")
    expect(page.get_by_test_id("requests-body").locator("tr")).to_have_count(1)
    expect(page.get_by_test_id(f"request-row-{request.id}")).to_be_visible()
    expect(page.get_by_test_id(f"request-row-{other.id}")).to_have_count(0)


def test_all_kinds_pages_through_the_three_lists_merged_newest_first(console_daphne, consoles):
    # given 40 requests of each kind, the withdrawals newest, then the destructions, then the
    # transfers (so the newest 50 are 40 withdrawals and 10 destructions), and an approver
    console_daphne.ensure_running()
    unit = UnitFactory()
    people = staff(unit, Role.REQUESTER, Role.APPROVER)
    now, order = timezone.now(), {}
    for rank, entity in enumerate(("withdrawal", "destruction", "transfer")):
        model = REQUEST_KINDS[entity].model
        for i, request in enumerate(pending_requests_fast(entity, people[Role.REQUESTER], 40)):
            model.objects.filter(id=request.id).update(created_at=now - timedelta(minutes=100 * rank + i))
            order[request.id] = (entity, i)
    page = consoles.open(console_daphne.port, people[Role.APPROVER].username)
    rows = page.get_by_test_id("requests-body").locator("tr")

    # then "All kinds" shows the 120 as three pages of the merged list: page 1 is the newest 50
    expect(page.get_by_test_id("request-count")).to_have_text("50 of 120")
    expect(page.get_by_test_id("requests-page")).to_have_text("Page 1 of 3")
    expect(rows).to_have_count(50)
    assert shown(rows, order) == [("withdrawal", i) for i in range(40)] + [("destruction", i) for i in range(10)]
    # and the next pages hold the rest, in the same order, each request once
    page.get_by_test_id("requests-next").click()
    expect(page.get_by_test_id("requests-page")).to_have_text("Page 2 of 3")
    expect(rows.first).to_have_attribute("data-kind", "destruction")
    expect(rows).to_have_count(50)
    assert shown(rows, order) == [("destruction", i) for i in range(10, 40)] + [("transfer", i) for i in range(20)]
    page.get_by_test_id("requests-next").click()
    expect(page.get_by_test_id("requests-page")).to_have_text("Page 3 of 3")
    expect(rows).to_have_count(20)
    assert shown(rows, order) == [("transfer", i) for i in range(20, 40)]
    expect(page.get_by_test_id("requests-next")).to_be_disabled()

    # and one kind alone pages as the API does: 40 withdrawals on one page
    page.get_by_test_id("request-kind").select_option("withdrawal")
    expect(page.get_by_test_id("request-count")).to_have_text("40")
    expect(rows).to_have_count(40)


def shown(rows, order: dict) -> list:
    """The (kind, rank) of each request row on the page, top to bottom."""
    ids = rows.evaluate_all("rows => rows.map(row => row.dataset.testid.replace('request-row-', ''))")
    return [order[uuid.UUID(pk)] for pk in ids]


def test_after_resync_required_the_console_reads_its_lists_again_without_a_reload(console_daphne, consoles):
    # given a live console with a pending withdrawal in its unit
    console_daphne.ensure_running()
    unit = UnitFactory()
    people = staff(unit, Role.REQUESTER, Role.APPROVER)
    crate = CrateFactory(unit=unit)
    request = make_request("withdrawal", people[Role.REQUESTER], [crate])
    # (enough reconnect attempts to outlast a Daphne restart on a loaded machine)
    options = {"client": {**CONSOLE_OPTIONS["client"], "maxAttempts": 60}}
    page = consoles.open(console_daphne.port, people[Role.APPROVER].username, options=options)
    expect(page.get_by_test_id(f"crate-status-{crate.id}")).to_have_text("Reserved")
    fetches = page.evaluate("window.realtimeStats.fetches")

    # when Daphne goes away, the request is rejected and another filed meanwhile, and the history
    # of those changes is pruned before the console comes back (so they cannot be replayed)
    console_daphne.stop()
    expect(page.get_by_test_id("status-badge")).to_have_attribute("data-status", "syncing")
    transition_now(entity="withdrawal", action="reject", actor=people[Role.APPROVER], request_id=request.id,
                   reason="not needed", signature_id=sign(people[Role.APPROVER], "withdrawal", "reject"))
    filed = make_request("destruction", people[Role.REQUESTER])
    from backend.events.models import OutboxEvent

    last = OutboxEvent.objects.filter(unit=unit).order_by("-seq").values_list("seq", flat=True).first()
    OutboxEvent.objects.filter(unit=unit, seq__lt=last).delete()
    console_daphne.start()

    # then the server says resync_required and the console reads both lists again, in the same document
    expect(page.get_by_test_id("status-badge")).to_have_attribute("data-status", "live", timeout=WAIT_MS)
    page.wait_for_function("() => window.realtimeStats.resyncs === 1")
    expect(page.get_by_test_id(f"request-status-{request.id}")).to_have_text("Rejected")
    expect(page.get_by_test_id(f"decision-reason-{request.id}")).to_have_text("Rejected: not needed")
    expect(page.get_by_test_id(f"request-row-{filed.id}")).to_be_visible()
    expect(page.get_by_test_id(f"crate-status-{crate.id}")).to_have_text("In storage")  # freed by the rejection
    after = page.evaluate("window.realtimeStats.fetches")
    assert after["requests"] > fetches["requests"] and after["crates"] > fetches["crates"]
    assert consoles.loads(page) == 1

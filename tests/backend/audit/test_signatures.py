"""Electronic signatures on decisions (21 CFR Part 11 §11.50, §11.70, §11.200): required, checked,
locked after repeated failures (audited, unlocked by a unit admin), bound to what was signed, and
shown wherever the record is shown."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from backend.audit.chain import binding_hash
from backend.audit.models import AuditEntry, Signature, SignedRecord
from backend.audit.selectors import audit_verify, binding_matches
from backend.jobs.models import Job
from backend.records import services
from backend.records.models import WithdrawalRequest
from backend.records.services.journal import signed_content
from tests.backend.audit.test_api import run_jobs
from tests.support.factories import CrateFactory, UnitFactory, make_request, unit_staff
from tests.support.signing import MEANINGS, sign, signed, transition_now

pytestmark = pytest.mark.django_db

DECISIONS = [("approve", "approve"), ("reject", "reject"), ("send-back", "send_back")]


@pytest.fixture
def staff():
    return unit_staff(UnitFactory(code="north"))


def decide(api, user, request, verb, body=None, kind="withdrawal"):
    return api(user).post(f"/api/{kind}-requests/{request.id}/{verb}/", body or {}, format="json")


def bulk(api, user, action, ids, **extra):
    return api(user).post(
        "/api/bulk-actions/", {"entity": "withdrawal", "action": action, "ids": [str(i) for i in ids], **extra},
        format="json",
    )


# --- required, and checked ------------------------------------------------------------------------


@pytest.mark.parametrize("verb,action", DECISIONS)
@pytest.mark.parametrize("signature", [None, {}, {"meaning": "approved"}, {"password": "", "meaning": "approved"}])
def test_a_decision_without_a_signature_is_400_signature_required(api, staff, enqueued, verb, action, signature):
    request = make_request("withdrawal", staff["requester"])
    body = {"reason": "r"} | ({"signature": signature} if signature is not None else {})
    if signature and "meaning" in signature:
        body["signature"]["meaning"] = MEANINGS[action]
    response = decide(api, staff["approver"], request, verb, body)
    assert response.status_code == 400, response.content
    assert response.json()["code"] in ("signature_required", "invalid")
    assert enqueued == [] and not Job.objects.exists() and not Signature.objects.exists()


@pytest.mark.parametrize("verb,action", DECISIONS)
def test_the_meaning_must_be_the_actions_own(api, staff, enqueued, verb, action):
    request = make_request("withdrawal", staff["requester"])
    wrong = next(m for a, m in MEANINGS.items() if a != action)
    response = decide(api, staff["approver"], request, verb, signed(verb, {"reason": "r"}) | {
        "signature": {"password": "test-pass-2026", "meaning": wrong}})
    assert response.status_code == 400
    assert response.json() == {
        "code": "signature_required", "message": response.json()["message"], "details": {"meaning": MEANINGS[action]},
    }
    assert not Signature.objects.exists() and enqueued == []


@pytest.mark.parametrize("verb,action", DECISIONS)
def test_a_wrong_password_is_403_signature_invalid_and_audited(api, staff, enqueued, verb, action):
    request = make_request("withdrawal", staff["requester"])
    response = decide(api, staff["approver"], request, verb, signed(verb, {"reason": "r"}, password="not-mine"))
    assert response.status_code == 403
    assert response.json()["code"] == "signature_invalid"
    assert response.json()["details"] == {"attempts_left": 4}
    assert enqueued == [] and not Signature.objects.exists()
    (entry,) = AuditEntry.objects.filter(entity="user", record_id=staff["approver"].id)
    assert (entry.action, entry.actor_username, entry.record_number) == (
        "signature_failed", staff["approver"].username, staff["approver"].username)
    assert "not-mine" not in str(entry.__dict__)
    assert audit_verify().ok


def test_the_signature_check_comes_after_the_other_refusals(api, staff, enqueued):
    # a decision refused anyway (four eyes, wrong role, no reason) costs no signature attempt
    own = make_request("withdrawal", staff["admin"])
    assert decide(api, staff["admin"], own, "approve", signed("approve", password="x")).json()["code"] == "four_eyes"
    other = make_request("withdrawal", staff["requester"])
    assert decide(api, staff["store"], other, "approve", signed("approve", password="x")).status_code == 403
    assert decide(api, staff["approver"], other, "reject", signed("reject", password="x")).json()["code"] == "reason_required"
    assert not AuditEntry.objects.filter(entity="user").exists()


# --- lockout ------------------------------------------------------------------------------------------


def test_five_wrong_passwords_lock_signing_until_a_unit_admin_unlocks(api, staff, enqueued):
    approver, request = staff["approver"], make_request("withdrawal", staff["requester"])

    # when the approver gives a wrong password five times
    codes = [decide(api, approver, request, "approve", signed("approve", password=f"guess{i}")).status_code
             for i in range(5)]
    # then the first four are 403 and the fifth locks (423), and so is the right password now
    assert codes == [403, 403, 403, 403, 423]
    locked = decide(api, approver, request, "approve", signed("approve"))
    assert (locked.status_code, locked.json()["code"]) == (423, "signature_locked")
    assert enqueued == []
    trail = list(AuditEntry.objects.filter(entity="user", record_id=approver.id).order_by("position"))
    assert [e.action for e in trail] == ["signature_failed"] * 5 + ["signature_locked"]
    # and a unit admin sees it and unlocks it (audited, by the admin); a non-admin cannot
    assert api(staff["approver"]).post(f"/api/users/{approver.id}/unlock-signing/", {}).status_code == 403
    listed = {u["username"]: u for u in api(staff["admin"]).get("/api/users/").json()}
    assert listed[approver.username]["signing_locked"] is True
    unlocked = api(staff["admin"]).post(f"/api/users/{approver.id}/unlock-signing/", {"reason": "called him"})
    assert unlocked.status_code == 200 and unlocked.json()["signing_locked"] is False
    last = AuditEntry.objects.filter(entity="user", record_id=approver.id).order_by("-position").first()
    assert (last.action, last.actor_username, last.reason) == ("signature_unlocked", staff["admin"].username, "called him")
    # then signing works again, and the old failures no longer count towards a lock
    assert decide(api, approver, request, "approve", signed("approve")).status_code == 202
    again = decide(api, approver, make_request("withdrawal", staff["requester"]), "approve",
                   signed("approve", password="oops"))
    assert again.json()["details"] == {"attempts_left": 4}


def test_an_admin_of_another_unit_cannot_unlock(api, staff):
    stranger = unit_staff(UnitFactory())["admin"]
    assert api(stranger).post(f"/api/users/{staff['approver'].id}/unlock-signing/", {}).status_code == 404


def test_failures_older_than_the_window_do_not_lock(api, staff, enqueued, settings):
    settings.SIGNATURE_FAILURE_WINDOW_MINUTES = 0  # every earlier failure is outside the window
    request = make_request("withdrawal", staff["requester"])
    codes = [decide(api, staff["approver"], request, "approve", signed("approve", password="x")).status_code
             for _ in range(6)]
    assert codes == [403] * 6


def test_signed_decisions_are_throttled_per_user(api, staff, enqueued, monkeypatch):
    from backend.accounts.api import SignatureThrottle

    monkeypatch.setattr(SignatureThrottle, "THROTTLE_RATES", {"signature": "2/min"})
    requests = [make_request("withdrawal", staff["requester"]) for _ in range(3)]
    answers = [decide(api, staff["approver"], r, "approve", signed("approve")) for r in requests]
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert answers[2].json()["code"] == "throttled"


# --- bound to the record, shown with it ----------------------------------------------------------------


def test_an_approval_is_signed_bound_and_shown_on_the_record_and_in_its_history(api, staff, enqueued):
    approver = staff["approver"]
    approver.first_name, approver.last_name = "Ada", "Approver"
    approver.save()
    request = make_request("withdrawal", staff["requester"])

    assert decide(api, approver, request, "approve", signed("approve", {"version": 1})).status_code == 202
    run_jobs(enqueued)

    body = api(staff["requester"]).get(f"/api/withdrawal-requests/{request.id}/").json()
    (shown,) = body["signatures"]
    signature = Signature.objects.get()
    assert shown == {
        "id": str(signature.id), "signer": approver.username, "full_name": "Ada Approver", "meaning": "approved",
        "signed_at": shown["signed_at"], "version": 2, "matches_record": True,
    }
    assert shown["signed_at"].endswith("Z")
    # the history's approval entry carries it
    history = api(staff["requester"]).get(f"/api/withdrawal-requests/{request.id}/history/").json()["results"]
    approved = next(e for e in history if e["action"] == "approved")
    assert approved["signature"] == {
        "id": str(signature.id), "meaning": "approved", "signed_at": shown["signed_at"],
        "signer": approver.username, "full_name": "Ada Approver",
    }
    # and the list shows it too, read for the whole page at once
    listed = api(staff["requester"]).get("/api/withdrawal-requests/").json()["results"]
    assert next(r for r in listed if r["id"] == str(request.id))["signatures"] == [shown]


def test_a_record_changed_after_signing_shows_the_signature_no_longer_matching(api, staff, enqueued):
    # given a request sent back under a signature (meaning "returned")
    request = make_request("withdrawal", staff["requester"])
    decide(api, staff["approver"], request, "send-back", signed("send-back", {"reason": "which shelf?"}))
    run_jobs(enqueued)
    assert api(staff["requester"]).get(f"/api/withdrawal-requests/{request.id}/").json()["signatures"][0][
        "matches_record"] is True

    # when the requester edits it (a new version: not what was signed)
    services.request_update(
        entity="withdrawal", actor=staff["requester"], request_id=request.id, expected_version=2,
        reason="shelf 4", change_reason="answered the question",
    )

    # then the signature is still listed, but no longer matches the record
    (shown,) = api(staff["requester"]).get(f"/api/withdrawal-requests/{request.id}/").json()["signatures"]
    assert (shown["meaning"], shown["version"], shown["matches_record"]) == ("returned", 2, False)


def test_a_signature_cannot_be_copied_to_another_record_or_survive_a_tampered_row(staff):
    first, second = (make_request("withdrawal", staff["requester"]) for _ in range(2))
    transition_now(
        entity="withdrawal", action="approve", actor=staff["approver"], request_id=first.id,
        signature_id=sign(staff["approver"], "withdrawal", "approve"),
    )
    bound = SignedRecord.objects.select_related("signature").get()
    first = WithdrawalRequest.objects.get(id=first.id)
    content = signed_content(first, [c.id for c in first.crates.all()])
    assert binding_matches(bound, version=first.version, content=content)
    # another record's content (same version) does not match the binding
    second_content = signed_content(second, [c.id for c in second.crates.all()])
    assert not binding_matches(bound, version=first.version, content=second_content)
    # nor does the binding once the signature row is rewritten by someone who owns the tables
    from backend.audit.db import triggers_disabled

    with triggers_disabled(connection), connection.cursor() as cursor:
        cursor.execute("UPDATE audit_signature SET meaning = 'rejected'")
    bound = SignedRecord.objects.select_related("signature").get()
    assert not binding_matches(bound, version=first.version, content=content)
    assert bound.binding != binding_hash(bound.signature, entity="withdrawal", record_id=first.id,
                                         version=first.version, content=content)


def test_signatures_are_append_only(staff):
    sign(staff["approver"], "withdrawal", "approve")
    for sql in ("UPDATE audit_signature SET meaning = 'rejected'", "DELETE FROM audit_signature"):
        with pytest.raises(Exception, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
    assert Signature.objects.get().meaning == "approved"


def test_the_service_refuses_a_decision_without_its_deciders_signature(staff):
    request = make_request("withdrawal", staff["requester"])
    someone_elses = sign(staff["admin"], "withdrawal", "approve")
    for signature_id in (None, someone_elses, sign(staff["approver"], "withdrawal", "reject"),
                         sign(staff["approver"], "destruction", "approve")):
        with pytest.raises(Exception) as refused:
            transition_now(
                entity="withdrawal", action="approve", actor=staff["approver"], request_id=request.id,
                signature_id=signature_id,
            )
        assert refused.value.code == "signature_required"
    assert WithdrawalRequest.objects.get(id=request.id).status == "pending"


# --- bulk: one signature for every item ----------------------------------------------------------------


def test_a_bulk_decision_is_one_signature_referenced_by_every_items_entry(api, staff, enqueued):
    theirs = [make_request("withdrawal", staff["requester"], [CrateFactory(unit=staff["requester"].unit)])
              for _ in range(3)]
    own = make_request("withdrawal", staff["admin"])

    answer = bulk(api, staff["admin"], "approve", [r.id for r in theirs] + [own.id],
                  signature={"password": "test-pass-2026", "meaning": "approved"})
    assert answer.status_code == 202, answer.content
    (job,) = run_jobs(enqueued)

    signature = Signature.objects.get()
    assert job.params["signature_id"] == str(signature.id) and "password" not in str(job.params)
    entries = AuditEntry.objects.filter(action="approved", entity="withdrawal")
    assert {e.record_id for e in entries} == {r.id for r in theirs}
    assert {e.signature_id for e in entries} == {signature.id}
    assert set(SignedRecord.objects.values_list("record_id", flat=True)) == {r.id for r in theirs}
    assert job.progress["failed"] == 1  # their own request: four eyes, and not signed


@pytest.mark.parametrize("signature,status,code", [
    (None, 400, "signature_required"),
    ({"password": "test-pass-2026", "meaning": "rejected"}, 400, "signature_required"),
    ({"password": "wrong", "meaning": "approved"}, 403, "signature_invalid"),
])
def test_bulk_decisions_need_the_signature(api, staff, enqueued, signature, status, code):
    ids = [make_request("withdrawal", staff["requester"]).id]
    extra = {"signature": signature} if signature is not None else {}
    answer = bulk(api, staff["approver"], "approve", ids, **extra)
    assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert not Job.objects.exists() and enqueued == []


def test_a_bulk_refused_for_its_ids_costs_no_signature_attempt(api, staff, enqueued, settings):
    settings.BULK_MAX_IDS = 1
    ids = [make_request("withdrawal", staff["requester"]).id for _ in range(2)]
    answer = bulk(api, staff["approver"], "approve", ids, signature={"password": "wrong", "meaning": "approved"})
    assert answer.json()["code"] == "too_many_ids"
    assert not AuditEntry.objects.filter(entity="user").exists()


def test_resubmitting_needs_no_signature(api, staff, enqueued):
    request = make_request("withdrawal", staff["requester"])
    transition_now(entity="withdrawal", action="send_back", actor=staff["approver"], request_id=request.id,
                                reason="r", signature_id=sign(staff["approver"], "withdrawal", "send_back"))
    assert decide(api, staff["requester"], request, "resubmit", {}).status_code == 202


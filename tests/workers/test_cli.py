"""The batch CLI end to end against a running stack (real Daphne, real worker)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from types import SimpleNamespace

import pytest

from backend.accounts.models import Role
from backend.audit.models import AuditEntry, Signature, SignedRecord
from backend.records import services
from backend.records.models import WithdrawalRequest
from tests.support.auth import access_token
from tests.support.factories import PASSWORD, UnitFactory, UserFactory, pending_requests_fast
from workers.cli import Targets, parse_targets, read_ids

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def run_cli(port: int, user, *args: str, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    env = {"RECORDS_URL": f"http://127.0.0.1:{port}", "RECORDS_USERNAME": user.username, "RECORDS_PASSWORD": PASSWORD,
           "PATH": "/usr/bin:/bin", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args, "--quiet", "--poll", "0.2"],
        input=stdin, capture_output=True, text=True, env=env, timeout=120,
    )


def test_partial_failure_exits_2_and_lists_the_failed_ids(daphne, worker, tmp_path):
    # given three pending requests and one id nobody has
    unit = UnitFactory()
    requester, approver = UserFactory(unit=unit, role=Role.REQUESTER), UserFactory(unit=unit, role=Role.APPROVER)
    ids = [str(r.id) for r in pending_requests_fast("withdrawal", requester, 3)]
    unknown = str(uuid.uuid4())
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("# nightly approvals\n" + "\n".join(ids) + f"\n{unknown}  # typo\n")

    # when the batch host runs the CLI with a file of ids
    result = run_cli(daphne, approver, "approve", "--entity", "withdrawal", "--ids-file", str(ids_file))

    # then it waited for the job, says what happened, and exits 2 for the partial failure
    assert result.returncode == 2, result.stderr
    assert "succeeded: 3 succeeded, 1 not_found" in result.stdout
    assert f"  {unknown}: not_found:" in result.stdout
    assert set(WithdrawalRequest.objects.filter(id__in=ids).values_list("status", flat=True)) == {"approved"}


def test_all_ids_succeed_from_stdin_exits_0(daphne, worker):
    unit = UnitFactory()
    requester, approver = UserFactory(unit=unit, role=Role.REQUESTER), UserFactory(unit=unit, role=Role.APPROVER)
    ids = [str(r.id) for r in pending_requests_fast("withdrawal", requester, 4)]
    result = run_cli(daphne, approver, "reject", "--entity", "withdrawal", "--reason", "expired", stdin=",".join(ids))
    assert result.returncode == 0, result.stderr
    assert "succeeded: 4 succeeded" in result.stdout
    assert set(WithdrawalRequest.objects.filter(id__in=ids).values_list("status", flat=True)) == {"rejected"}


def test_no_wait_exits_0_with_the_job_url_and_refusals_exit_1(daphne, worker, tmp_path):
    unit = UnitFactory()
    requester, approver = UserFactory(unit=unit, role=Role.REQUESTER), UserFactory(unit=unit, role=Role.APPROVER)
    ids = [str(r.id) for r in pending_requests_fast("withdrawal", requester, 1)]
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    queued = run_cli(daphne, approver, "approve", "--entity", "withdrawal", "--no-wait", stdin=ids[0],
                     env={"RECORDS_PASSWORD": "", "RECORDS_PASSWORD_FILE": str(secret)})
    refused = run_cli(daphne, requester, "approve", "--entity", "withdrawal", stdin=ids[0])  # wrong role
    no_reason = run_cli(daphne, approver, "reject", "--entity", "withdrawal", stdin=ids[0])
    assert queued.returncode == 0 and "/api/jobs/" in queued.stdout
    assert refused.returncode == 1 and "403" in refused.stderr
    assert no_reason.returncode == 1 and "reason_required" in no_reason.stderr


def test_decisions_are_signed_with_the_password_file_and_never_from_an_argument(daphne, worker, tmp_path):
    unit = UnitFactory()
    requester, approver = UserFactory(unit=unit, role=Role.REQUESTER), UserFactory(unit=unit, role=Role.APPROVER)
    ids = [str(r.id) for r in pending_requests_fast("withdrawal", requester, 2)]
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    # with a token and no password, a decision cannot be signed: refused before anything is sent
    token_only = run_cli(daphne, approver, "approve", "--entity", "withdrawal", stdin=ids[0],
                         env={"RECORDS_PASSWORD": "", "RECORDS_TOKEN": "unused"})
    assert token_only.returncode == 1 and "RECORDS_PASSWORD_FILE" in token_only.stderr
    # there is no option to pass a password on the command line
    with_argument = run_cli(daphne, approver, "approve", "--entity", "withdrawal", "--password", PASSWORD, stdin=ids[0])
    assert with_argument.returncode == 2 and "unrecognized arguments" in with_argument.stderr
    # with the password file, every decision is signed by the approver, meaning "approved"
    signed = run_cli(daphne, approver, "approve", "--entity", "withdrawal", stdin="\n".join(ids),
                     env={"RECORDS_PASSWORD": "", "RECORDS_PASSWORD_FILE": str(secret)})
    assert signed.returncode == 0, signed.stderr
    signature = Signature.objects.get(signer_id=approver.id)
    assert signature.meaning == "approved"
    assert set(SignedRecord.objects.filter(signature=signature).values_list("record_id", flat=True)) == {
        uuid.UUID(i) for i in ids
    }


def test_send_back_is_signed_and_exits_0(daphne, worker, tmp_path):
    # given two pending withdrawals, and an approver on the batch host
    unit = UnitFactory()
    requester, approver = UserFactory(unit=unit, role=Role.REQUESTER), UserFactory(unit=unit, role=Role.APPROVER)
    ids = [str(r.id) for r in pending_requests_fast("withdrawal", requester, 3)]
    returned, kept = ids[:2], ids[2]

    # when the CLI sends two back (the send-back spelling of the URL and the CLI), signing with the right password
    result = run_cli(daphne, approver, "send-back", "--entity", "withdrawal", "--reason", "add the missing crate",
                     stdin="\n".join(returned))

    # then it exits 0, each is sent back, and one signature meaning "returned" covers both
    assert result.returncode == 0, result.stderr + result.stdout
    assert "succeeded: 2 succeeded" in result.stdout
    assert set(WithdrawalRequest.objects.filter(id__in=returned).values_list("status", flat=True)) == {"sent_back"}
    signature = Signature.objects.get(signer_id=approver.id)
    assert (signature.meaning, signature.action) == ("returned", "send_back")
    assert {str(r) for r in SignedRecord.objects.filter(signature=signature).values_list("record_id", flat=True)} == set(returned)
    entries = AuditEntry.objects.filter(record_id__in=returned, action="sent_back")
    assert entries.count() == 2 and {e.signature_id for e in entries} == {signature.id}

    # when the third is sent back with a wrong signature password (signed in with a token, so the
    # signature is the only check that fails)
    wrong = tmp_path / "pw"
    wrong.write_text("not-the-password\n")
    refused = run_cli(daphne, approver, "send-back", "--entity", "withdrawal", "--reason", "again", stdin=kept,
                      env={"RECORDS_PASSWORD": "", "RECORDS_TOKEN": access_token(approver), "RECORDS_PASSWORD_FILE": str(wrong)})

    # then it exits non-zero, nothing is sent back, and the wrong password is counted and audited
    assert refused.returncode == 1 and "signature_invalid" in refused.stderr, refused.stderr
    assert WithdrawalRequest.objects.get(id=kept).status == "pending"
    (failed,) = AuditEntry.objects.filter(entity="user", record_id=approver.id, action="signature_failed")
    assert failed.actor_id == approver.id and "returned" in failed.reason
    assert Signature.objects.filter(signer_id=approver.id).count() == 1


def test_read_ids_accepts_lines_commas_and_comments():
    assert read_ids(["a, b", "# skip", "c # trailing", "", "  d  "]) == ["a", "b", "c", "d"]


def test_an_id_with_the_version_the_decider_saw_is_not_decided_once_it_changed(daphne, worker):
    # given two pending requests exported for review at version 1, and one edited since
    unit = UnitFactory()
    requester, approver = UserFactory(unit=unit, role=Role.REQUESTER), UserFactory(unit=unit, role=Role.APPROVER)
    kept, edited = (str(r.id) for r in pending_requests_fast("withdrawal", requester, 2))
    services.request_update(entity="withdrawal", actor=requester, request_id=uuid.UUID(edited), expected_version=1,
                            reason="more crates", change_reason="scope grew")

    # when the batch host approves both as ID@VERSION
    result = run_cli(daphne, approver, "approve", "--entity", "withdrawal", stdin=f"{kept}@1\n{edited}@1  # as reviewed")

    # then the unchanged one is approved and the edited one is refused as stale, not approved unseen
    assert result.returncode == 2, result.stderr
    assert "succeeded: 1 succeeded, 1 stale_version" in result.stdout
    assert f"  {edited}: stale_version:" in result.stdout
    statuses = dict(WithdrawalRequest.objects.filter(id__in=[kept, edited]).values_list("id", "status"))
    assert statuses == {uuid.UUID(kept): "approved", uuid.UUID(edited): "pending"}


@pytest.mark.parametrize("token", ["@3", "abc@", "abc@x", "abc@0", "abc@-1", "abc@1.5"])
def test_a_malformed_version_sends_nothing(token):
    # (port 9, where nothing listens: the CLI must stop before it connects)
    result = run_cli(9, SimpleNamespace(username="north.approver"), "approve", "--entity", "withdrawal", stdin=token)
    assert result.returncode == 1 and "nothing sent" in result.stderr and "ID@VERSION" in result.stderr


def test_parse_targets_tells_ids_from_numbers_and_reads_versions():
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    assert parse_targets([a, "WR-2026-0042", f"{b}@2", f"{c}@10", "wr-2026-0043@3", "WR-2026-0042@3"]) == Targets(
        ids=[a], numbers=["WR-2026-0042"], items=[{"id": b, "version": 2}, {"id": c, "version": 10}],
        numbered={"wr-2026-0043": 3, "WR-2026-0042": 3},
    )
    with pytest.raises(ValueError, match="'b@two'"):
        parse_targets([a, "b@two"])
    with pytest.raises(ValueError, match="two versions"):
        parse_targets(["WR-2026-0042@1", "WR-2026-0042@2"])


def test_request_numbers_and_number_at_version_are_decided_as_named(daphne, worker):
    # given three pending requests known by their numbers (as a report exports them), one edited
    # since the export
    unit = UnitFactory()
    requester, approver = UserFactory(unit=unit, role=Role.REQUESTER), UserFactory(unit=unit, role=Role.APPROVER)
    plain, kept, edited = pending_requests_fast("withdrawal", requester, 3)
    services.request_update(entity="withdrawal", actor=requester, request_id=edited.id, expected_version=1,
                            reason="more crates", change_reason="scope grew")

    # when the batch host approves them by number, two with the version exported (any case)
    stdin = f"{plain.request_number}\n{kept.request_number.lower()}@1\n{edited.request_number}@1"
    result = run_cli(daphne, approver, "approve", "--entity", "withdrawal", stdin=stdin)

    # then the plain and the unchanged are approved, the edited one is stale, not approved unseen
    assert result.returncode == 2, result.stderr
    assert "succeeded: 2 succeeded, 1 stale_version" in result.stdout
    assert f"  {edited.id}: stale_version:" in result.stdout
    statuses = dict(WithdrawalRequest.objects.filter(unit=unit).values_list("id", "status"))
    assert statuses == {plain.id: "approved", kept.id: "approved", edited.id: "pending"}


@pytest.mark.parametrize("typo", ["WR-2026-9999", "WR-2026-9999@1"])
def test_a_number_that_names_nothing_signs_nothing(daphne, worker, typo):
    # given a pending request and an approver whose input has a typo in one number
    unit = UnitFactory()
    requester, approver = UserFactory(unit=unit, role=Role.REQUESTER), UserFactory(unit=unit, role=Role.APPROVER)
    (request,) = pending_requests_fast("withdrawal", requester, 1)

    # when the batch host runs the approval
    result = run_cli(daphne, approver, "approve", "--entity", "withdrawal", stdin=f"{request.request_number}\n{typo}")

    # then the whole action is refused before a signature: nothing decided, no signature, no failure counted
    assert result.returncode == 1 and "WR-2026-9999" in result.stderr, result.stderr
    request.refresh_from_db()
    assert request.status == "pending"
    assert not Signature.objects.filter(signer_id=approver.id).exists()
    assert not AuditEntry.objects.filter(action="signature_failed", actor_id=approver.id).exists()

"""The tamper campaign on signatures: the owner of the tables rewrites a signature (who signed, when,
meaning what) or moves it to another record, and recomputes its `binding` (an unkeyed SHA-256 anyone
can recompute), so the record still shows it as matching. The chain holds what each signed entry's
signature and binding were when the entry was written; verify compares. PostgreSQL and SQLite."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from backend.audit import db as audit_db
from backend.audit.chain import binding_hash
from backend.audit.checkpoints import checkpoints_write
from backend.audit.models import AuditEntry, SignedRecord
from backend.audit.selectors import audit_verify, binding_matches
from backend.records.models import WithdrawalRequest
from backend.records.services.integrity import audit_chain_watch
from backend.records.services.journal import signed_content
from tests.support.factories import UnitFactory, make_request, unit_staff
from tests.support.signing import sign, transition_now

pytestmark = pytest.mark.django_db


def pk(value) -> object:
    return value.hex if connection.vendor == "sqlite" else value


def rebind(signed: SignedRecord, request: WithdrawalRequest) -> None:
    """As the owner: the binding recomputed for the signature row as it is now, and `request`."""
    signed = SignedRecord.objects.select_related("signature").get(id=signed.id)
    content = signed_content(request, [c.id for c in request.crates.all()])
    binding = binding_hash(signed.signature, entity="withdrawal", record_id=request.id, version=request.version,
                           content=content)
    with transaction.atomic(), audit_db.triggers_disabled(connection), connection.cursor() as cursor:
        cursor.execute("UPDATE audit_signedrecord SET binding = %s, record_id = %s, record_number = %s, version = %s "
                       "WHERE id = %s", [binding, pk(request.id), request.request_number, request.version, pk(signed.id)])


@pytest.fixture
def approved(sink_file):
    """North's withdrawal request approved under Ada's signature, checkpointed and verified."""
    staff = unit_staff(UnitFactory(code="north"))
    approver = staff["approver"]
    approver.first_name, approver.last_name = "Ada", "Approver"
    approver.save()
    request = make_request("withdrawal", staff["requester"])
    other = make_request("withdrawal", staff["requester"])
    transition_now(entity="withdrawal", action="approve", actor=approver, request_id=request.id,
                   signature_id=sign(approver, "withdrawal", "approve"))
    checkpoints_write()
    assert audit_verify().ok and all(u.ok for u in audit_chain_watch(full=True).units)
    signed = SignedRecord.objects.get()
    entry = AuditEntry.objects.get(signature_id=signed.signature_id, record_id=request.id)
    return signed, entry, WithdrawalRequest.objects.get(id=request.id), other


@pytest.mark.parametrize("column,value", [("signer_full_name", "Bob Builder"), ("meaning", "rejected"),
                                          ("signer_username", "bob")])
def test_a_signature_rewritten_and_rebound_is_caught(approved, column, value):
    signed, entry, request, _ = approved
    # when the owner rewrites the signature row and recomputes its binding
    with transaction.atomic(), audit_db.triggers_disabled(connection), connection.cursor() as cursor:
        cursor.execute(f"UPDATE audit_signature SET {column} = %s WHERE id = %s", [value, pk(signed.signature_id)])
    rebind(signed, request)
    # the record shows the rewritten signature as matching it
    signed = SignedRecord.objects.select_related("signature").get(id=signed.id)
    assert getattr(signed.signature, column) == value
    assert binding_matches(signed, version=request.version,
                           content=signed_content(request, [c.id for c in request.crates.all()]))

    # then verify names the signed entry
    bad = audit_verify().first_bad
    assert bad is not None and (bad["rule"], bad["id"], bad["position"]) == (
        "signature_mismatch", str(entry.id), entry.position), bad
    assert audit_chain_watch(full=True).units[0].first_bad["rule"] == "signature_mismatch"


def test_a_signature_moved_to_another_record_is_caught(approved):
    signed, entry, _, other = approved
    # when the owner moves the signed record to another request, binding recomputed
    rebind(signed, other)
    moved = SignedRecord.objects.select_related("signature").get(id=signed.id)
    assert moved.record_id == other.id and binding_matches(
        moved, version=other.version, content=signed_content(other, [c.id for c in other.crates.all()]))

    # then verify names the entry the signature was applied with
    bad = audit_verify().first_bad
    assert bad is not None and (bad["rule"], bad["id"]) == ("signature_mismatch", str(entry.id)), bad


def test_a_signature_excised_from_its_record_is_caught(approved):
    signed, entry, _, _ = approved
    # when the owner deletes the binding: the request no longer shows any signature
    with transaction.atomic(), audit_db.triggers_disabled(connection), connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_signedrecord WHERE id = %s", [pk(signed.id)])
    assert not SignedRecord.objects.exists()

    # then verify names the entry the signature was applied with
    bad = audit_verify().first_bad
    assert bad is not None and (bad["rule"], bad["id"]) == ("signature_mismatch", str(entry.id)), bad

"""Signed checkpoints: what is signed and with which key (its forms, the development key, rotation),
when checkpoints are written (schedule, purge, end of a bulk job, and what a refusing sink leaves),
the sinks (a file, and syslog to real sockets), the API that lists them, the command, and the
scheduled verification's incremental runs and metrics. On PostgreSQL and SQLite."""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import threading
from datetime import timedelta
from io import StringIO
from pathlib import Path
from unittest import mock

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from backend.accounts.models import User
from backend.audit import db as audit_db
from backend.audit import keys
from backend.audit.checkpoints import checkpoints_write, payload
from backend.audit.models import AuditCheckpoint, AuditEntry, AuditVerification
from backend.audit.selectors import audit_verify
from backend.audit.sinks import read_copy, sink_from_url
from backend.audit.watch import verification_compute
from backend.jobs.models import Job
from backend.jobs.services import job_execute
from backend.records import services
from backend.records.models import WithdrawalRequest
from backend.records.services.integrity import audit_chain_watch
from tests.conftest import METRICS_TOKEN
from tests.support.factories import UnitFactory, make_request, unit_staff
from tests.support.signing import sign

pytestmark = pytest.mark.django_db


@pytest.fixture
def unit():
    unit = UnitFactory(code="north")
    unit.staff = unit_staff(unit)
    return unit


def write(unit, n: int = 1) -> None:
    for _ in range(n):
        services.crate_create(actor=unit.staff["store"])


def pem(private: Ed25519PrivateKey) -> str:
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()


# --- what is signed, and when ----------------------------------------------------------------------


def test_a_checkpoint_signs_the_units_head_and_a_second_one_waits_for_the_head_to_move(unit, sink_file):
    write(unit, 3)
    (checkpoint,) = checkpoints_write()
    head = AuditEntry.objects.filter(unit=unit).order_by("-position").first()

    assert (checkpoint.unit_id, checkpoint.unit_code, checkpoint.position, checkpoint.hash) == (unit.id, "north", 3, head.hash)
    public = keys.public_keys()[checkpoint.key_id]
    assert keys.signature_valid(public, payload(checkpoint), checkpoint.signature)
    assert json.loads(payload(checkpoint)) == {
        "id": str(checkpoint.id), "unit": str(unit.id), "position": 3, "hash": head.hash, "purged_through": 0,
        "at": checkpoint.at.isoformat(timespec="microseconds"),
    }
    assert checkpoints_write() == []  # unchanged head: the last checkpoint still vouches for it
    write(unit)
    assert [c.position for c in checkpoints_write()] == [4]
    # the sink has both, as the database does
    assert [doc["position"] for _, doc in read_copy(sink_file)] == [3, 4]


def bulk_approval(unit) -> Job:
    """A signed bulk approval of three withdrawal requests, queued (not yet run)."""
    approver, requester = unit.staff["approver"], unit.staff["requester"]
    requests = [make_request("withdrawal", requester) for _ in range(3)]
    return Job.objects.create(
        kind="bulk.withdrawal.approve", unit=unit, requested_by=approver, targets=[str(r.id) for r in requests],
        params={"reason": "", "signature_id": str(sign(approver, "withdrawal", "approve")),
                "versions": {str(r.id): r.version for r in requests}},  # (the versions the decider saw)
        progress={"total": 3, "done": 0, "failed": 0},
    )


def test_a_bulk_job_ends_with_a_checkpoint(unit, settings):
    job = bulk_approval(unit)
    (before,) = checkpoints_write()

    finished = job_execute(job_id=str(job.id))

    assert (finished.status, finished.progress["failed"]) == ("succeeded", 0), finished.progress
    head = AuditEntry.objects.filter(unit=unit).order_by("-position").first()
    assert head.position >= before.position + 3  # the job's decisions were written ...
    last = AuditCheckpoint.objects.filter(unit_id=unit.id).order_by("-position").first()
    assert (last.position, last.hash) == (head.position, head.hash)  # ... and signed as it ended


def test_a_bulk_job_whose_checkpoint_the_sink_refuses_keeps_its_work_and_logs_the_failure(
        unit, settings, sink_file, caplog):
    job = bulk_approval(unit)
    (before,) = checkpoints_write()
    with socket.create_server(("127.0.0.1", 0)) as closed:  # the collector is down as the job ends
        port = closed.getsockname()[1]
    settings.AUDIT_CHECKPOINT_SINK = f"syslog+tcp://127.0.0.1:{port}"

    with caplog.at_level("ERROR", logger="backend.jobs.services"):
        finished = job_execute(job_id=str(job.id))

    # the job's work stands: it succeeded and its decisions are in the trail ...
    assert (finished.status, finished.progress["done"], finished.progress["failed"]) == ("succeeded", 3, 0)
    assert set(WithdrawalRequest.objects.filter(id__in=job.targets).values_list("status", flat=True)) == {"approved"}
    assert WithdrawalRequest.objects.filter(id__in=job.targets).count() == 3
    head = AuditEntry.objects.filter(unit=unit).order_by("-position").first()
    assert head.position >= before.position + 3
    # ... unsigned (no checkpoint in the database either), and the failure is logged with the job
    assert list(AuditCheckpoint.objects.values_list("id", flat=True)) == [before.id]
    (logged,) = [r for r in caplog.records if r.name == "backend.jobs.services" and r.levelname == "ERROR"]
    assert str(job.id) in logged.getMessage() and "checkpoint" in logged.getMessage()
    assert isinstance(logged.exc_info[1], ConnectionRefusedError)
    # the next scheduled checkpoint, the collector back, signs what the job wrote
    settings.AUDIT_CHECKPOINT_SINK = f"file://{sink_file}"
    (after,) = checkpoints_write()
    assert (after.position, after.hash) == (head.position, head.hash)
    verified = audit_verify()
    assert verified.ok and verified.sink == "compared"


def test_a_purge_is_checkpointed_with_how_far_purges_reached(unit, settings, sink_file):
    write(unit, 3)
    checkpoints_write()
    settings.AUDIT_RETENTION_YEARS = 1
    then = timezone.now() - timedelta(days=800)
    with transaction.atomic(), audit_db.triggers_disabled(connection):  # scene: entries written then
        from backend.audit.chain import GENESIS, entry_hash
        prev = GENESIS
        for entry in AuditEntry.objects.filter(unit=unit).order_by("position"):
            entry.at, entry.prev_hash = then, prev
            entry.hash = prev = entry_hash(entry)
            entry.save(update_fields=["at", "prev_hash", "hash"])
        AuditCheckpoint.objects.all().delete()
    sink_file.unlink()
    checkpoints_write()
    write(unit)

    (purge,) = services_purge(before=timezone.now() - timedelta(days=700))

    last = AuditCheckpoint.objects.filter(unit_id=unit.id).order_by("-at").first()
    assert (last.purged_through, last.position) == (purge.through_position, 4)
    assert audit_verify().ok


def services_purge(**kwargs):
    from backend.audit.services import audit_purge

    return audit_purge(purged_by="qa", reason="retention", **kwargs)


# --- the key -------------------------------------------------------------------------------------------


def test_the_key_comes_as_a_pem_file_pem_text_raw_base64_or_a_long_secret(tmp_path):
    private = Ed25519PrivateKey.generate()
    path = tmp_path / "key.pem"
    path.write_text(pem(private))
    raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    public = keys.raw_public(private.public_key())

    for value in (str(path), pem(private), base64.urlsafe_b64encode(raw).decode().rstrip("="), base64.b64encode(raw).decode()):
        assert keys.raw_public(keys.parse_private(value).public_key()) == public
    derived = keys.parse_private("a secret of at least thirty-two characters, random")
    assert keys.raw_public(derived.public_key()) != public
    with pytest.raises(ImproperlyConfigured, match="too short"):
        keys.parse_private("short")


def test_development_generates_one_key_under_var_readable_by_its_owner_only(tmp_path, settings):
    settings.AUDIT_CHECKPOINT_KEY, settings.AUDIT_CHECKPOINT_KEY_GENERATE = "", True
    settings.AUDIT_CHECKPOINT_KEY_FILE = tmp_path / "var" / "audit-checkpoint-key.pem"

    first, again = keys.signer(), keys._signer.__wrapped__("", "", str(settings.AUDIT_CHECKPOINT_KEY_FILE))

    assert stat.S_IMODE(os.stat(settings.AUDIT_CHECKPOINT_KEY_FILE).st_mode) == 0o600
    assert first.key_id == again.key_id and first.key_id.startswith("ed25519-")
    settings.AUDIT_CHECKPOINT_KEY_GENERATE = False
    with pytest.raises(keys.KeyMissing):
        keys.signer()


def test_after_a_rotation_old_checkpoints_verify_with_the_old_public_key(unit, settings):
    old = Ed25519PrivateKey.generate()
    settings.AUDIT_CHECKPOINT_KEY, settings.AUDIT_CHECKPOINT_KEY_ID = pem(old), "2026-a"
    write(unit)
    (signed_old,) = checkpoints_write()
    # rotated: a new key signs; the old one's public half stays listed
    settings.AUDIT_CHECKPOINT_KEY, settings.AUDIT_CHECKPOINT_KEY_ID = pem(Ed25519PrivateKey.generate()), "2026-b"
    settings.AUDIT_CHECKPOINT_PUBLIC_KEYS = {"2026-a": keys.public_text(old.public_key())}
    write(unit)
    (signed_new,) = checkpoints_write()

    assert (signed_old.key_id, signed_new.key_id) == ("2026-a", "2026-b")
    assert audit_verify().ok
    # forgetting the old key leaves its checkpoints unverifiable, and says why
    settings.AUDIT_CHECKPOINT_PUBLIC_KEYS = {}
    bad = audit_verify().first_bad
    assert bad["rule"] == "checkpoint_signature_invalid" and "2026-a" in bad["reason"]


# --- sinks ----------------------------------------------------------------------------------------------


class SyslogReceiver:
    """A syslog collector's receiving end (UDP, TCP with octet counting, or a unix datagram socket),
    archiving each message as a line, as rsyslog's omfile would."""

    def __init__(self, transport: str, archive: Path) -> None:
        self.transport, self.archive, self.messages = transport, archive, []
        if transport == "tcp":
            self.sock = socket.create_server(("127.0.0.1", 0))
        elif transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
        else:
            self.path = str(archive.parent / "log.sock")
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(self.path)
        self.sock.settimeout(5)

    @property
    def url(self) -> str:
        if self.transport == "unix":
            return f"syslog://{self.path}"
        return f"syslog+{self.transport}://127.0.0.1:{self.sock.getsockname()[1]}"

    def receive(self, count: int) -> list[str]:
        while len(self.messages) < count:
            if self.transport == "tcp":
                conn, _ = self.sock.accept()
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                conn.close()
                while data:  # octet counting: "LEN SP MSG"
                    length, _, rest = data.partition(b" ")
                    self.messages.append(rest[: int(length)].decode())
                    data = rest[int(length):]
            else:
                self.messages.append(self.sock.recv(65536).decode())
        with self.archive.open("a") as out:
            out.writelines(f"Dec  6 04:00:00 collector {m}\n" for m in self.messages[-count:])
        return self.messages


@pytest.mark.parametrize("transport", ["udp", "tcp", "unix"])
def test_the_syslog_sink_sends_each_checkpoint_and_verify_compares_the_collectors_archive(
        transport, unit, tmp_path, settings):
    other = UnitFactory(code="south")
    services.crate_create(actor=unit_staff(other)["store"])
    write(unit, 2)
    receiver = SyslogReceiver(transport, tmp_path / "archive.log")
    settings.AUDIT_CHECKPOINT_SINK, settings.AUDIT_CHECKPOINT_SINK_COPY = receiver.url, str(receiver.archive)
    received = []
    listener = threading.Thread(target=lambda: received.extend(receiver.receive(2)))
    listener.start()

    written = checkpoints_write()
    listener.join(10)

    assert len(received) == 2
    for message, checkpoint in zip(received, written, strict=True):
        assert message.startswith("<133>1 ") and " records " in message and " audit-checkpoint - {" in message
        assert json.loads(message[message.index("{"):])["signature"] == checkpoint.signature
    assert audit_verify().ok and audit_verify().sink == "compared"
    # the archive stripped of a line: verify says so
    lines = receiver.archive.read_text().splitlines()
    receiver.archive.write_text(lines[0] + "\n")
    assert audit_verify().first_bad["rule"] == "sink_mismatch"


def test_a_sink_that_fails_leaves_no_checkpoint_in_the_database_either(unit, settings):
    write(unit)
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    settings.AUDIT_CHECKPOINT_SINK = f"syslog+tcp://127.0.0.1:{port}"

    with pytest.raises(ConnectionRefusedError):
        checkpoints_write()

    assert AuditCheckpoint.objects.count() == 0


def test_the_file_sink_appends(tmp_path):
    path = tmp_path / "sink.jsonl"
    path.write_text('{"kept": 1}\n')
    sink_from_url(f"file://{path}").append([{"a": 1}, {"b": 2}])
    assert [doc for _, doc in read_copy(path)] == [{"kept": 1}, {"a": 1}, {"b": 2}]
    with pytest.raises(ValueError, match="unknown sink"):
        sink_from_url("s3://bucket")


# --- the API and the command ---------------------------------------------------------------------------


def test_checkpoints_over_http_for_unit_admins_qa_and_superusers(unit, api):
    other = UnitFactory(code="south")
    south = unit_staff(other)
    services.crate_create(actor=south["store"])
    write(unit, 2)
    checkpoints_write()

    def listed(user) -> list[tuple[str, int]]:
        return [(c["unit_code"], c["position"]) for c in api(user).get("/api/audit-trail/checkpoints/").json()["results"]]

    assert api(unit.staff["approver"]).get("/api/audit-trail/checkpoints/").status_code == 403
    mine = api(unit.staff["admin"]).get("/api/audit-trail/checkpoints/").json()["results"]
    root = User.objects.create_superuser(username="root", password="x-2026-root-pass")
    everyone = api(root).get("/api/audit-trail/checkpoints/").json()["results"]

    assert [(c["unit_code"], c["position"]) for c in mine] == [("north", 2)]
    assert sorted(c["unit_code"] for c in everyone) == ["north", "south"]
    # QA (REVIEWER_ROLES) reads them too: its own unit's, as the admin does
    assert (listed(unit.staff["qa"]), listed(south["qa"])) == ([("north", 2)], [("south", 1)])
    row = AuditCheckpoint.objects.get(id=mine[0]["id"])
    assert mine[0]["signature"] == row.signature and keys.signature_valid(
        keys.public_keys()[mine[0]["key_id"]], payload(row), mine[0]["signature"])


def test_the_command_names_the_rule_and_compares_a_sink_copy(unit, tmp_path, sink_file):
    write(unit, 2)
    out = StringIO()
    call_command("checkpoint_audit_trail", stdout=out)
    assert "north: #2 " in out.getvalue() and "1 checkpoints written" in out.getvalue()
    out = StringIO()
    call_command("verify_audit_trail", stdout=out)
    assert "intact: 2 entries checked, checkpoints against the sink: compared" in out.getvalue()

    copy = tmp_path / "copy.jsonl"
    copy.write_text("")
    out = StringIO()
    with pytest.raises(SystemExit):
        call_command("verify_audit_trail", "--sink-copy", str(copy), stdout=out)
    assert "[sink_mismatch]" in out.getvalue() and "not in the sink" in out.getvalue()


# --- the scheduled verification --------------------------------------------------------------------------


def test_an_incremental_run_reads_what_was_written_since_the_last_verified_checkpoint(unit, sink_file):
    write(unit, 5)
    checkpoints_write()
    assert [u.entries for u in audit_chain_watch(full=True).units] == [5]
    write(unit, 3)
    checkpoints_write()

    run = audit_chain_watch()

    assert not run.full and [(u.entries, u.ok) for u in run.units] == [(3, True)]  # after the anchor
    state = AuditVerification.objects.get(unit_id=unit.id)
    assert state.through_checkpoint == AuditCheckpoint.objects.get(unit_id=unit.id, position=8).id
    # an entry re-hashed after the last verified checkpoint: caught by the next incremental run
    with transaction.atomic(), audit_db.triggers_disabled(connection), connection.cursor() as cursor:
        cursor.execute(f"UPDATE {AuditEntry._meta.db_table} SET reason = 'x' WHERE unit_id = %s AND position = 8",
                       [unit.id.hex if connection.vendor == "sqlite" else unit.id])
    write(unit)
    run = audit_chain_watch()
    assert not run.full and run.units[0].first_bad["rule"] == "hash_mismatch"


def test_an_edit_behind_the_last_verified_checkpoint_waits_for_the_daily_full_run(unit, settings):
    write(unit, 4)
    checkpoints_write()
    audit_chain_watch(full=True)
    with transaction.atomic(), audit_db.triggers_disabled(connection), connection.cursor() as cursor:
        cursor.execute(f"UPDATE {AuditEntry._meta.db_table} SET reason = 'x' WHERE unit_id = %s AND position = 2",
                       [unit.id.hex if connection.vendor == "sqlite" else unit.id])

    assert verification_compute().units[0].ok  # incremental: starts at position 4, intact
    AuditVerification.objects.update(full_at=timezone.now() - timedelta(hours=settings.AUDIT_VERIFY_FULL_HOURS + 1))
    run = verification_compute()
    assert run.full and run.units[0].first_bad["rule"] == "hash_mismatch"
    # nor can a full run be put off by a date in the future
    AuditVerification.objects.update(full_at=timezone.now() + timedelta(days=365))
    assert verification_compute().full


def test_metrics_show_each_units_verdict_and_the_age_of_the_stalest_verification(unit, client, settings):
    settings.METRICS_TOKEN = METRICS_TOKEN
    write(unit)
    checkpoints_write()
    audit_chain_watch(full=True)
    AuditVerification.objects.update(checked_at=timezone.now() - timedelta(minutes=90))

    text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}").content.decode()

    assert 'records_audit_chain_ok{unit="north"} 1.0' in text
    (age,) = [float(line.split()[-1]) for line in text.splitlines() if line.startswith("records_audit_last_verified_seconds ")]
    assert 5390 < age < 5500


def test_metrics_show_how_long_each_units_unsigned_entries_have_waited_for_a_checkpoint(unit, client, settings):
    settings.METRICS_TOKEN = METRICS_TOKEN
    other = UnitFactory(code="south")  # a unit with no entries waits for nothing

    def lags(minutes_later: float) -> dict[str, float]:
        later = timezone.now() + timedelta(minutes=minutes_later)
        with mock.patch("backend.audit.metrics.timezone.now", return_value=later):
            text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}").content.decode()
        prefix = "records_audit_checkpoint_lag_seconds{unit="
        return {line[len(prefix) + 1:].split('"')[0]: float(line.split()[-1])
                for line in text.splitlines() if line.startswith(prefix)}

    write(unit, 2)
    # no checkpoint yet: north's first entry has waited as long as it exists
    assert 1190 < lags(20)["north"] < 1260 and lags(20)[other.code] == 0
    checkpoints_write()
    assert lags(20)["north"] == 0  # the head is signed
    write(unit)
    # a new entry after the checkpoint waits again (from its own time, not the first entry's)
    assert 590 < lags(10)["north"] < 660

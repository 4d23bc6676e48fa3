"""The audit trail's schedule end to end: a real beat sends `records.audit_checkpoint` and
`records.audit_verify` (every second or two here), a real worker runs them; checkpoints reach the
database and the sink, the verification's state follows, and a tail cut behind the processes' back
turns the unit's verdict to 0 and notifies its admin."""

from __future__ import annotations

import json

import pytest
from django.db import connection, transaction

from backend.audit import db as audit_db
from backend.audit.models import AuditCheckpoint, AuditEntry, AuditVerification
from backend.notifications.models import Notification
from backend.records import services
from bench import processes
from tests.support.factories import UnitFactory, unit_staff
from tests.support.pipeline import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

@pytest.fixture
def own_broker():
    """A redis-server of this test's own as the broker: the session's worker (no sink configured)
    must not take these tasks from the shared `default` queue."""
    server = processes.RedisServer()
    server.start()
    yield server.url(0)
    server.stop()


def test_beat_checkpoints_and_verifies_on_schedule_and_a_cut_tail_alerts(live_env, own_processes, own_broker, tmp_path):
    unit = UnitFactory(code="sched")
    staff = unit_staff(unit)
    for _ in range(3):
        services.crate_create(actor=staff["store"])
    sink = tmp_path / "checkpoints.jsonl"
    env = {
        **live_env, "TEST_CELERY_BROKER_URL": own_broker, "AUDIT_CHECKPOINT_SINK": f"file://{sink}",
        "AUDIT_CHECKPOINT_MINUTES": "0.02", "AUDIT_VERIFY_MINUTES": "0.05",
    }
    own_processes.append(processes.start_worker(env, name="audit-schedule"))
    own_processes.append(processes.start_beat(env))

    wait_until(lambda: AuditCheckpoint.objects.filter(unit_id=unit.id, position=3).exists(), 60, "a checkpoint")
    wait_until(lambda: AuditVerification.objects.filter(unit_id=unit.id, ok=True).exists(), 60, "a verification")
    assert [json.loads(line)["position"] for line in sink.read_text().splitlines()] == [3]

    with transaction.atomic(), audit_db.triggers_disabled(connection), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {AuditEntry._meta.db_table} WHERE unit_id = %s AND position = 3",
                       [unit.id.hex if connection.vendor == "sqlite" else unit.id])

    state = wait_until(lambda: AuditVerification.objects.filter(unit_id=unit.id, ok=False).first(), 60, "the failure")
    assert state.first_bad["rule"] == "tail_truncated" and state.first_bad["position"] == 3
    wait_until(lambda: Notification.objects.filter(user=staff["admin"], kind="audit_chain_broken").exists(), 10)

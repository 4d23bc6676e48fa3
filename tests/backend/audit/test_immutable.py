"""The audit trail cannot be rewritten: the database refuses UPDATE, DELETE and TRUNCATE (raw SQL,
the ORM, the admin site), an edit made behind the triggers' back shows in `verify` (the API and the
command), and retention purges refuse anything inside AUDIT_RETENTION_YEARS. On PostgreSQL and
SQLite (make test runs this file on both)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.db.models import CharField, TextField, UniqueConstraint
from django.utils import timezone

from backend.audit import db as audit_db
from backend.audit.checkpoints import checkpoints_write
from backend.audit.models import AuditEntry, AuditPurge, AuditReview, Signature, SignedRecord
from backend.audit.selectors import audit_verify
from backend.audit.services import audit_purge
from backend.events.models import OutboxEvent
from backend.events.outbox import outbox_prune
from backend.records import services
from tests.support.factories import CrateFactory, UnitFactory, unit_staff

pytestmark = pytest.mark.django_db


@pytest.fixture
def trail():
    """A unit with a few audited changes: (unit, staff, entries in chain order)."""
    unit = UnitFactory(code="chain")
    staff = unit_staff(unit)
    crate = services.crate_create(actor=staff["store"], location="Aisle 1")
    services.crate_update(actor=staff["store"], crate_id=crate.id, expected_version=1, location="Aisle 2")
    services.crate_relocate(actor=staff["store"], crate_id=crate.id, location="Vault 1")
    services.crate_delete(actor=staff["store"], crate_id=services.crate_create(actor=staff["store"]).id,
                          expected_version=1, reason="empty")
    return unit, staff, list(AuditEntry.objects.filter(unit=unit).order_by("position"))


def refused(sql: str, *params) -> str:
    """Run raw SQL expecting the database to refuse it; returns its message."""
    with pytest.raises(IntegrityError) as error, transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # (TRUNCATE waits for no deferred check of the test's transaction)
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(sql, params)
    return str(error.value)


# --- the database refuses ------------------------------------------------------------------------


def test_the_database_refuses_update_delete_and_truncate_of_entries(trail):
    _, _, entries = trail
    target = entries[1]
    table = AuditEntry._meta.db_table

    messages = [
        refused(f"UPDATE {table} SET reason = 'nothing happened' WHERE id = %s", pk(target)),
        refused(f"UPDATE {table} SET actor_username = 'someone else'"),
        refused(f"DELETE FROM {table} WHERE id = %s", pk(target)),
        refused(f"DELETE FROM {table}"),
        refused(f"TRUNCATE {table}") if connection.vendor == "postgresql" else refused(f"DELETE FROM {table} WHERE 1"),
    ]

    assert all("audit trail is append-only" in message for message in messages), messages
    assert list(AuditEntry.objects.filter(unit=target.unit_id).order_by("position")) == entries
    assert AuditEntry.objects.get(id=target.id).reason == target.reason


def test_the_orm_is_refused_too(trail):
    _, _, entries = trail
    with pytest.raises(IntegrityError), transaction.atomic():
        AuditEntry.objects.filter(id=entries[0].id).update(reason="rewritten")
    with pytest.raises(IntegrityError), transaction.atomic():
        entries[0].delete()
    assert AuditEntry.objects.count() == len(entries)


def test_purge_records_are_as_immutable(trail):
    unit, _, _ = trail
    purge = AuditPurge.objects.create(
        unit=unit, through_position=0, through_hash="0" * 64, entries=0, before=timezone.now() - timedelta(days=9000),
        purged_by="test", reason="scene", at=timezone.now(),
    )
    table = AuditPurge._meta.db_table
    assert "append-only" in refused(f"UPDATE {table} SET through_position = 99 WHERE id = %s", pk(purge))
    assert "append-only" in refused(f"DELETE FROM {table} WHERE id = %s", pk(purge))


def a_row_in_every_audit_table(unit, staff, entries) -> None:
    """Scene-setting (an insert is what the triggers allow): a purge record, a signature, a record
    it signs, a checkpoint and a review, beside the trail's entries."""
    now = timezone.now()
    AuditPurge.objects.create(unit=unit, through_position=0, through_hash="0" * 64, entries=0,
                              before=now - timedelta(days=9000), purged_by="test", reason="scene", at=now)
    qa = staff["qa"]
    signature = Signature.objects.create(unit=unit, signer_id=qa.id, signer_username=qa.username, meaning="reviewed",
                                         action="review", entity="audit_review", signed_at=now)
    SignedRecord.objects.create(signature=signature, entity="withdrawal", record_id=entries[-1].record_id, version=1,
                                binding="0" * 64)
    checkpoints_write()
    AuditReview.objects.create(unit=unit, from_position=1, through_position=1, through_at=entries[0].at,
                               through_hash=entries[0].hash, next_unreviewed=2, entries=1, reviewer_id=qa.id,
                               reviewer_username=qa.username, reviewer_full_name="Q A", signature=signature,
                               signed_at=now, comment="")


@pytest.mark.parametrize("table", audit_db.ALL_TABLES)
def test_an_upsert_is_refused_on_every_audit_table(trail, table):
    # an upsert rewrites the row it conflicts with: SQLite's INSERT OR REPLACE deletes it without
    # running its DELETE trigger, PostgreSQL's INSERT ... ON CONFLICT DO UPDATE updates it in place.
    # Both are refused, on the primary key and on every other unique key (a new id in the same
    # place: an entry's unit and position, a signature's record)
    unit, staff, entries = trail
    a_row_in_every_audit_table(unit, staff, entries)
    (model,) = [m for m in apps.get_app_config("audit").get_models() if m._meta.db_table == table]
    row = model.objects.order_by("pk").first()
    fields = model._meta.local_concrete_fields
    columns = [f.column for f in fields]
    keys = [("id",)] + [tuple(model._meta.get_field(name).column for name in constraint.fields)
                        for constraint in model._meta.constraints if isinstance(constraint, UniqueConstraint)]
    before = list(model.objects.order_by("pk").values())

    for key in keys:
        # the row again (its key kept, a new id unless the key is the id), a text column overwritten
        changed = next(f.column for f in fields if isinstance(f, CharField | TextField) and f.column not in key)
        select = ", ".join("%s" if c == "id" and key != ("id",) else "'overwritten'" if c == changed else c
                           for c in columns)
        params = [] if key == ("id",) else [uuid.uuid4().hex if connection.vendor == "sqlite" else uuid.uuid4()]
        if connection.vendor == "sqlite":
            sql = f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) SELECT {select} FROM {table} WHERE id = %s"
        else:
            sql = (f"INSERT INTO {table} ({', '.join(columns)}) SELECT {select} FROM {table} WHERE id = %s "
                   f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {changed} = EXCLUDED.{changed}")
        message = refused(sql, *params, pk(row))
        assert "append-only" in message and table in message, (key, message)

    assert list(model.objects.order_by("pk").values()) == before

# --- tamper evidence ---------------------------------------------------------------------------


def tamper(sql: str, *params) -> None:
    """What someone who owns the tables can do: set the triggers aside and edit."""
    with transaction.atomic(), audit_db.triggers_disabled(connection), connection.cursor() as cursor:
        cursor.execute(sql, params)


def pk(entry) -> object:
    return entry.id.hex if connection.vendor == "sqlite" else entry.id


def test_an_intact_trail_verifies(trail):
    _, _, entries = trail
    assert audit_verify().as_dict() == {"ok": True, "entries": len(entries), "first_bad": None, "sink": "not configured"}


def test_an_edited_entry_is_found(trail):
    _, _, entries = trail
    tamper(f"UPDATE {AuditEntry._meta.db_table} SET reason = 'nothing to see' WHERE id = %s", pk(entries[2]))

    result = audit_verify()

    assert not result.ok
    assert result.first_bad["id"] == str(entries[2].id)
    assert "does not match its hash" in result.first_bad["reason"]


def test_an_edit_that_recomputes_the_hash_breaks_the_next_link(trail):
    # an editor who knows the algorithm re-hashes the entry: the next entry's prev_hash gives it away
    from backend.audit.chain import entry_hash

    _, _, entries = trail
    forged = AuditEntry.objects.get(id=entries[1].id)
    forged.actor_username = "nobody"
    forged_hash = entry_hash(forged)
    tamper(f"UPDATE {AuditEntry._meta.db_table} SET actor_username = 'nobody', hash = %s WHERE id = %s",
           forged_hash, pk(entries[1]))

    result = audit_verify()

    assert result.first_bad["id"] == str(entries[2].id)
    assert "prev_hash" in result.first_bad["reason"]


def test_a_deleted_entry_is_found(trail):
    _, _, entries = trail
    tamper(f"DELETE FROM {AuditEntry._meta.db_table} WHERE id = %s", pk(entries[1]))

    result = audit_verify()

    assert result.first_bad["position"] == entries[2].position
    assert "missing" in result.first_bad["reason"]


def test_verify_over_http_is_for_unit_admins(trail, api):
    unit, staff, entries = trail
    tamper(f"UPDATE {AuditEntry._meta.db_table} SET changes = %s WHERE id = %s", json.dumps({}), pk(entries[0]))

    assert api(staff["approver"]).get("/api/audit-trail/verify/").status_code == 403
    answer = api(staff["admin"]).get("/api/audit-trail/verify/")

    assert answer.status_code == 200
    assert answer.json()["ok"] is False and answer.json()["first_bad"]["id"] == str(entries[0].id)
    # and another unit's admin checks their own chain, which is intact
    other = unit_staff(UnitFactory(code="other"))
    services.crate_create(actor=other["store"])
    assert api(other["admin"]).get("/api/audit-trail/verify/").json() == {
        "ok": True, "entries": 1, "first_bad": None, "sink": "not configured"}


def test_verify_says_whether_the_sink_was_compared(api, settings, sink_file, tmp_path):
    # given a unit whose checkpoint went to a file sink (verify compares the file)
    staff = unit_staff(UnitFactory())
    services.crate_create(actor=staff["store"])
    checkpoints_write()
    assert api(staff["admin"]).get("/api/audit-trail/verify/").json()["sink"] == "compared"
    # when the sink is syslog with no copy of its archive to read: verify cannot compare, and says so
    settings.AUDIT_CHECKPOINT_SINK = "syslog+udp://127.0.0.1:9"
    settings.AUDIT_CHECKPOINT_SINK_COPY = ""
    answer = api(staff["admin"]).get("/api/audit-trail/verify/").json()
    assert (answer["ok"], answer["sink"]) == (True, "not configured")
    # and with the collector's archive named, it compares it (here: the archive lacks the checkpoint)
    settings.AUDIT_CHECKPOINT_SINK_COPY = str(tmp_path / "empty-archive.log")
    (tmp_path / "empty-archive.log").write_text("")
    answer = api(staff["admin"]).get("/api/audit-trail/verify/").json()
    assert (answer["ok"], answer["sink"], answer["first_bad"]["rule"]) == (False, "compared", "sink_mismatch")


def test_verify_command_exits_1_naming_the_broken_entry(trail):
    _, _, entries = trail
    out = StringIO()
    call_command("verify_audit_trail", stdout=out)
    assert "intact" in out.getvalue()

    tamper(f"UPDATE {AuditEntry._meta.db_table} SET record_number = 'CR-0000' WHERE id = %s", pk(entries[3]))
    out = StringIO()
    with pytest.raises(SystemExit) as exit_status:
        call_command("verify_audit_trail", "--unit", "chain", stdout=out)

    assert exit_status.value.code == 1
    assert f"BROKEN at entry {entries[3].id}" in out.getvalue()


# --- retention ---------------------------------------------------------------------------------


def age(entries, days: int) -> None:
    """Scene-setting: make entries look `days` old (re-hashed, as if written then)."""
    from backend.audit.chain import GENESIS, entry_hash

    then = timezone.now() - timedelta(days=days)
    with transaction.atomic(), audit_db.triggers_disabled(connection):
        prev = GENESIS
        for entry in AuditEntry.objects.filter(unit_id=entries[0].unit_id).order_by("position"):
            if entry.id in {e.id for e in entries}:
                entry.at = then
            entry.prev_hash = prev
            entry.hash = prev = entry_hash(entry)
            entry.save(update_fields=["at", "prev_hash", "hash"])


def test_a_purge_inside_retention_is_refused_and_deletes_nothing(trail, settings):
    _, _, entries = trail
    settings.AUDIT_RETENTION_YEARS = 10
    with pytest.raises(CommandError, match="inside the audit retention of 10 years"):
        call_command("purge_audit_trail", "--before", (timezone.now() - timedelta(days=365 * 9)).strftime("%Y-%m-%d"),
                     "--reason", "tidy up")
    assert AuditEntry.objects.count() == len(entries)


def test_a_purge_beyond_retention_keeps_the_chain_verifiable(trail, settings):
    unit, staff, entries = trail
    settings.AUDIT_RETENTION_YEARS = 10
    age(entries[:2], days=365 * 12)

    purges = audit_purge(before=timezone.now() - timedelta(days=365 * 11), purged_by="qa.manager", reason="retention")

    assert [(p.through_position, p.entries) for p in purges] == [(entries[1].position, 2)]
    assert list(AuditEntry.objects.filter(unit=unit).order_by("position").values_list("id", flat=True)) == [
        e.id for e in entries[2:]
    ]
    assert audit_verify().ok
    # and the chain goes on from the purge record
    services.crate_create(actor=staff["store"])
    assert audit_verify().ok and AuditEntry.objects.filter(unit=unit).count() == len(entries) - 2 + 1
    # the purge did not open a door: a kept entry still cannot be deleted
    assert "append-only" in refused(f"DELETE FROM {AuditEntry._meta.db_table} WHERE id = %s", pk(entries[2]))


def test_pruning_the_outbox_never_touches_the_audit_trail(trail, settings):
    _, _, entries = trail
    settings.OUTBOX_RETENTION_DAYS = 0
    OutboxEvent.objects.update(published_at=timezone.now() - timedelta(days=1), created_at=timezone.now() - timedelta(days=1))

    assert outbox_prune() > 0

    assert OutboxEvent.objects.count() == 0
    assert AuditEntry.objects.count() == len(entries)


def test_the_admin_site_cannot_add_change_or_delete_domain_records(admin_client, trail):
    unit, _, entries = trail
    crate = CrateFactory(unit=unit)
    for url in (
        "/admin/audit/auditentry/add/", "/admin/records/crate/add/", "/admin/events/outboxevent/add/",
        "/admin/jobs/job/add/", "/admin/events/unitsequence/add/", "/admin/records/numbercounter/add/",
        f"/admin/audit/auditentry/{entries[0].id}/delete/", f"/admin/records/crate/{crate.id}/delete/",
        f"/admin/events/unitsequence/{unit.id}/delete/",
    ):
        assert admin_client.get(url).status_code == 403, url
    # the lists are there to look at, without the bulk delete action
    listing = admin_client.get("/admin/records/crate/")
    assert listing.status_code == 200 and b"delete_selected" not in listing.content
    # and a change page shows, read-only
    page = admin_client.get(f"/admin/audit/auditentry/{entries[0].id}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content

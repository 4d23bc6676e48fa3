"""The tamper campaign, continued: entries put in by hand where the chain's walk never looks (before
its first position, or at positions a purge removed). A plain INSERT is not refused by the
append-only triggers (only UPDATE, DELETE, TRUNCATE and upserts are), so the application's own
database user can do it; the forged entry then shows in the record's history and the unit's trail
as if it belonged there. On PostgreSQL and SQLite, through a full and an incremental run."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from backend.audit.chain import GENESIS, entry_hash
from backend.audit.checkpoints import checkpoints_write
from backend.audit.models import AuditEntry
from backend.audit.selectors import audit_verify, record_history
from backend.audit.services import audit_purge
from backend.records.services.integrity import audit_chain_watch
from tests.backend.audit.test_tamper import (
    ENTRIES,
    MODES,
    Scene,
    caught,
    chain_ok,
    east_with_two_old_entries,
    pk,
    tamper,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def scene(request, sink_file):
    return Scene(sink_file, getattr(request, "param", "full"))


def forge(model: AuditEntry, position: int, prev_hash: str = GENESIS, **changes) -> AuditEntry:
    """An entry like `model` at `position`, its hash consistent with itself, INSERTed with plain SQL
    (no trigger set aside: none refuses an insert)."""
    entry = AuditEntry(**{f.attname: getattr(model, f.attname) for f in AuditEntry._meta.concrete_fields})
    entry.id, entry.position, entry.prev_hash = uuid.uuid4(), position, prev_hash
    for name, value in changes.items():
        setattr(entry, name, value)
    entry.hash = entry_hash(entry)
    fields = AuditEntry._meta.concrete_fields
    values = [f.get_db_prep_save(getattr(entry, f.attname), connection) for f in fields]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {ENTRIES} ({', '.join(f.column for f in fields)}) "
                       f"VALUES ({', '.join(['%s'] * len(fields))})", values)
    return entry


@pytest.mark.parametrize("scene", MODES, indirect=True)
def test_an_entry_put_in_before_the_chains_first_position(scene):
    # given east's chain 1..12, checkpointed and verified; the owner INSERTs an entry at position 0
    # saying the crate of entry 3 was approved for destruction by QA, self-consistent
    model = scene.entries[2]
    forged = forge(model, 0, action="deleted", reason="destroyed as agreed", actor_username="qa-ghost")
    # it shows in the crate's history, like any entry
    assert forged.id in [e.id for e in record_history(model.record_id)]

    # when verified, then the entry outside the chain is named
    bad = caught(scene, "entry_outside_chain", position=0)
    assert bad["id"] == str(forged.id)


def test_entries_put_in_at_positions_a_purge_removed(sink_file, settings):
    # given east's entries 1 and 2 two years old, lawfully purged (AUDIT_RETENTION_YEARS 1), and
    # entries 3 and 4 kept; verify holds
    settings.AUDIT_RETENTION_YEARS = 1
    unit, _ = east_with_two_old_entries(4)
    checkpoints_write()
    (purge,) = audit_purge(before=timezone.now() - timedelta(days=700), purged_by="qa", reason="retention")
    assert purge.through_position == 2 and audit_verify().ok
    kept = AuditEntry.objects.get(unit=unit, position=3)

    # when the owner puts a different history back at positions 1 and 2 (a chain that even ends in
    # the purge record's hash would need a SHA-256 preimage; this one is merely self-consistent)
    first = forge(kept, 1, at=timezone.now() - timedelta(days=800), reason="re-inserted")
    forge(kept, 2, prev_hash=first.hash, at=timezone.now() - timedelta(days=800), reason="re-inserted")

    # then verify names the first of them
    bad = audit_verify().first_bad
    assert (bad["rule"], bad["position"], bad["id"]) == ("entry_outside_chain", 1, str(first.id))
    audit_chain_watch(full=False)
    assert chain_ok() == {"east": 0}


@pytest.mark.parametrize("mode", MODES)
def test_entries_of_a_unit_nobody_knows(sink_file, mode):
    # given east's chain, checkpointed and verified by the schedule
    scene = Scene(sink_file, mode)
    crate = scene.entries[0]
    # when the owner drops the entries' foreign key to the Unit table (SQLite's cannot be dropped:
    # there it is deferred, and the row is taken out again before the test's transaction ends) and
    # writes a self-consistent chain of one entry about east's crate under a unit id no Unit row
    # and no checkpoint knows
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            (fk,) = [name for name, c in connection.introspection.get_constraints(cursor, ENTRIES).items()
                     if c["foreign_key"] and c["columns"] == ["unit_id"]]
            cursor.execute(f"ALTER TABLE {ENTRIES} DROP CONSTRAINT {fk}")
    stranger = uuid.uuid4()
    forged = forge(crate, 1, unit_id=stranger, action="deleted", reason="destroyed as agreed")
    # it shows in the crate's history, like any entry
    assert forged.id in [e.id for e in record_history(crate.record_id)]

    # then verify (full and as scheduled) names the unit and its first entry
    try:
        bad = audit_verify().first_bad
        assert bad is not None and (bad["rule"], bad["unit"], bad["position"], bad["id"]) == (
            "unit_unknown", str(stranger), 1, str(forged.id)), bad
        run = audit_chain_watch(full=mode == "full")
        assert run.full == (mode == "full")
        assert {u.unit_id: u.first_bad and u.first_bad["rule"] for u in run.units}[stranger] == "unit_unknown"
        assert chain_ok()[stranger.hex] == 0
    finally:
        tamper(f"DELETE FROM {ENTRIES} WHERE id = %s", pk(forged.id))

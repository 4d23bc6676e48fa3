"""The tamper campaign: what the owner of the database can do to the audit trail, with raw SQL and
the triggers set aside where they are in the way, and how each is caught. For each: verify fails
naming the rule and where, the scheduled verification's metric reads 0 and the unit's admins and QA
are notified. Each case passed verify before signed checkpoints existed. On PostgreSQL and SQLite
(make test runs this folder on both); the scheduled verification is run in both its modes, full and
incremental (`MODES`)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from backend.audit import checkpoints as checkpoints_module
from backend.audit import db as audit_db
from backend.audit.chain import GENESIS, entry_hash
from backend.audit.checkpoints import checkpoints_write
from backend.audit.metrics import AuditCollector
from backend.audit.models import AuditCheckpoint, AuditEntry, AuditPurge
from backend.audit.selectors import audit_verify
from backend.audit.services import audit_purge
from backend.notifications.models import Notification
from backend.records import services
from backend.records.services.integrity import audit_chain_watch
from tests.support.factories import UnitFactory, unit_staff

pytestmark = pytest.mark.django_db

ENTRIES = AuditEntry._meta.db_table
PURGES = AuditPurge._meta.db_table
CHECKPOINTS = AuditCheckpoint._meta.db_table
PURGE_INSERT = (f"INSERT INTO {PURGES} (id, unit_id, through_position, through_hash, entries, before, purged_by, reason, at) "
                "VALUES (%s, %s, %s, %s, %s, %s, 'dba', 'space', %s)")
# The scheduled verification's two runs (backend/audit/watch.py): `full`, or `incremental` from the
# checkpoint the scene's own run verified (a full run is not due then). Campaign cases take the
# scene in both (`@pytest.mark.parametrize("scene", MODES, indirect=True)`).
MODES = ["full", "incremental"]


class Scene:
    """Unit `east` with 12 entries, checkpointed at 6 and at 12 (both in the sink), verified once
    by the schedule (ok); unit `west` beside it, intact."""

    def __init__(self, sink_file, mode: str = "full"):
        self.sink, self.mode = sink_file, mode
        self.unit, self.other = UnitFactory(code="east"), UnitFactory(code="west")
        self.staff = unit_staff(self.unit)
        services.crate_create(actor=unit_staff(self.other)["store"])
        self.write(6)
        self.first = checkpoints_write()
        self.write(6)
        self.second = checkpoints_write()
        self.entries = list(AuditEntry.objects.filter(unit=self.unit).order_by("position"))
        run = audit_chain_watch(full=True)
        assert all(unit.ok for unit in run.units), [unit.first_bad for unit in run.units]
        assert chain_ok() == {"east": 1, "west": 1}

    def write(self, n: int) -> None:
        for i in range(n):
            services.crate_create(actor=self.staff["store"], location=f"Aisle {i}")

    def checkpoint(self, position: int) -> AuditCheckpoint:
        return AuditCheckpoint.objects.get(unit_id=self.unit.id, position=position)


@pytest.fixture
def scene(request, sink_file):
    return Scene(sink_file, getattr(request, "param", "full"))


def pk(value) -> object:
    return value.hex if connection.vendor == "sqlite" else value


def tamper(sql: str, *params) -> None:
    """As the tables' owner: the triggers set aside, raw SQL."""
    with transaction.atomic(), audit_db.triggers_disabled(connection), connection.cursor() as cursor:
        cursor.execute(sql, params)


def refused(sql: str, *params) -> str:
    with pytest.raises(IntegrityError) as error, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
    return str(error.value)


def chain_ok() -> dict[str, float]:
    (family, *_) = [f for f in AuditCollector().collect() if f.name == "records_audit_chain_ok"]
    return {sample.labels["unit"]: sample.value for sample in family.samples}


def caught(scene: Scene, rule: str, position: int | None = None, *, incremental: bool = True) -> dict:
    """verify (API's and command's check) fails with `rule` at `position` in east; so does the
    scheduled verification in the scene's mode, its metric reads 0 for east only and east's admin
    and QA are notified. Returns verify's first_bad.

    `incremental=False`: the documented exception (docs/audit.md, "Continuous verification"), an
    entry older than the last verified checkpoint edited without re-hashing the rest. An incremental
    run passes it (and tells nobody); the next full run (daily) catches it."""
    result = audit_verify()
    assert not result.ok
    bad = result.first_bad
    assert (bad["rule"], bad["unit_code"]) == (rule, "east"), bad
    if position is not None:
        assert bad["position"] == position, bad
    full = scene.mode == "full"
    if not full and not incremental:
        missed = audit_chain_watch()
        assert not missed.full and all(unit.ok for unit in missed.units), [unit.first_bad for unit in missed.units]
        assert chain_ok() == {"east": 1, "west": 1} and not Notification.objects.filter(kind="audit_chain_broken").exists()
        full = True  # the daily full run
    run = audit_chain_watch(full=True if full else None)  # (None: as scheduled, and no full run is due)
    assert run.full == full
    assert {u.unit_code: u.first_bad["rule"] if u.first_bad else None for u in run.units} == {"east": rule, "west": None}
    assert chain_ok() == {"east": 0, "west": 1}
    (note,) = Notification.objects.filter(user=scene.staff["admin"], kind="audit_chain_broken")
    assert note.link_id == scene.unit.id and rule in note.body
    told = Notification.objects.filter(kind="audit_chain_broken").values_list("user_id", flat=True)
    assert sorted(told) == sorted([scene.staff["admin"].id, scene.staff["qa"].id])  # (REVIEWER_ROLES)
    return bad


def rehash_from(unit_id, position: int, **changes) -> None:
    """Edit the entry at `position` and re-hash the chain from there on, as someone who knows the
    algorithm would: every link holds again."""
    rows = list(AuditEntry.objects.filter(unit_id=unit_id).order_by("position"))
    prev = GENESIS
    with transaction.atomic(), audit_db.triggers_disabled(connection), connection.cursor() as cursor:
        for entry in rows:
            if entry.position == position:
                for name, value in changes.items():
                    setattr(entry, name, value)
            if entry.position >= position:
                entry.prev_hash = prev
                entry.hash = entry_hash(entry)
                sets = ", ".join(f"{name} = %s" for name in changes) if entry.position == position else ""
                values = list(changes.values()) if entry.position == position else []
                cursor.execute(
                    f"UPDATE {ENTRIES} SET {sets + ', ' if sets else ''}prev_hash = %s, hash = %s WHERE id = %s",
                    [*values, entry.prev_hash, entry.hash, pk(entry.id)],
                )
            prev = entry.hash


# --- the campaign ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scene", MODES, indirect=True)
def test_a_forged_purge_and_delete_of_the_whole_unit(scene):
    head = scene.entries[-1]
    # the database refuses the forged purge record (its entries are young) ...
    old = timezone.now() - timedelta(days=365 * 20)
    params = [pk(head.id), pk(scene.unit.id), head.position, head.hash, 12, old, timezone.now()]
    assert "retention" in refused(PURGE_INSERT, *params)
    # ... so the owner sets the triggers aside: the record, then every entry of the unit
    tamper(PURGE_INSERT, *params)
    tamper(f"DELETE FROM {ENTRIES} WHERE unit_id = %s", pk(scene.unit.id))
    # the next scheduled checkpoint does not vouch for a purge record it finds in the table
    checkpoints_write()

    caught(scene, "purge_not_checkpointed", position=head.position)


@pytest.mark.parametrize("scene", MODES, indirect=True)
def test_a_forged_purge_of_a_prefix_is_not_laundered_by_later_checkpoints(scene):
    through = scene.entries[5]
    tamper(PURGE_INSERT, pk(through.id), pk(scene.unit.id), through.position, through.hash, 6,
           timezone.now() - timedelta(days=365 * 20), timezone.now())
    tamper(f"DELETE FROM {ENTRIES} WHERE unit_id = %s AND position <= 6", pk(scene.unit.id))
    scene.write(2)  # the unit goes on; its head moves and is signed again
    assert [c.purged_through for c in checkpoints_write() if c.unit_code == "east"] == [0]

    caught(scene, "purge_not_checkpointed", position=6)


@pytest.mark.parametrize("scene", MODES, indirect=True)
def test_a_cut_tail(scene):
    tamper(f"DELETE FROM {ENTRIES} WHERE unit_id = %s AND position > %s", pk(scene.unit.id), 9)

    bad = caught(scene, "tail_truncated", position=10)
    assert bad["checkpoint_position"] == 12 and bad["checkpoint"] == str(scene.checkpoint(12).id)


@pytest.mark.parametrize("scene", MODES, indirect=True)
def test_a_middle_entry_edited_and_the_chain_rehashed(scene):
    rehash_from(scene.unit.id, 8, reason="nothing happened here")
    # every link holds: only the signed checkpoint knows better
    assert all(e.hash == entry_hash(e) for e in AuditEntry.objects.filter(unit=scene.unit))

    bad = caught(scene, "checkpoint_missing_from_chain", position=12)
    assert bad["after_position"] == 6 and bad["checkpoint"] == str(scene.checkpoint(12).id)


@pytest.mark.parametrize("scene", MODES, indirect=True)
def test_a_wiped_unit(scene):
    tamper(f"DELETE FROM {ENTRIES} WHERE unit_id = %s", pk(scene.unit.id))

    bad = caught(scene, "unit_wiped", position=1)
    assert bad["checkpoint_position"] == 12


@pytest.mark.parametrize("scene", MODES, indirect=True)
def test_insert_or_replace_over_an_entry(scene):
    target = scene.entries[4]
    columns = [f.column for f in AuditEntry._meta.local_concrete_fields]
    select = ", ".join("'overwritten'" if c == "reason" else c for c in columns)
    if connection.vendor == "sqlite":
        replace = f"INSERT OR REPLACE INTO {ENTRIES} ({', '.join(columns)}) SELECT {select} FROM {ENTRIES} WHERE id = %s"
    else:  # PostgreSQL's way to overwrite on insert: an upsert, which is an UPDATE
        replace = (f"INSERT INTO {ENTRIES} ({', '.join(columns)}) SELECT {select} FROM {ENTRIES} WHERE id = %s "
                   "ON CONFLICT (id) DO UPDATE SET reason = EXCLUDED.reason")
    assert "append-only" in refused(replace, pk(target.id))
    assert AuditEntry.objects.get(id=target.id).reason == target.reason

    tamper(replace, pk(target.id))  # the owner, triggers aside

    assert AuditEntry.objects.get(id=target.id).reason == "overwritten"
    # (behind the last verified checkpoint, and not re-hashed: only a full run reads that far back)
    caught(scene, "hash_mismatch", position=target.position, incremental=False)


def test_a_purge_record_inside_retention_is_refused_by_the_database(scene, settings):
    entries = scene.entries
    now = timezone.now()
    # `before` inside retention; `before` beyond it but covering young entries: both refused
    assert "retention" in refused(PURGE_INSERT, pk(entries[0].id), pk(scene.unit.id), 3, entries[2].hash, 3, now, now)
    assert "retention" in refused(PURGE_INSERT, pk(entries[0].id), pk(scene.unit.id), 3, entries[2].hash, 3,
                                  now - timedelta(days=365 * 16), now)
    # and with no purge record, no entry can be deleted
    assert "append-only" in refused(f"DELETE FROM {ENTRIES} WHERE id = %s", pk(entries[0].id))
    assert AuditPurge.objects.count() == 0 and AuditEntry.objects.filter(unit=scene.unit).count() == 12
    assert audit_verify().ok

    # a recent `before`, though every entry it covers is beyond retention: refused for the `before` alone
    rehash_from(scene.unit.id, 1, at=now - timedelta(days=365 * 16))
    first = AuditEntry.objects.get(id=entries[0].id)
    assert "retention" in refused(PURGE_INSERT, pk(first.id), pk(scene.unit.id), 1, first.hash, 1,
                                  now - timedelta(days=1), now)
    assert AuditPurge.objects.count() == 0
    # (the same record with a `before` beyond retention, after the entry, is accepted)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(PURGE_INSERT, [pk(first.id), pk(scene.unit.id), 1, first.hash, 1,
                                      now - timedelta(days=365 * 15 + 30), now])
    assert AuditPurge.objects.count() == 1


@pytest.mark.parametrize("scene", MODES, indirect=True)
def test_a_purge_record_put_in_by_hand_does_not_let_young_entries_be_deleted(scene):
    # the owner puts in, with the guard set aside, a purge record for east's first 6 entries (all
    # young) whose `before` lies ahead of them: once the triggers are back on, only the entries'
    # age (the delete trigger's retention check) stands between the record and their deletion
    through = scene.entries[5]
    tamper(PURGE_INSERT, pk(through.id), pk(scene.unit.id), through.position, through.hash, 6,
           timezone.now() + timedelta(days=1), timezone.now())
    assert AuditPurge.objects.filter(unit=scene.unit).count() == 1

    assert "append-only" in refused(f"DELETE FROM {ENTRIES} WHERE id = %s", pk(scene.entries[0].id))
    assert "append-only" in refused(f"DELETE FROM {ENTRIES} WHERE unit_id = %s AND position <= 6", pk(scene.unit.id))

    assert AuditEntry.objects.filter(unit=scene.unit).count() == 12
    # and the record itself is the purge nobody signed for
    caught(scene, "purge_not_checkpointed", position=6)

    # nor does such a record let go of an entry beyond retention that its own `before` does not
    # reach: west's one entry, back-dated 16 years, under a record whose `before` is 17 years back
    then = timezone.now() - timedelta(days=365 * 16)
    rehash_from(scene.other.id, 1, at=then)
    entry = AuditEntry.objects.get(unit=scene.other)
    tamper(PURGE_INSERT, pk(uuid.uuid4()), pk(scene.other.id), 1, entry.hash, 1, then - timedelta(days=365), timezone.now())
    assert "append-only" in refused(f"DELETE FROM {ENTRIES} WHERE id = %s", pk(entry.id))
    assert AuditEntry.objects.filter(unit=scene.other).count() == 1


def east_with_two_old_entries(crates: int) -> tuple:
    """(unit, staff): east, `crates` crates created, its entries 1 and 2 back-dated two years (beyond
    a one-year retention, within fifteen) and the chain re-hashed after them, as written then."""
    unit = UnitFactory(code="east")
    staff = unit_staff(unit)
    for _ in range(crates):
        services.crate_create(actor=staff["store"])
    for position in (1, 2):
        rehash_from(unit.id, position, at=timezone.now() - timedelta(days=800))
    return unit, staff


def test_a_purge_made_while_retention_was_lowered_is_caught(sink_file, settings):
    # scene: entries two years old, purged while AUDIT_RETENTION_YEARS said 1, then set back to 15
    unit, staff = east_with_two_old_entries(4)
    checkpoints_write()
    services.crate_create(actor=staff["store"])
    checkpoints_write()
    settings.AUDIT_RETENTION_YEARS = 1
    (purge,) = audit_purge(before=timezone.now() - timedelta(days=700), purged_by="qa", reason="retention")
    assert purge.through_position == 2 and audit_verify().ok
    settings.AUDIT_RETENTION_YEARS = 15

    result = audit_verify()

    assert (result.first_bad["rule"], result.first_bad["position"], result.first_bad["id"]) == (
        "purge_inside_retention", 2, str(purge.id))
    audit_chain_watch(full=True)
    assert chain_ok() == {"east": 0}
    assert Notification.objects.filter(user=staff["admin"], kind="audit_chain_broken").count() == 1


def checkpoints_written_at(monkeypatch, then) -> list[AuditCheckpoint]:
    """Scene-setting: the scheduled checkpoint as it ran at `then` (its signed time)."""
    with monkeypatch.context() as patched:
        patched.setattr(checkpoints_module, "timezone", SimpleNamespace(now=lambda: then))
        return checkpoints_write()


def test_a_lawful_purge_backdated_afterwards_is_caught(sink_file, settings, monkeypatch):
    # scene: entry 1 written 900 days ago, checkpointed at 850, entry 2 written at 800, entry 3 now;
    # a purge of entries 1 and 2 while AUDIT_RETENTION_YEARS said 1, lawful then
    now = timezone.now()
    unit = UnitFactory(code="east")
    staff = unit_staff(unit)
    services.crate_create(actor=staff["store"])
    rehash_from(unit.id, 1, at=now - timedelta(days=900))
    (below,) = checkpoints_written_at(monkeypatch, now - timedelta(days=850))
    services.crate_create(actor=staff["store"])
    rehash_from(unit.id, 2, at=now - timedelta(days=800))
    services.crate_create(actor=staff["store"])
    checkpoints_write()
    settings.AUDIT_RETENTION_YEARS = 1
    (purge,) = audit_purge(before=now - timedelta(days=700), purged_by="qa", reason="retention")
    assert (below.position, purge.through_position) == (1, 2) and audit_verify().ok
    # retention set back to 15 years, and the purge record back-dated to fit it (the owner, triggers
    # aside): its own `before` is beyond retention now, but the checkpoint below its position was
    # signed 850 days ago, so the entries after it were younger than 15 years when they went
    settings.AUDIT_RETENTION_YEARS = 15
    tamper(f"UPDATE {PURGES} SET before = %s WHERE id = %s", now - timedelta(days=365 * 16), pk(purge.id))

    bad = audit_verify().first_bad

    assert (bad["rule"], bad["position"], bad["id"], bad["purge"]) == ("purge_inside_retention", 2, str(purge.id), str(purge.id))
    audit_chain_watch(full=True)
    assert chain_ok() == {"east": 0}
    assert Notification.objects.filter(user=staff["admin"], kind="audit_chain_broken").count() == 1


def test_a_purge_record_whose_hash_disagrees_with_its_checkpoint(sink_file, settings):
    # scene: entries 1 and 2 two years old, checkpointed at 2 and at 4, entries 1 and 2 purged
    # (lawfully: AUDIT_RETENTION_YEARS is 1 throughout)
    settings.AUDIT_RETENTION_YEARS = 1
    unit, staff = east_with_two_old_entries(2)
    (at_purge,) = checkpoints_write()
    for _ in range(2):
        services.crate_create(actor=staff["store"])
    checkpoints_write()
    (purge,) = audit_purge(before=timezone.now() - timedelta(days=700), purged_by="qa", reason="retention")
    assert (at_purge.position, purge.through_position) == (2, 2) and audit_verify().ok
    # the owner gives the purge record another hash and re-hashes the kept chain from it: every
    # link from the purge record on holds
    tamper(f"UPDATE {PURGES} SET through_hash = %s WHERE id = %s", GENESIS, pk(purge.id))
    rehash_from(unit.id, 3)

    bad = audit_verify().first_bad

    assert (bad["rule"], bad["position"], bad["id"], bad["checkpoint"]) == (
        "checkpoint_missing_from_chain", 2, str(purge.id), str(at_purge.id))
    assert "purge record's hash" in bad["reason"]
    audit_chain_watch(full=True)
    assert chain_ok() == {"east": 0}
    assert Notification.objects.filter(user=staff["admin"], kind="audit_chain_broken").count() == 1


@pytest.mark.parametrize("scene", MODES, indirect=True)
def test_a_checkpoint_edited_in_the_database(scene):
    checkpoint = scene.checkpoint(12)
    forged = "f" * 64
    assert "append-only" in refused(f"UPDATE {CHECKPOINTS} SET hash = %s WHERE id = %s", forged, pk(checkpoint.id))
    assert "append-only" in refused(f"DELETE FROM {CHECKPOINTS} WHERE id = %s", pk(checkpoint.id))

    tamper(f"UPDATE {CHECKPOINTS} SET hash = %s WHERE id = %s", forged, pk(checkpoint.id))

    bad = caught(scene, "checkpoint_signature_invalid", position=12)
    assert bad["checkpoint"] == str(checkpoint.id)


@pytest.mark.parametrize("scene", MODES, indirect=True)
def test_the_database_restored_to_an_older_copy(scene):
    # the copy was taken after the first checkpoint: the newer entries and checkpoint are not in it,
    # and everything left agrees with itself; only the sink remembers
    newer = scene.checkpoint(12)
    tamper(f"DELETE FROM {CHECKPOINTS} WHERE id = %s", pk(newer.id))
    tamper(f"DELETE FROM {ENTRIES} WHERE unit_id = %s AND position > 6", pk(scene.unit.id))
    assert audit_verify(compare_sink=False).ok

    bad = caught(scene, "sink_mismatch", position=12)
    assert bad["checkpoint"] == str(newer.id) and "not in the database" in bad["reason"]


# --- the sink on its own ----------------------------------------------------------------------------


def test_an_edited_sink_line_is_reported(scene):
    lines = scene.sink.read_text().splitlines()
    document = json.loads(lines[-1])
    document["position"] = 11
    lines[-1] = json.dumps(document)
    scene.sink.write_text("\n".join(lines) + "\n")

    bad = audit_verify().first_bad

    assert bad["rule"] == "sink_mismatch" and "edited in the sink" in bad["reason"] and bad["sink_line"] == len(lines)


def test_a_stripped_or_deleted_sink_is_reported(scene):
    lines = scene.sink.read_text().splitlines()
    scene.sink.write_text("\n".join(lines[:-1]) + "\n")
    bad = audit_verify().first_bad
    assert bad["rule"] == "sink_mismatch" and "not in the sink" in bad["reason"] and bad["position"] == 12

    scene.sink.unlink()
    assert "missing" in audit_verify().first_bad["reason"]


def test_a_trail_that_stays_broken_notifies_once_its_admins_and_the_superusers(scene):
    from backend.accounts.models import User

    root = User.objects.create_superuser(username="root", password="x-2026-root-pass")
    tamper(f"DELETE FROM {ENTRIES} WHERE unit_id = %s AND position > %s", pk(scene.unit.id), 11)
    audit_chain_watch()
    audit_chain_watch()

    notified = Notification.objects.filter(kind="audit_chain_broken").values_list("user_id", flat=True)
    assert sorted(notified) == sorted([scene.staff["admin"].id, scene.staff["qa"].id, root.id])
    assert chain_ok() == {"east": 0, "west": 1}
    # broken differently: told again
    tamper(f"DELETE FROM {ENTRIES} WHERE unit_id = %s AND position > %s", pk(scene.unit.id), 10)
    audit_chain_watch()
    assert Notification.objects.filter(kind="audit_chain_broken").count() == 6


def test_a_unit_known_only_to_its_checkpoints_is_still_checked(sink_file):
    # a unit whose row went with its entries: only its (signed) checkpoint remembers it
    from backend.audit.checkpoints import payload
    from backend.audit.keys import signer

    gone = AuditCheckpoint(id=uuid.uuid4(), unit_id=uuid.uuid4(), unit_code="gone", position=40, hash="a" * 64,
                           purged_through=0, at=timezone.now(), key_id=signer().key_id)
    gone.signature = signer().sign(payload(gone))
    gone.save()

    bad = audit_verify(compare_sink=False).first_bad

    assert (bad["rule"], bad["unit_code"], bad["checkpoint_position"]) == ("unit_wiped", "gone", 40)

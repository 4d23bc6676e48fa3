"""The database's own refusal to change the audit trail: triggers on PostgreSQL and SQLite.

UPDATE, DELETE and TRUNCATE of an audit entry, a purge record, a signature or a checkpoint are
refused by the database, whoever asks: the application, the admin site, a shell, a raw SQL session;
so is SQLite's INSERT OR REPLACE over an existing row. The one exception is the retention purge
(`services.audit_purge`): it first records an AuditPurge, which the database accepts only for
entries older than AUDIT_RETENTION_YEARS (and the purge's `before`), and then lets exactly the
entries that record covers be deleted. Someone who owns the tables can still drop or disable the
triggers; that is what the hash chain and the signed checkpoints are for (`verify.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

# The entries and purge records (migration 0002), the signatures (0004), the checkpoints (0006),
# the reviews (0007).
FIRST_TABLES = ("audit_auditentry", "audit_auditpurge")
SIGNATURE_TABLES = ("audit_signature", "audit_signedrecord")
CHECKPOINT_TABLES = ("audit_auditcheckpoint",)
TABLES = (*FIRST_TABLES, *SIGNATURE_TABLES, *CHECKPOINT_TABLES)  # (what migration 0006 installs)
REVIEW_TABLES = ("audit_auditreview",)  # (migration 0007)
ALL_TABLES = (*TABLES, *REVIEW_TABLES)
REFUSED = "audit trail is append-only"
YOUNG = "audit trail retention: a purge of entries younger than AUDIT_RETENTION_YEARS refused"

# AUDIT_RETENTION_YEARS as the triggers read it: one row, in days (services.retention_horizon's
# arithmetic), written by every `migrate` and by the purge service from the settings. No row: no
# purge at all. Whoever owns the tables can change it, as they can drop a trigger: verify's
# purge rules (checked against the signed checkpoints' times) are what catch that.
RETENTION_TABLE = "audit_retention"
_RETENTION_CREATE = (
    f"CREATE TABLE IF NOT EXISTS {RETENTION_TABLE} "
    "(id integer PRIMARY KEY CHECK (id = 1), days integer NOT NULL CHECK (days > 0))"
)

_POSTGRES_FUNCTION = f"""
CREATE OR REPLACE FUNCTION audit_retention_horizon() RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT now() - make_interval(days => days) FROM {RETENTION_TABLE} WHERE id = 1
$$;
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_auditentry' THEN
        -- only what a purge record covers, and only entries older than its `before` and retention
        IF OLD.at < audit_retention_horizon() AND EXISTS (
               SELECT 1 FROM audit_auditpurge p
               WHERE p.unit_id = OLD.unit_id AND OLD.position <= p.through_position AND OLD.at < p.before) THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION '{REFUSED}: % on % refused', TG_OP, TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END
$$;
CREATE OR REPLACE FUNCTION audit_purge_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    horizon timestamptz := audit_retention_horizon();
BEGIN
    IF horizon IS NULL OR NEW.before > horizon OR EXISTS (
           SELECT 1 FROM audit_auditentry e
           WHERE e.unit_id = NEW.unit_id AND e.position <= NEW.through_position
             AND (e.at >= NEW.before OR e.at >= horizon)) THEN
        RAISE EXCEPTION '{YOUNG}' USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;
"""


def _postgres_triggers(table: str) -> str:
    guard = "" if table != "audit_auditpurge" else """
CREATE TRIGGER audit_auditpurge_retention BEFORE INSERT ON audit_auditpurge
    FOR EACH ROW EXECUTE FUNCTION audit_purge_guard();"""
    return f"""
CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();{guard}
"""


def _postgres_remove(table: str) -> str:
    return (f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}; DROP TRIGGER IF EXISTS {table}_no_truncate ON {table};"
            f"DROP TRIGGER IF EXISTS audit_auditpurge_retention ON {table};")


def _sqlite_refusals(table: str, keys: str = "id = NEW.id") -> dict[str, str]:
    return {
        f"{table}_no_update": f"""
CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
BEGIN SELECT RAISE(ABORT, '{REFUSED}: UPDATE on {table} refused'); END;""",
        f"{table}_no_delete": f"""
CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
BEGIN SELECT RAISE(ABORT, '{REFUSED}: DELETE on {table} refused'); END;""",
        **_sqlite_no_replace(table, keys),
    }


def _sqlite_no_replace(table: str, keys: str) -> dict[str, str]:
    # INSERT OR REPLACE deletes the row it conflicts with, and SQLite runs no DELETE trigger for
    # that (unless recursive_triggers is on): refuse the insert before the conflict is resolved.
    return {
        f"{table}_no_replace": f"""
CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table}
WHEN EXISTS (SELECT 1 FROM {table} WHERE {keys})
BEGIN SELECT RAISE(ABORT, '{REFUSED}: INSERT over an existing row of {table} refused'); END;""",
    }


_SQLITE_DAYS = f"(SELECT days FROM {RETENTION_TABLE} WHERE id = 1)"
# SQLite has no TRUNCATE: its DELETE without WHERE runs the DELETE trigger for every row.
_SQLITE_TRIGGERS = {
    "audit_auditentry_no_update": f"""
CREATE TRIGGER audit_auditentry_no_update BEFORE UPDATE ON audit_auditentry
BEGIN SELECT RAISE(ABORT, '{REFUSED}: UPDATE on audit_auditentry refused'); END;""",
    "audit_auditentry_no_delete": f"""
CREATE TRIGGER audit_auditentry_no_delete BEFORE DELETE ON audit_auditentry
WHEN {_SQLITE_DAYS} IS NULL OR julianday(OLD.at) >= julianday('now') - {_SQLITE_DAYS}
  OR NOT EXISTS (SELECT 1 FROM audit_auditpurge p
                 WHERE p.unit_id = OLD.unit_id AND OLD.position <= p.through_position
                   AND julianday(OLD.at) < julianday(p.before))
BEGIN SELECT RAISE(ABORT, '{REFUSED}: DELETE on audit_auditentry refused'); END;""",
    **_sqlite_no_replace("audit_auditentry", "id = NEW.id OR (unit_id = NEW.unit_id AND position = NEW.position)"),
    **_sqlite_refusals("audit_auditpurge"),
    "audit_auditpurge_no_young": f"""
CREATE TRIGGER audit_auditpurge_no_young BEFORE INSERT ON audit_auditpurge
WHEN {_SQLITE_DAYS} IS NULL OR julianday(NEW.before) > julianday('now') - {_SQLITE_DAYS}
  OR EXISTS (SELECT 1 FROM audit_auditentry e
             WHERE e.unit_id = NEW.unit_id AND e.position <= NEW.through_position
               AND (julianday(e.at) >= julianday(NEW.before) OR julianday(e.at) >= julianday('now') - {_SQLITE_DAYS}))
BEGIN SELECT RAISE(ABORT, '{YOUNG}'); END;""",
    **_sqlite_refusals("audit_signature"),
    **_sqlite_refusals("audit_signedrecord", "id = NEW.id OR (signature_id = NEW.signature_id AND record_id = NEW.record_id)"),
    **_sqlite_refusals("audit_auditcheckpoint"),
    **_sqlite_refusals("audit_auditreview"),
}


def _sqlite_names(tables) -> list[str]:
    return [name for name in _SQLITE_TRIGGERS if any(name.startswith(f"{t}_no_") for t in tables)]


def install(connection, tables: tuple[str, ...] = ALL_TABLES) -> None:
    with connection.cursor() as cursor:
        cursor.execute(_RETENTION_CREATE)  # (the triggers read it; PostgreSQL checks that it exists)
        if connection.vendor == "postgresql":
            cursor.execute(_POSTGRES_FUNCTION + "".join(_postgres_triggers(t) for t in tables))
        elif connection.vendor == "sqlite":
            for name in _sqlite_names(tables):
                cursor.execute(_SQLITE_TRIGGERS[name])
        else:
            raise NotImplementedError(f"no append-only triggers for {connection.vendor}")


def remove(connection, tables: tuple[str, ...] = ALL_TABLES) -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("".join(_postgres_remove(t) for t in tables))
            if set(tables) >= set(FIRST_TABLES):
                cursor.execute("DROP FUNCTION IF EXISTS audit_refuse_change(); DROP FUNCTION IF EXISTS audit_purge_guard();")
        elif connection.vendor == "sqlite":
            for name in _sqlite_names(tables):
                cursor.execute(f"DROP TRIGGER IF EXISTS {name}")


def retention_days(years: int) -> int:
    return round(365.25 * years)


def retention_write(connection, years: int) -> None:
    """Set the retention the triggers enforce (AUDIT_RETENTION_YEARS)."""
    with connection.cursor() as cursor:
        cursor.execute(_RETENTION_CREATE)
        cursor.execute(f"DELETE FROM {RETENTION_TABLE}")
        cursor.execute(f"INSERT INTO {RETENTION_TABLE} (id, days) VALUES (1, %s)", [retention_days(years)])


@contextmanager
def triggers_disabled(connection) -> Iterator[None]:
    """What the owner of the tables can do (and what the hash chain exists for): for tests of the
    tamper evidence, and for the test harness's table flush between tests."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # ALTER TABLE waits for no deferred foreign-key check of this transaction: run them now.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            for table in ALL_TABLES:
                cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                for table in ALL_TABLES:
                    cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
    else:
        remove(connection)
        try:
            yield
        finally:
            install(connection)

"""The database's own refusal to change the audit trail: triggers on PostgreSQL and SQLite.

UPDATE, DELETE and TRUNCATE of an audit entry or a purge record are refused by the database,
whoever asks: the application, the admin site, a shell, a raw SQL session. The one exception is
the retention purge (`services.audit_purge`): it first records an AuditPurge, and the database
then lets exactly the entries that record covers (the unit's positions up to `through_position`)
be deleted. Someone who owns the tables can still drop or disable the triggers; that is what the
hash chain is for (`chain.py`): the edit shows in `verify`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

# The entries and purge records (migration 0002), then the signatures (migration 0004).
FIRST_TABLES = ("audit_auditentry", "audit_auditpurge")
SIGNATURE_TABLES = ("audit_signature", "audit_signedrecord")
TABLES = (*FIRST_TABLES, *SIGNATURE_TABLES)
REFUSED = "audit trail is append-only"

_POSTGRES_FUNCTION = f"""
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_auditentry' THEN
        IF EXISTS (SELECT 1 FROM audit_auditpurge p
                   WHERE p.unit_id = OLD.unit_id AND OLD.position <= p.through_position) THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION '{REFUSED}: % on % refused', TG_OP, TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END
$$;
"""


def _postgres_triggers(table: str) -> str:
    return f"""
CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
"""


def _postgres_remove(table: str) -> str:
    return f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}; DROP TRIGGER IF EXISTS {table}_no_truncate ON {table};"


def _sqlite_refusals(table: str) -> dict[str, str]:
    return {
        f"{table}_no_update": f"""
CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
BEGIN SELECT RAISE(ABORT, '{REFUSED}: UPDATE on {table} refused'); END;""",
        f"{table}_no_delete": f"""
CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
BEGIN SELECT RAISE(ABORT, '{REFUSED}: DELETE on {table} refused'); END;""",
    }

# SQLite has no TRUNCATE: its DELETE without WHERE runs the DELETE trigger for every row.
_SQLITE_TRIGGERS = {
    "audit_auditentry_no_update": f"""
CREATE TRIGGER audit_auditentry_no_update BEFORE UPDATE ON audit_auditentry
BEGIN SELECT RAISE(ABORT, '{REFUSED}: UPDATE on audit_auditentry refused'); END;""",
    "audit_auditentry_no_delete": f"""
CREATE TRIGGER audit_auditentry_no_delete BEFORE DELETE ON audit_auditentry
WHEN NOT EXISTS (SELECT 1 FROM audit_auditpurge p
                 WHERE p.unit_id = OLD.unit_id AND OLD.position <= p.through_position)
BEGIN SELECT RAISE(ABORT, '{REFUSED}: DELETE on audit_auditentry refused'); END;""",
    **_sqlite_refusals("audit_auditpurge"),
    **_sqlite_refusals("audit_signature"),
    **_sqlite_refusals("audit_signedrecord"),
}


def _sqlite_names(tables) -> list[str]:
    return [name for name in _SQLITE_TRIGGERS if any(name.startswith(f"{t}_no_") for t in tables)]


def install(connection, tables: tuple[str, ...] = TABLES) -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(_POSTGRES_FUNCTION + "".join(_postgres_triggers(t) for t in tables))
        elif connection.vendor == "sqlite":
            for name in _sqlite_names(tables):
                cursor.execute(_SQLITE_TRIGGERS[name])
        else:
            raise NotImplementedError(f"no append-only triggers for {connection.vendor}")


def remove(connection, tables: tuple[str, ...] = TABLES) -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("".join(_postgres_remove(t) for t in tables))
            if set(tables) >= set(FIRST_TABLES):
                cursor.execute("DROP FUNCTION IF EXISTS audit_refuse_change();")
        elif connection.vendor == "sqlite":
            for name in _sqlite_names(tables):
                cursor.execute(f"DROP TRIGGER IF EXISTS {name}")


@contextmanager
def triggers_disabled(connection) -> Iterator[None]:
    """What the owner of the tables can do (and what the hash chain exists for): for tests of the
    tamper evidence, and for the test harness's table flush between tests."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # ALTER TABLE waits for no deferred foreign-key check of this transaction: run them now.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            for table in TABLES:
                cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                for table in TABLES:
                    cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
    else:
        remove(connection)
        try:
            yield
        finally:
            install(connection)

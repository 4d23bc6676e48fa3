"""The database: SQLite by default, PostgreSQL with DATABASE_URL; per-process connection handling."""

from __future__ import annotations

from .environment import PROCESS, VAR_DIR, env

# --- Database -------------------------------------------------------------------------------
# Default: a local SQLite file, tuned so that web, worker, beat and Flower can share it:
# WAL lets readers run beside the single writer, BEGIN IMMEDIATE takes the write lock up front
# (no deadlock-prone lock upgrades), and the busy timeout makes writers queue instead of failing.
VAR_DIR.mkdir(exist_ok=True)
# An empty DATABASE_URL counts as unset (so `DATABASE_URL= make up` means the default).
# The web tier (its sync code runs in a thread per request) keeps no connection; see below.
WEB_TIER = PROCESS == "web"
DATABASES = {"default": env.db_url_config(env("DATABASE_URL", default="") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The write lock is waited for in steps of at most 2 ms by our backend (backend/common/db/sqlite3),
    # up to `timeout` (20 s); SQLite's own busy handler only for SQLITE_BUSY_TIMEOUT_MS (its sleeps
    # grow to 100 ms: the request -> client tail, docs/performance.md).
    DATABASES["default"]["ENGINE"] = "backend.common.db.sqlite3"
    SQLITE_BUSY_TIMEOUT_MS = env.int("SQLITE_BUSY_TIMEOUT_MS", default=2)
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            # (busy_timeout last: the journal mode is set under `timeout`, as a fresh file needs)
            "init_command": (
                f"PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS};"
            ),
        }
    )
    # The worker and the relay keep their connection, as on PostgreSQL (a new one cost 1-2.5 ms of
    # each job: the file opened, the PRAGMAs, Django's SQL functions); the web tier's is per request.
    DATABASES["default"].setdefault("CONN_MAX_AGE", 0 if WEB_TIER else env.int("CONN_MAX_AGE", default=60))
else:
    # The web tier runs each request's sync code in a thread of its own (Django's ASGI handler), so
    # a persistent connection there belongs to one request and is never used again: it takes its
    # connections from a pool instead, of at most DATABASE_POOL_SIZE (psycopg_pool, Django's `pool`
    # option, which requires CONN_MAX_AGE 0). The worker and the relay keep theirs for CONN_MAX_AGE.
    # A request that finds the pool busy (or the database away) waits DATABASE_POOL_TIMEOUT seconds,
    # then fails with 503 (a WebSocket handshake: 1013). docs/performance.md, "Sustained state
    # changes", has the measurements behind both choices.
    DATABASES["default"].setdefault("CONN_MAX_AGE", 0 if WEB_TIER else env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
    # Who holds a session, in pg_stat_activity: records-web, records-worker, records-relay (manage.py
    # is plain `records`), unless DATABASE_APPLICATION_NAME says otherwise.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "application_name", env("DATABASE_APPLICATION_NAME", default=f"records-{PROCESS}" if PROCESS else "records")
    )
    DATABASE_POOL_SIZE = env.int("DATABASE_POOL_SIZE", default=20 if WEB_TIER else 0)
    if DATABASE_POOL_SIZE > 0:
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": 1,
            "max_size": DATABASE_POOL_SIZE,
            "timeout": env.float("DATABASE_POOL_TIMEOUT", default=3.0),
            "max_idle": 300,
        }

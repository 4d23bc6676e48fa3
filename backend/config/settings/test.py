"""Test settings: the real engines (DATABASE_URL, Redis), on Redis databases of their own."""

import os

from backend.common.faults import parse_fault_points
from backend.common.redis import cache_settings

from .base import *  # noqa: F403
from .base import REDIS_URL, env, redis_db_url

# Tests use their own Redis databases so they never touch a running `make up` (0/1/2).
# Each pytest-xdist worker (`make test` runs two) gets three databases of its own: 10-12, 13-15.
_base_db = int(os.environ.get("TEST_REDIS_DB_BASE", "10")) + 3 * int(
    os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0
)
TEST_REDIS_DB_BASE = _base_db
CELERY_BROKER_URL = env("TEST_CELERY_BROKER_URL", default=redis_db_url(REDIS_URL, _base_db))
CHANNEL_LAYER_URL = env("TEST_CHANNEL_LAYER_URL", default=redis_db_url(REDIS_URL, _base_db + 1))
KEYS_REDIS_URL = env("TEST_KEYS_REDIS_URL", default=redis_db_url(REDIS_URL, _base_db + 2))
CHANNEL_LAYER_HOST["address"] = CHANNEL_LAYER_URL  # noqa: F405
CACHES = cache_settings(KEYS_REDIS_URL)

# Fast hashing for the users tests make; Argon2id and PBKDF2 still check the passwords of users made
# the way production makes them (tests/support/deploy.py), e.g. when they sign a decision. The
# production order, and the upgrade to Argon2id, are tested on the base settings' list
# (tests/backend/accounts/test_hashing.py).
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.MD5PasswordHasher",
    "backend.accounts.hashing.Argon2idPasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
DEBUG = False
# Quiet by default; a test that must see everything the processes log (the signature password is
# never in it) starts them with TEST_LOG_LEVEL=DEBUG.
LOG_LEVEL = env("TEST_LOG_LEVEL", default="WARNING")
LOGGING["root"]["level"] = LOG_LEVEL  # noqa: F405
LOGGING["loggers"]["daphne"]["level"] = LOG_LEVEL  # noqa: F405

# SQLite: a file (not :memory:) so the Daphne and Celery processes the integration tests start can
# share the test database.
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405 (Django's or backend.common.db.sqlite3)
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{_base_db}.sqlite3")}  # noqa: F405

# Checkpoints: a key of the test runs' own under var/; no sink unless a test names one (a shared
# file would outlive each test's rolled-back checkpoints and disagree with the next test's database).
AUDIT_CHECKPOINT_KEY_GENERATE = True
AUDIT_CHECKPOINT_KEY_FILE = VAR_DIR / "test-audit-checkpoint-key.pem"  # noqa: F405
AUDIT_CHECKPOINT_SINK = env("AUDIT_CHECKPOINT_SINK", default="")

# Fault points (backend/common/faults.py): armed only here, from the environment of the process
# under test, so a fault drill can pause or fail a real Daphne or worker at a named point.
FAULT_POINTS = parse_fault_points(env("FAULT_POINTS", default=""))

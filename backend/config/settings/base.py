"""Settings shared by every environment, read from the process environment.

Every knob a deployment may turn is an environment variable; `.env.example` lists them.
A `.env` file at the project root is read when present (never committed).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import environ

from backend.common.proxies import parse_networks
from backend.common.redis import cache_settings, channel_layer_host, parse_sentinel_nodes, sentinel_url

BASE_DIR = Path(__file__).resolve().parents[3]
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

SECRET_KEY = env("SECRET_KEY", default="dev-only-insecure-secret-key-change-me-0123456789abcdef")
DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
# Proxies whose X-Forwarded-For is believed (addresses or networks). Empty: Daphne serves clients
# directly (`make up`) and a client's forwarding headers are dropped (backend/common/proxies.py).
TRUSTED_PROXIES = parse_networks(env.list("TRUSTED_PROXIES", default=[]))
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    # Before django.contrib.auth: its `changepassword` command (audited) takes the place of auth's.
    "backend.accounts",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt",
    "rest_framework_simplejwt.token_blacklist",
    "axes",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "backend.notifications",
    "backend.audit",
    "backend.events",
    "backend.records",
    "backend.jobs",
    "realtime",
]

MIDDLEWARE = [
    # First: each request's request -> client trace (issue 33, backend/common/trace.py).
    "backend.common.trace.RequestTraceMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Where each request comes from (address, user agent), for the audit entries of its changes.
    "backend.audit.middleware.AuditOriginMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Lockout answers for the admin site's login form; the API's sign-in checks it itself.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "backend.config.urls"
WSGI_APPLICATION = "backend.config.wsgi.application"
ASGI_APPLICATION = "backend.config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# Default: a local SQLite file, tuned so that web, worker, beat and Flower can share it:
# WAL lets readers run beside the single writer, BEGIN IMMEDIATE takes the write lock up front
# (no deadlock-prone lock upgrades), and the busy timeout makes writers queue instead of failing.
VAR_DIR.mkdir(exist_ok=True)
# An empty DATABASE_URL counts as unset (so `DATABASE_URL= make up` means the default).
DATABASES = {"default": env.db_url_config(env("DATABASE_URL", default="") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Issue 33: the write lock is waited for in steps of at most 2 ms by the backend
    # (backend/common/db/sqlite3), up to `timeout` (20 s); SQLite's own busy handler only for
    # SQLITE_BUSY_TIMEOUT_MS (its sleeps grow to 100 ms: the request -> client tail).
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
    # each job: the file opened, the PRAGMAs, Django's SQL functions); the web tier's is per request
    # (backend/config/asgi.py sets 0).
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
    # Who holds a session, in pg_stat_activity: each entry point names its process in
    # RECORDS_PROCESS (records-web, records-worker, records-relay; manage.py is plain `records`),
    # unless DATABASE_APPLICATION_NAME says otherwise.
    _process = env("RECORDS_PROCESS", default="")
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "application_name", env("DATABASE_APPLICATION_NAME", default=f"records-{_process}" if _process else "records")
    )
    # A connection pool (psycopg_pool, through Django's own `pool` option) of at most
    # DATABASE_POOL_SIZE connections, for a process whose requests each run in a thread of their
    # own: the web tier (backend/config/asgi.py turns it on). There a persistent connection belongs
    # to one request's thread and is never used again, so without a pool every API request opened
    # a PostgreSQL session of its own. A pooled connection goes back to the pool at the end of
    # each request (Django requires CONN_MAX_AGE 0 with a pool); a request that finds all of them
    # busy (or, with the database away, none can be opened) waits up to DATABASE_POOL_TIMEOUT
    # seconds, then fails with 503 (a WebSocket handshake: 1013) rather than pile up sessions or
    # outlast the handshake's own timeout. 0 (the default elsewhere): no pool.
    DATABASE_POOL_SIZE = env.int("DATABASE_POOL_SIZE", default=0)
    if DATABASE_POOL_SIZE > 0:
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": 1,
            "max_size": DATABASE_POOL_SIZE,
            "timeout": env.float("DATABASE_POOL_TIMEOUT", default=3.0),
            "max_idle": 300,
        }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# The largest request body the API reads (bytes): 413 payload_too_large beyond. Django's own
# default (2.5 MiB) fits a bulk action of BULK_MAX_IDS ids with their versions.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=2_621_440)

AUTH_USER_MODEL = "accounts.User"
# django-axes first: it refuses a locked-out username before the password is checked.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
# Sign-in lockout (django-axes, counted in the database): AXES_FAILURE_LIMIT failed sign-ins of one
# username *from one address* lock that pair for AXES_COOLOFF_TIME, or until a unit admin unlocks it
# (POST /api/users/{id}/unlock/). The pair, not the username alone: an outsider who knows a username
# cannot lock its owner out from everywhere by failing on purpose. The username is slowed everywhere
# instead (LOGIN_RATE_PER_USERNAME, whatever the address: at most a minute's wait), and each address
# too (LOGIN_RATE_PER_ADDRESS). docs/security.md, "Sign-in", has the trade. A success resets the
# count. Addresses come from REMOTE_ADDR only, which TrustedProxyMiddleware sets from
# X-Forwarded-For only when a trusted proxy sent it.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_IPWARE_META_PRECEDENCE_ORDER = ["REMOTE_ADDR"]
AXES_VERBOSE = False
# Never an address alone: every user of a site often shares one address (the site's NAT).
SILENCED_SYSTEM_CHECKS: list[str] = []
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    # Validates nothing: its password_changed hook revokes and audits every new password, whatever
    # path saved it (backend/accounts/services.py).
    {"NAME": "backend.accounts.services.RevokeOnPasswordChange"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# collectstatic's target (the image build, and the `static` compose service for nginx).
STATIC_ROOT = Path(env("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing root even when it serves from finders
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True  # serve straight from the apps in development, no collectstatic needed

# --- Redis ----------------------------------------------------------------------------------
# One Redis, one database per role: 0 = Celery broker, 1 = channel layer (as in the seed),
# 2 = short-lived keys (WebSocket tickets). Each can be pointed elsewhere on its own.
REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379")

# High availability: with REDIS_SENTINELS ("host1:26379,host2:26379") every role finds the current
# master through the sentinels instead of REDIS_URL, and follows a failover. The role URLs below then
# default to kombu's `sentinel://host:port/db;...` form (docs/deployment.md, "Redis Sentinel").
REDIS_SENTINELS = parse_sentinel_nodes(env.list("REDIS_SENTINELS", default=[]))
REDIS_SENTINEL_MASTER = env("REDIS_SENTINEL_MASTER", default="mymaster")
REDIS_PASSWORD = env("REDIS_PASSWORD", default="")  # the master's, with sentinels (else it is in REDIS_URL)
# How we talk to the sentinels themselves: a dead sentinel must not hang master discovery.
REDIS_SENTINEL_KWARGS = {"socket_timeout": 5, "socket_connect_timeout": 5}
if env("REDIS_SENTINEL_PASSWORD", default=""):
    REDIS_SENTINEL_KWARGS["password"] = env("REDIS_SENTINEL_PASSWORD")


def redis_db_url(base: str, db: int) -> str:
    """`base` with its path replaced by `/db` (the database number in a redis:// URL)."""
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def redis_role_url(db: int) -> str:
    """The default URL of one Redis role (database `db`): REDIS_URL's server, or the sentinels'."""
    if REDIS_SENTINELS:
        return sentinel_url(REDIS_SENTINELS, db, REDIS_PASSWORD)
    return redis_db_url(REDIS_URL, db)


CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=redis_role_url(0))
CHANNEL_LAYER_URL = env("CHANNEL_LAYER_URL", default=redis_role_url(1))
KEYS_REDIS_URL = env("KEYS_REDIS_URL", default=redis_role_url(2))
# Django's cache lives in the keys Redis: DRF's throttles count there, one count for every process.
CACHES = cache_settings(KEYS_REDIS_URL)

# --- Channels -------------------------------------------------------------------------------
# Redis pub/sub by default: measured against the core (list-based) layer on our fan-out path it has
# ~10x the send rate and ~1 ms p99 instead of ~150 ms, and keeps no group state in Redis; what it
# does not keep (messages for a hub that is briefly away) the hub fills from the outbox anyway.
# docs/realtime.md, "Channel layer", has the numbers; CHANNEL_LAYER_BACKEND switches back.
# redis-py 8 lowered the pool defaults (max_connections=100, socket_timeout=5 s); both are set
# explicitly: a generous pool, and no read timeout on the layer's sockets (the core layer blocks in
# BZPOPMIN; liveness is covered by TCP keepalive and health checks). tests/realtime prove both.
CHANNEL_LAYER_BACKEND = env(
    "CHANNEL_LAYER_BACKEND", default="channels_redis.pubsub.RedisPubSubChannelLayer"
)
# With sentinels the host entry names them and the master instead of an address (same options).
CHANNEL_LAYER_HOST_OPTIONS = {
    "max_connections": env.int("CHANNEL_LAYER_MAX_CONNECTIONS", default=10_000),
    # Only tests set this (to prove the guard in tests/realtime/test_resilience.py): leave it unset.
    "socket_timeout": env.float("CHANNEL_LAYER_SOCKET_TIMEOUT", default=None),
    "socket_connect_timeout": 5,
    "socket_keepalive": True,
    "health_check_interval": 30,
    "retry_on_timeout": True,
}
CHANNEL_LAYER_HOST = channel_layer_host(
    CHANNEL_LAYER_URL, master_name=REDIS_SENTINEL_MASTER, sentinel_kwargs=REDIS_SENTINEL_KWARGS,
    **CHANNEL_LAYER_HOST_OPTIONS,
)
# More Redis servers for the channel layer (comma-separated URLs): channels-redis spreads the
# groups (`unit_<id>`, `user_<id>`) and each process's channel over `hosts` by a hash of the name,
# so every process must list the same servers in the same order (docs/realtime.md, "Sharding").
CHANNEL_LAYER_SHARD_URLS = env.list("CHANNEL_LAYER_SHARD_URLS", default=[])
CHANNEL_LAYER_HOSTS = [CHANNEL_LAYER_HOST] + [
    channel_layer_host(url, master_name=REDIS_SENTINEL_MASTER, sentinel_kwargs=REDIS_SENTINEL_KWARGS,
                       **CHANNEL_LAYER_HOST_OPTIONS)
    for url in CHANNEL_LAYER_SHARD_URLS
]
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": CHANNEL_LAYER_BACKEND,
        "CONFIG": {
            "hosts": CHANNEL_LAYER_HOSTS,
            "capacity": env.int("CHANNEL_LAYER_CAPACITY", default=1500),
            "expiry": 60,
            "group_expiry": 86400,
        },
    }
}
if CHANNEL_LAYER_BACKEND.endswith("RedisPubSubChannelLayer"):
    for key in ("capacity", "expiry", "group_expiry"):
        CHANNEL_LAYERS["default"]["CONFIG"].pop(key)

# --- REST framework -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # SimpleJWT's, stamping the request trace's `authenticated` (issue 33)
        "backend.common.authentication.TracedJWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "backend.common.pagination.DefaultPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "backend.common.errors.exception_handler",
    # JSON only, bounded by DATA_UPLOAD_MAX_MEMORY_SIZE and nesting depth (backend/common/parsers.py).
    "DEFAULT_PARSER_CLASSES": ["backend.common.parsers.JSONParser"],
    # Counted in the shared cache (Redis), so a limit holds across every web process.
    "DEFAULT_THROTTLE_RATES": {
        "ws_ticket": env("WS_TICKET_RATE", default="60/min"),
        "bulk": env("BULK_RATE", default="30/hour"),
        "login_address": env("LOGIN_RATE_PER_ADDRESS", default="30/min"),
        "login_username": env("LOGIN_RATE_PER_USERNAME", default="20/min"),
        # Signed decisions per user: each costs a password hash (hundreds of ms of CPU in production).
        "signature": env("SIGNATURE_RATE", default="30/min"),
    },
    # Throttles key on REMOTE_ADDR alone, never a client's X-Forwarded-For: REMOTE_ADDR is the real
    # peer, or the client a trusted proxy names (TRUSTED_PROXIES, backend/common/proxies.py).
    "NUM_PROXIES": 0,
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SIMPLE_JWT = {
    # JWT_ACCESS_SECONDS, when set, wins: token-expiry tests (tests/browser) need lifetimes of seconds.
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env.int("JWT_ACCESS_SECONDS", default=0))
    or timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=1)),
    "TOKEN_OBTAIN_SERIALIZER": "backend.accounts.tokens.UnitTokenObtainPairSerializer",
    "TOKEN_REFRESH_SERIALIZER": "backend.accounts.tokens.UnitTokenRefreshSerializer",
    "UPDATE_LAST_LOGIN": False,
    # JWTs have a key of their own: rotating it signs everyone out without touching SECRET_KEY.
    "SIGNING_KEY": env("JWT_SIGNING_KEY", default="") or SECRET_KEY,
    # Refresh tokens work once (blacklisted on use) and are revoked on password change,
    # deactivation and unit moves (backend/accounts/services.py).
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    # Every token carries a hash of the user's password hash: a new password ends them all.
    "CHECK_REVOKE_TOKEN": True,
}

# Who may read the OpenAPI schema and Swagger UI (/api/schema/, /api/docs/): "public", "staff"
# (Django staff, signed in to the admin site or with a token; production's default) or "off".
API_DOCS = env("API_DOCS", default="public")

SPECTACULAR_SETTINGS = {
    "TITLE": "Records realtime API",
    "DESCRIPTION": (
        "Withdrawal, destruction and transfer requests for archived document crates. "
        "State changes run as jobs; every durable change is pushed on `/ws/updates/`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "RequestStatusEnum": "backend.records.models.RequestStatus",
        "CrateStatusEnum": "backend.records.models.CrateStatus",
        "JobStatusEnum": "backend.jobs.models.JobStatus",
        "RoleEnum": "backend.accounts.models.Role",
    },
}

# --- Realtime -------------------------------------------------------------------------------
WS_TICKET_TTL_SECONDS = env.int("WS_TICKET_TTL_SECONDS", default=30)
# One user's WebSockets across every Daphne process; beyond it a connection is closed with 4029.
WS_MAX_CONNECTIONS_PER_USER = env.int("WS_MAX_CONNECTIONS_PER_USER", default=20)
# Client messages per connection (ping, ...): a token bucket; beyond it they are dropped with an
# `error` rate_limited (at most one a second).
WS_CLIENT_MESSAGES_PER_SECOND = env.float("WS_CLIENT_MESSAGES_PER_SECOND", default=20.0)
WS_CLIENT_MESSAGES_BURST = env.int("WS_CLIENT_MESSAGES_BURST", default=40)
# A `subscribe {"mine": true}` reads the user's requests (four bounded queries) at most once in this
# many seconds per connection; a subscribe within it reuses the ids resolved last (grown live).
WS_MINE_REFRESH_SECONDS = env.float("WS_MINE_REFRESH_SECONDS", default=30.0)
# Browser origins allowed on /ws/updates/. Empty: any scheme and port of an ALLOWED_HOSTS name (the
# seed's behaviour: a dev SPA on :3000 talks to Daphne on :8000). Set exact origins
# (`https://records.example.com`) to pin scheme and port too.
WS_ALLOWED_ORIGINS = env.list("WS_ALLOWED_ORIGINS", default=[])
# How far back `last_seq` can resume; older gaps get `resync_required` (refetch over REST).
REALTIME_REPLAY_LIMIT = env.int("REALTIME_REPLAY_LIMIT", default=10_000)
OUTBOX_RETENTION_DAYS = env.int("OUTBOX_RETENTION_DAYS", default=7)
# A connection is re-validated (active? same unit?) this often, so 4003 never depends on
# a single lost message.
REALTIME_REVALIDATE_SECONDS = env.float("REALTIME_REVALIDATE_SECONDS", default=2.0)
# How often each Daphne process reports its numbers for /metrics and unregisters connections it
# finds closed (the snapshot expires after 5 of these, so a dead process drops out).
REALTIME_REPORT_SECONDS = env.float("REALTIME_REPORT_SECONDS", default=2.0)
# A Daphne process logs a warning (logger realtime.hub) whenever its event loop could not run for
# longer than this (every update to its clients waits that long), naming the periodic pass that ran
# longest meanwhile; and each periodic pass over its connections that takes longer. 0: off.
REALTIME_STALL_WARN_MS = env.int("REALTIME_STALL_WARN_MS", default=50)
# The request -> client trace (issue 33, backend/common/trace.py): a hub logs one line, split into
# stages, for each change it handed over more than this after its API request arrived (0: never).
REQUEST_TRACE_WARN_MS = env.float("REQUEST_TRACE_WARN_MS", default=80)
# Coalescing window for `batch=1` clients.
REALTIME_BATCH_WINDOW_MS = env.int("REALTIME_BATCH_WINDOW_MS", default=50)
# A connection whose socket stays full (the client stopped reading) this long is closed with 4008;
# its next resume with `last_seq` fills whatever it missed.
REALTIME_SLOW_CLIENT_SECONDS = env.float("REALTIME_SLOW_CLIENT_SECONDS", default=10.0)
# Bytes a connection may have waiting for a client that does not read, beyond Twisted's own 64 KiB
# buffer: past it the connection is closed with 4008 at once (a resume replay waits for the client
# to drain instead of writing more).
REALTIME_CLIENT_BUFFER_BYTES = env.int("REALTIME_CLIENT_BUFFER_BYTES", default=1_048_576)
# Presence (`presence=1`, docs/realtime.md): at most one presence_update per user per this many ms
# for the whole unit (the latest state goes out when it has passed), and how often each Daphne
# process sweeps the presence of its units (a killed process's users leave within its heartbeat's
# expiry, 5 x REALTIME_REPORT_SECONDS, plus this).
REALTIME_PRESENCE_INTERVAL_MS = env.int("REALTIME_PRESENCE_INTERVAL_MS", default=1000)
REALTIME_PRESENCE_SWEEP_SECONDS = env.float("REALTIME_PRESENCE_SWEEP_SECONDS", default=5.0)

# --- Celery ---------------------------------------------------------------------------------
# One visibility timeout, read by the broker transport and the result backend alike: it must
# exceed the longest task (hard time limit) or Redis redelivers a task that is still running.
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=600)
# The soft limit leaves the task a moment to clean up; it must stay positive and below the hard
# limit even when the hard limit is short (tests run workers with a few seconds).
CELERY_TASK_SOFT_TIME_LIMIT = env.int(
    "CELERY_TASK_SOFT_TIME_LIMIT", default=CELERY_TASK_TIME_LIMIT - max(1, min(30, CELERY_TASK_TIME_LIMIT // 10))
)
CELERY_VISIBILITY_TIMEOUT = env.int("CELERY_VISIBILITY_TIMEOUT", default=CELERY_TASK_TIME_LIMIT + 300)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
    "socket_timeout": 30,
    "socket_connect_timeout": 5,
    "health_check_interval": 30,
    # A task whose worker died unacknowledged goes back to the queue once it is older than the
    # visibility timeout, when a live worker next sweeps for such tasks. kombu sweeps every 10 s
    # but scans only every 10th sweep (100 s); every sweep scans here (one ZRANGE per worker).
    "unacked_restore_interval": env.int("CELERY_UNACKED_RESTORE_SECONDS", default=10),
    "unacked_restore_throttle": 1,
}
if CELERY_BROKER_URL.startswith("sentinel://"):
    CELERY_BROKER_TRANSPORT_OPTIONS.update(master_name=REDIS_SENTINEL_MASTER, sentinel_kwargs=REDIS_SENTINEL_KWARGS)
# kombu's Redis transport with a channel that can be closed while Redis is gone: without it a
# broker restart under a running late-acked task kills the worker's main process
# (backend/jobs/broker.py says how). Other broker schemes keep kombu's own transport.
CELERY_BROKER_TRANSPORT = {
    "redis": "backend.jobs.broker:Transport",
    "sentinel": "backend.jobs.broker:SentinelTransport",
}.get(CELERY_BROKER_URL.partition("://")[0])
CELERY_RESULT_BACKEND = None  # job state lives in the Job table, not in a result backend
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SEND_SENT_EVENT = True  # Flower shows queued tasks, not only started ones
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = TIME_ZONE
# Beat schedules the hourly prunes only. The seconds-scale guarantees (publish what committed but
# stayed unpublished, re-enqueue stranded jobs) belong to the relay process (workers/relay.py).
CELERY_BEAT_SCHEDULE = {
    "outbox-prune": {
        "task": "outbox.prune",
        "schedule": 3600.0,
        "options": {"queue": "default", "expires": 600},
    },
    # Idempotent (once per crate, threshold and user, by a unique constraint): two beats are harmless.
    "destruction-due-notify": {
        "task": "records.destruction_due",
        "schedule": 3600.0,
        "options": {"queue": "default", "expires": 600},
    },
    "jobs-prune": {
        "task": "jobs.prune",
        "schedule": 3600.0,
        "options": {"queue": "default", "expires": 600},
    },
    # The audit trail's signed checkpoints and its scheduled verification (docs/audit.md). Both are
    # idempotent: a second beat writes no second checkpoint of an unchanged head.
    "audit-checkpoint": {
        "task": "records.audit_checkpoint",
        "schedule": 60.0 * env.float("AUDIT_CHECKPOINT_MINUTES", default=5),
        "options": {"queue": "default", "expires": 120},
    },
    "audit-verify": {
        "task": "records.audit_verify",
        "schedule": 60.0 * env.float("AUDIT_VERIFY_MINUTES", default=60),
        "options": {"queue": "default", "expires": 600},
    },
}
# The relay (workers/relay.py) looks for committed but unpublished events this often, and takes an
# event that has stayed unpublished this long (the committing process had its chance).
OUTBOX_SWEEP_SECONDS = env.float("OUTBOX_SWEEP_SECONDS", default=1.0)
OUTBOX_SWEEP_GRACE_SECONDS = env.float("OUTBOX_SWEEP_GRACE_SECONDS", default=1.0)
# Stranded jobs (backend/jobs/services.jobs_rescue): the relay looks every JOB_RESCUE_SECONDS; a
# job is a suspect once its task was sent (queued) or it last progressed (running)
# JOB_RESCUE_AFTER_SECONDS ago, or at once when its worker's heartbeat (every
# WORKER_HEARTBEAT_SECONDS, gone after three missed) has stopped.
JOB_RESCUE_SECONDS = env.float("JOB_RESCUE_SECONDS", default=15.0)
JOB_RESCUE_AFTER_SECONDS = env.float("JOB_RESCUE_AFTER_SECONDS", default=60.0)
JOB_RESCUE_BATCH = 500
WORKER_HEARTBEAT_SECONDS = env.float("WORKER_HEARTBEAT_SECONDS", default=5.0)

# --- Notifications --------------------------------------------------------------------------
# Days before a crate's `destruction_due` date at which its unit's approvers, store users and admins
# are alerted (once per crate, threshold and user), by the hourly `records.destruction_due` task.
NOTIFY_DESTRUCTION_DUE_DAYS = sorted(
    {int(days) for days in env.list("NOTIFY_DESTRUCTION_DUE_DAYS", default=["30", "7"]) if str(days).strip()},
    reverse=True,
)

# --- Bulk actions ---------------------------------------------------------------------------
BULK_MAX_IDS = env.int("BULK_MAX_IDS", default=20_000)
# Ids per transaction: bigger chunks mean fewer commits and fewer, larger broadcasts.
BULK_CHUNK_SIZE = env.int("BULK_CHUNK_SIZE", default=500)
# job_update pushes to the initiating user at most this often (the job row is always current).
BULK_PROGRESS_INTERVAL_SECONDS = env.float("BULK_PROGRESS_INTERVAL_SECONDS", default=0.5)
# Bulk jobs one user may have queued or running at once; a further one is 429.
BULK_MAX_ACTIVE_PER_USER = env.int("BULK_MAX_ACTIVE_PER_USER", default=2)
# The audit trail is kept this many years; `manage.py purge_audit_trail` refuses anything younger.
# GMP retention for archive records is set by each site's QA (often 10 years or more): set it to
# the longest retention of the records the archive holds.
AUDIT_RETENTION_YEARS = env.int("AUDIT_RETENTION_YEARS", default=15)
# Signed checkpoints of the audit trail (backend/audit/checkpoints.py, docs/audit.md): every
# AUDIT_CHECKPOINT_MINUTES (and after every purge and bulk job) each unit's chain head is signed with
# AUDIT_CHECKPOINT_KEY (Ed25519: PEM text, a PEM file's path, or a secret of 32+ random bytes) and
# copied to AUDIT_CHECKPOINT_SINK. Unset in development, a key is generated under var/ on first use;
# production requires one. AUDIT_CHECKPOINT_PUBLIC_KEYS ("id=base64,id=base64") keeps checkpoints
# signed by earlier keys verifiable after a rotation.
AUDIT_CHECKPOINT_MINUTES = env.float("AUDIT_CHECKPOINT_MINUTES", default=5)
AUDIT_CHECKPOINT_KEY = env("AUDIT_CHECKPOINT_KEY", default="")
AUDIT_CHECKPOINT_KEY_ID = env("AUDIT_CHECKPOINT_KEY_ID", default="")  # default: the public key's fingerprint
AUDIT_CHECKPOINT_KEY_GENERATE = env.bool("AUDIT_CHECKPOINT_KEY_GENERATE", default=DEBUG)
AUDIT_CHECKPOINT_KEY_FILE = VAR_DIR / "audit-checkpoint-key.pem"
AUDIT_CHECKPOINT_PUBLIC_KEYS = env.dict("AUDIT_CHECKPOINT_PUBLIC_KEYS", default={})
# file:///path (O_APPEND + fsync), syslog+tcp://host:port, syslog+udp://host:port or syslog:///dev/log;
# AUDIT_CHECKPOINT_SINK_COPY: for syslog, the collector's archive that verify compares with.
AUDIT_CHECKPOINT_SINK = env("AUDIT_CHECKPOINT_SINK", default="") or f"file://{VAR_DIR / 'audit-checkpoints.jsonl'}"
AUDIT_CHECKPOINT_SINK_COPY = env("AUDIT_CHECKPOINT_SINK_COPY", default="")
# The scheduled verification (records.audit_verify): incremental from the last verified checkpoint
# every AUDIT_VERIFY_MINUTES, the whole trail once every AUDIT_VERIFY_FULL_HOURS.
AUDIT_VERIFY_MINUTES = env.float("AUDIT_VERIFY_MINUTES", default=60)
AUDIT_VERIFY_FULL_HOURS = env.float("AUDIT_VERIFY_FULL_HOURS", default=24)
# Electronic signatures: this many wrong passwords within the window lock a user's signing until a
# unit admin unlocks it (423 signature_locked; each failure, the lock and the unlock are audited).
SIGNATURE_MAX_FAILURES = env.int("SIGNATURE_MAX_FAILURES", default=5)
SIGNATURE_FAILURE_WINDOW_MINUTES = env.int("SIGNATURE_FAILURE_WINDOW_MINUTES", default=15)
# Finished jobs (and their per-target outcomes) are pruned this long after they finished; the audit
# trail, not the job table, is the record of what changed.
JOB_RETENTION_DAYS = env.int("JOB_RETENTION_DAYS", default=90)

# --- Flower / metrics -----------------------------------------------------------------------
FLOWER_BASIC_AUTH = env("FLOWER_BASIC_AUTH", default="admin:flower-pass-2026")
METRICS_TOKEN = env("METRICS_TOKEN", default="")

# --- Logging --------------------------------------------------------------------------------
# Query strings of WebSocket handshakes carry credentials: the filter masks `token=` and
# `ticket=` values in every record, whatever logger emits it (Daphne's access log included).
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact_credentials": {"()": "backend.common.logging.RedactCredentialsFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact_credentials"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "daphne": {"level": LOG_LEVEL},
    },
}

DEMO_PASSWORD = env("DEMO_PASSWORD", default="demo-pass-2026")

# Fault points (backend/common/faults.py): empty everywhere but in the test settings.
FAULT_POINTS: dict = {}

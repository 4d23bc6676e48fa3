"""The job pipeline: Celery, the relay's sweeps and rescues, notifications, bulk actions."""

from __future__ import annotations

from .core import TIME_ZONE
from .environment import env
from .redis_roles import CELERY_BROKER_URL, REDIS_SENTINEL_KWARGS, REDIS_SENTINEL_MASTER

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
    # Overdue audit-trail reviews notify the unit's QA and admins (once per period).
    "audit-review-due": {
        "task": "records.audit_review_due",
        "schedule": 3600.0,
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

# The set-based job path: a worker applies up to this many queued single jobs of one kind and unit
# together, in one transaction (kinds with `apply_batch`: crate.relocate; docs/pipeline.md,
# "Batches"); 1 turns batches off.
JOB_BATCH_MAX = env.int("JOB_BATCH_MAX", default=32)

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
# Checks of a bulk action before it is signed (POST /api/bulk-actions/preview/), per user.
BULK_PREVIEW_RATE = env("BULK_PREVIEW_RATE", default="60/min")

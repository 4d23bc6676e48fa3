"""Records kept: the audit trail's retention, checkpoints and verification; signatures; job retention."""

from __future__ import annotations

from .core import DEBUG
from .environment import VAR_DIR, env

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
# A unit's audit trail is reviewed at least every AUDIT_REVIEW_DAYS: an entry left unreviewed longer
# makes the review overdue (notified to QA and admins, metric records_audit_review_overdue).
AUDIT_REVIEW_DAYS = env.int("AUDIT_REVIEW_DAYS", default=30)
# Electronic signatures: this many wrong passwords within the window lock a user's signing until a
# unit admin unlocks it (423 signature_locked; each failure, the lock and the unlock are audited).
SIGNATURE_MAX_FAILURES = env.int("SIGNATURE_MAX_FAILURES", default=5)
SIGNATURE_FAILURE_WINDOW_MINUTES = env.int("SIGNATURE_FAILURE_WINDOW_MINUTES", default=15)
# Finished jobs (and their per-target outcomes) are pruned this long after they finished; the audit
# trail, not the job table, is the record of what changed.
JOB_RETENTION_DAYS = env.int("JOB_RETENTION_DAYS", default=90)

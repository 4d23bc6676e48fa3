"""Task entry points: look up ids, call one service. Names are what operators see in Flower.

One task per job kind, named after it (`withdrawal.approve`, `bulk.withdrawal.approve`,
`crate.relocate`, ...), on its kind's queue: the registry (backend/jobs/registry.py) is the list.
Plus the hourly prunes, the destruction-due alert, and the audit trail's checkpoints and scheduled
verification that beat schedules. The outbox relay and the sweeper of stranded jobs are not
tasks: they run in the relay process (workers/relay.py).
Django is set up before Celery imports this module (Celery's Django fix-up), so the registry is full.
"""

import logging

from backend.audit.checkpoints import checkpoints_write
from backend.events.outbox import outbox_prune
from backend.jobs import registry
from backend.jobs.batches import job_execute_batch
from backend.jobs.registry import JobKind
from backend.jobs.services import job_execute, jobs_prune
from backend.records.services.integrity import audit_chain_watch
from backend.records.services.notices import destruction_due_notify
from backend.records.services.reviews import reviews_due_notify

from .base import records_task

logger = logging.getLogger(__name__)


def progress_text(counts: dict) -> str:
    return f"{counts['done']}/{counts['total']} done, {counts['failed']} failed"


def _job_task(kind: JobKind):
    def run(self, job_id: str, **_display) -> str:
        on_progress = None
        if kind.bulk:
            # Progress as a custom task event: Flower shows the task in state PROGRESS with the
            # counts in its result column while it runs, and the final counts once it succeeds.
            # Best effort: the event goes through the broker, which may be away for a moment; the
            # job row always has the progress, and a lost event must not stop the job.
            def on_progress(counts: dict) -> None:
                try:
                    self.send_event("task-progress", result=progress_text(counts), **counts)
                except Exception:  # noqa: BLE001
                    logger.warning("progress event of job %s not sent", job_id, exc_info=True)

        if kind.apply_batch is not None:  # several queued jobs of its kind and unit at a time (issue 30)
            job = job_execute_batch(kind=kind, job_id=job_id, worker=self.request.hostname or "")
        else:
            job = job_execute(job_id=job_id, on_progress=on_progress, worker=self.request.hostname or "")
        return "no such job" if job is None else f"{job.status}: {progress_text(job.progress)}"

    run.__name__ = run.__qualname__ = kind.name.replace(".", "_")
    return records_task(kind.name, bind=True)(run)  # on its kind's queue: the app's task_routes


JOB_TASKS = {kind.name: _job_task(kind) for kind in registry.kinds()}


@records_task("outbox.prune", time_limit=300, max_retries=0)
def prune() -> int:
    return outbox_prune()


@records_task("jobs.prune", time_limit=300, max_retries=0)
def prune_jobs() -> int:
    return jobs_prune()


@records_task("records.destruction_due", time_limit=600, max_retries=0)
def destruction_due() -> int:
    """Alert units of crates nearing their destruction date (idempotent: once per crate, threshold, user)."""
    return destruction_due_notify()


@records_task("records.audit_checkpoint", time_limit=120, max_retries=0)
def audit_checkpoint() -> int:
    """Sign each unit's chain head that moved since its last checkpoint (every AUDIT_CHECKPOINT_MINUTES)."""
    return len(checkpoints_write())


@records_task("records.audit_verify", max_retries=0)
def audit_verify() -> str:
    """Verify the audit trail (incremental; in full once every AUDIT_VERIFY_FULL_HOURS) and alert on failure."""
    run = audit_chain_watch()
    broken = [unit.unit_code for unit in run.units if not unit.ok]
    kind = "full" if run.full else "incremental"
    return f"{kind}: {len(run.units)} units, {sum(u.entries for u in run.units)} entries, broken: {broken or 'none'}"


@records_task("records.audit_review_due", time_limit=300, max_retries=0)
def audit_review_due() -> int:
    """Tell each unit's QA and admins when its audit-trail review is overdue (AUDIT_REVIEW_DAYS)."""
    return reviews_due_notify()

"""Enqueueing a job: its task, named after its kind, sent once the job row has committed, through
the job queue's Celery app (celery_app.py: configured from settings, routed by the registry)."""

from __future__ import annotations

import logging

from kombu.exceptions import OperationalError

from backend.common.errors import ServiceUnavailable

from .celery_app import app
from .models import Job, JobStatus

logger = logging.getLogger(__name__)


def enqueue(job: Job, description: str) -> None:
    """Send the task of `job` (task id = job id). If the broker cannot take it, the job row is
    removed again and ServiceUnavailable (503) is raised: nothing is left half-created."""
    try:
        app.send_task(
            job.kind,
            kwargs={"job_id": str(job.id)},
            task_id=str(job.id),
            # Flower shows this instead of a bare uuid: what is being done to what, by whom.
            kwargsrepr=repr({"job_id": str(job.id), "what": description or job.kind}),
            retry=True,
            retry_policy={
                "max_retries": 2,
                "interval_start": 0,
                "interval_step": 0.2,
                "interval_max": 0.5,
            },
        )
    except (OperationalError, OSError, TimeoutError) as exc:
        logger.error("job %s not enqueued, broker unavailable: %s", job.id, exc)
        Job.objects.filter(id=job.id, status=JobStatus.QUEUED).delete()
        raise ServiceUnavailable("The job queue is unavailable; nothing was changed. Try again shortly.") from exc

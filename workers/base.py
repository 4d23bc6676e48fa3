"""The one task decorator: name, limits, late acks and a retry policy for transient errors.

Transient = the database or Redis went away for a moment. Every job task is safe to retry because
the change and the job's completion commit together (backend.jobs.services.job_execute).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.db import InterfaceError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from backend.common.trace import task_trace_start, trace_end
from backend.jobs.services import job_fail

from .celery import app

TRANSIENT_ERRORS = (OperationalError, InterfaceError, RedisConnectionError, RedisTimeoutError)


class RecordsTask(Task):
    """Base of every records task. A job task that fails for good (retries exhausted, soft time
    limit, a bug) marks its job `failed`, so no job stays `running` with no task left to end it.
    Refused changes never get here: job_execute records those as the job's outcome itself."""

    def before_start(self, task_id: str, args: tuple, kwargs: dict[str, Any]) -> None:
        task_trace_start(self.request)  # the request trace (issue 33): the task's message carries it

    def after_return(self, *args: Any, **kwargs: Any) -> None:
        trace_end()

    def on_failure(self, exc: Exception, task_id: str, args: tuple, kwargs: dict[str, Any], einfo: Any) -> None:
        job_id = (kwargs or {}).get("job_id")
        if job_id is None:
            return
        if isinstance(exc, SoftTimeLimitExceeded | TimeLimitExceeded):
            error = {"code": "time_limit_exceeded", "message": "The job ran past its time limit and was stopped."}
        else:
            error = {"code": "internal_error", "message": f"The job stopped on an unexpected error ({type(exc).__name__})."}
        job_fail(job_id=job_id, error=error)


def records_task(name: str, *, time_limit: int | None = None, max_retries: int = 5, bind: bool = False):
    """`@records_task("requests.approve")`: a named, late-acked, retrying task. Which queue it goes to
    is the app's `task_routes` (backend/jobs/celery_app.py): the web process sends tasks by name
    without importing this module, and a per-task `queue` attribute is deprecated in Celery 5.x
    (no effect from 6.0)."""
    limits = {}
    if time_limit is not None:
        limits = {"time_limit": time_limit, "soft_time_limit": max(time_limit - 10, 1)}

    def decorate(fn: Callable) -> Callable:
        return app.task(
            base=RecordsTask,
            name=name,
            acks_late=True,
            reject_on_worker_lost=True,
            autoretry_for=TRANSIENT_ERRORS,
            retry_backoff=1,
            retry_backoff_max=60,
            retry_jitter=True,
            max_retries=max_retries,
            bind=bind,
            **limits,
        )(fn)

    return decorate

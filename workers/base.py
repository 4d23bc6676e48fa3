"""The one task decorator: name, queue, limits, late acks and a retry policy for transient errors.

Transient = the database or Redis went away for a moment. Every job task is safe to retry because
the change and the job's completion commit together (backend.jobs.services.job_run).
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .celery import app

TRANSIENT_ERRORS = (OperationalError, InterfaceError, RedisConnectionError, RedisTimeoutError)


def records_task(name: str, *, queue: str = "default", time_limit: int | None = None, max_retries: int = 5):
    """`@records_task("requests.approve")`: a named, late-acked, retrying task on `queue`."""
    limits = {}
    if time_limit is not None:
        limits = {"time_limit": time_limit, "soft_time_limit": max(time_limit - 10, 1)}

    def decorate(fn: Callable) -> Callable:
        return app.task(
            name=name,
            queue=queue,
            acks_late=True,
            reject_on_worker_lost=True,
            autoretry_for=TRANSIENT_ERRORS,
            retry_backoff=1,
            retry_backoff_max=60,
            retry_jitter=True,
            max_retries=max_retries,
            **limits,
        )(fn)

    return decorate

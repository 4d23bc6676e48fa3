"""Control over where a job's task message goes, for tests that run their own workers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

from workers.celery import app as celery_app


@contextmanager
def enqueue_on(queue: str) -> Iterator[None]:
    """Jobs submitted inside the block send their task to `queue` instead of the default one.

    The message carries no time limits, as when Daphne sends it (it never imports workers.tasks):
    this test process has the tasks registered, and send_task would otherwise stamp its own
    settings' limits on the message, overriding those of the worker under test."""
    send_task = celery_app.send_task

    def send_to_queue(*args, **kw):
        return send_task(*args, queue=queue, time_limit=None, soft_time_limit=None, **kw)

    with mock.patch.object(celery_app, "send_task", send_to_queue):
        yield

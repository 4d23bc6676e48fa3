"""The delivery policy every task shares, checked on the configured Celery app (fast, no processes)."""

from __future__ import annotations

import re

from django.conf import settings

import workers.tasks  # noqa: F401 - registers the tasks
from workers.base import TRANSIENT_ERRORS, RecordsTask
from workers.celery import app

OUR_TASKS = sorted(name for name in app.tasks if not name.startswith("celery."))


def test_broker_and_result_backend_share_one_visibility_timeout():
    # given the configured app
    broker = app.conf.broker_transport_options
    results = app.conf.result_backend_transport_options

    # then both transports read the same visibility timeout, the one from settings
    assert broker["visibility_timeout"] == results["visibility_timeout"] == settings.CELERY_VISIBILITY_TIMEOUT


def test_no_task_outlives_the_visibility_timeout():
    # given the app's default hard limit and every task's own
    limits = {name: app.tasks[name].time_limit or app.conf.task_time_limit for name in OUR_TASKS}

    # then Redis never redelivers a task that is still running: every limit is below the timeout,
    # and soft limits stay positive and below the hard one
    assert all(limit < settings.CELERY_VISIBILITY_TIMEOUT for limit in limits.values()), limits
    assert 0 < app.conf.task_soft_time_limit < app.conf.task_time_limit


def test_every_task_is_named_queued_late_acked_and_retried_on_transient_errors():
    # given the tasks workers.tasks registers
    assert {"requests.approve", "requests.reject", "requests.send_back", "requests.resubmit",
            "crates.relocate", "outbox.sweep", "outbox.prune"} <= set(OUR_TASKS)

    for name in OUR_TASKS:
        task = app.tasks[name]
        # then each has a dotted name (what Flower shows), an explicit queue and the late-ack policy
        assert re.fullmatch(r"[a-z_]+\.[a-z_]+", name), name
        assert task.queue in {"default", "bulk"}, (name, task.queue)
        assert task.acks_late is True, name
        assert task.reject_on_worker_lost is True, name
        # and retries transient database / Redis errors with jittered backoff
        assert set(task.autoretry_for) == set(TRANSIENT_ERRORS), name
        assert task.retry_backoff and task.retry_jitter, name
        # and, failing for good, marks its job failed (RecordsTask.on_failure)
        assert isinstance(task, RecordsTask), name


def test_a_task_sent_by_name_reaches_the_queue_its_definition_declares():
    # given the router as the web process uses it: Daphne sends tasks by name and never imports
    # workers.tasks, so only the configured task_routes (not the task's `queue`) can route them
    router = app.amqp.router

    for name in OUR_TASKS:
        # then every task lands on the queue its definition declares (a worker with -Q listens there)
        queue = router.route({}, name, task_type=None)["queue"].name
        assert queue == app.tasks[name].queue, name

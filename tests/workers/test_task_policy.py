"""The delivery policy every task shares, checked on the configured Celery app (fast, no processes)."""

from __future__ import annotations

import re

from django.conf import settings

import workers.tasks  # noqa: F401 - registers the tasks
from backend.jobs import registry
from workers.base import TRANSIENT_ERRORS, RecordsTask
from workers.celery import app

OUR_TASKS = sorted(name for name in app.tasks if not name.startswith("celery."))


def test_broker_and_result_backend_share_one_visibility_timeout():
    # given a real broker channel of the configured app (kombu's Redis transport)
    with app.connection_for_write() as connection:
        channel = connection.default_channel

        # then the broker redelivers after the visibility timeout from settings, and the result
        # backend's options (read if a result backend is ever configured) say the same
        assert channel.visibility_timeout == settings.CELERY_VISIBILITY_TIMEOUT
    assert app.conf.result_backend_transport_options["visibility_timeout"] == settings.CELERY_VISIBILITY_TIMEOUT


def test_no_task_outlives_the_visibility_timeout():
    # given the app's default hard limit and every task's own
    limits = {name: app.tasks[name].time_limit or app.conf.task_time_limit for name in OUR_TASKS}

    # then Redis never redelivers a task that is still running: every limit is below the timeout,
    # and soft limits stay positive and below the hard one
    assert all(limit < settings.CELERY_VISIBILITY_TIMEOUT for limit in limits.values()), limits
    assert 0 < app.conf.task_soft_time_limit < app.conf.task_time_limit


def test_every_task_is_named_queued_late_acked_and_retried_on_transient_errors():
    # given the tasks workers.tasks registers: one per job kind, named after it, and the beat's
    beat = {"outbox.prune", "jobs.prune", "records.destruction_due", "records.audit_checkpoint", "records.audit_verify",
            "records.audit_review_due"}
    assert set(OUR_TASKS) == {kind.name for kind in registry.kinds()} | beat
    assert {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()} == beat
    assert {"withdrawal.approve", "transfer.send_back", "crate.relocate", "bulk.destruction.reject"} <= set(OUR_TASKS)

    for name in OUR_TASKS:
        task = app.tasks[name]
        # then each has a dotted name (what Flower shows) and the late-ack policy, and leaves routing to
        # the app's task_routes: no per-task queue or exchange (deprecated in Celery 5.x, ignored in 6.0)
        assert re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", name), name
        routing = {"queue", "exchange", "exchange_type", "routing_key", "delivery_mode", "priority"}
        declared = {attr for attr in routing if type(task).__dict__.get(attr) is not None}
        assert not declared, (name, declared)
        assert task.acks_late is True, name
        assert task.reject_on_worker_lost is True, name
        # and retries transient database / Redis errors with jittered backoff
        assert set(task.autoretry_for) == set(TRANSIENT_ERRORS), name
        assert task.retry_backoff and task.retry_jitter, name
        # and, failing for good, marks its job failed (RecordsTask.on_failure)
        assert isinstance(task, RecordsTask), name


def test_a_task_sent_by_name_reaches_the_queue_its_definition_declares():
    # given the router as the web process uses it: Daphne sends tasks by name and never imports
    # workers.tasks, so only the configured task_routes (the registry's) can route them
    router = app.amqp.router

    for name in OUR_TASKS:
        # then a job kind's task lands on its kind's queue, every other task on `default` (the worker
        # listens on both with -Q default,bulk)
        queue = router.route({}, name, task_type=None)["queue"].name
        kind = registry.find(name)
        assert queue == (kind.queue if kind else "default"), (name, queue)

"""The Celery app of the job queue, defined in the domain because the domain is what enqueues (from
the web process, which never imports the worker's code). The worker process (`workers/celery.py`)
runs this same app with one task registered per job kind.

Celery imports this module before Django is set up (its Django fix-up calls `django.setup()`
afterwards), so it imports nothing that needs models: only the settings' names and the registry's
router.
"""

from __future__ import annotations

from celery import Celery

from .registry import route

app = Celery("records")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    # Result backends read the visibility timeout from their own options: keep them equal.
    result_backend_transport_options=app.conf.broker_transport_options,
    # Where every task goes (tasks declare no queue of their own: that attribute is deprecated in
    # Celery 5.x): a job kind's task to its kind's queue; housekeeping tasks to `default`.
    task_routes=(route, {"outbox.*": {"queue": "default"}, "jobs.*": {"queue": "default"},
                         "records.*": {"queue": "default"}}),
    task_queues=None,
    worker_cancel_long_running_tasks_on_connection_loss=True,
)

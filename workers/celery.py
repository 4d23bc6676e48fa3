"""The Celery app, configured from Django settings (CELERY_* names)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.config.settings.base")

app = Celery("records")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    # Result backends read the visibility timeout from their own options: keep them equal.
    result_backend_transport_options=app.conf.broker_transport_options,
    task_routes={"outbox.*": {"queue": "default"}, "bulk.*": {"queue": "bulk"}},
    task_queues=None,
    worker_cancel_long_running_tasks_on_connection_loss=True,
)
app.autodiscover_tasks(["workers"], related_name="tasks")

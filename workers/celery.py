"""The Celery worker and beat entry point: `celery -A workers.celery worker|beat`.

The app itself is the domain's (`backend.jobs.celery_app.app`: configured from Django settings,
routed by the job-kind registry), so the web process can enqueue without importing this package. Here it
gets its tasks: `workers/tasks.py`, one per job kind plus the outbox sweeper and pruner.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.config.settings.base")

from backend.jobs.celery_app import app  # noqa: E402

app.autodiscover_tasks(["workers"], related_name="tasks")

__all__ = ["app"]

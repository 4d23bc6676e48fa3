"""The Celery worker and beat entry point: `celery -A workers.celery worker|beat`.

The app itself is the domain's (`backend.jobs.celery_app.app`: configured from Django settings,
routed by the job-kind registry), so the web process can enqueue without importing this package. Here it
gets its tasks: `workers/tasks.py`, one per job kind plus the hourly prunes. It also sends the
worker's heartbeat (for the sweeper of stranded jobs in the relay, `workers/relay.py`).
"""

from backend.common.entrypoint import require_settings_module

require_settings_module()

import logging  # noqa: E402

from celery import bootsteps  # noqa: E402
from django.conf import settings  # noqa: E402

from backend.jobs.celery_app import app  # noqa: E402
from backend.jobs.heartbeats import worker_alive, worker_gone  # noqa: E402

logger = logging.getLogger(__name__)

app.autodiscover_tasks(["workers"], related_name="tasks")


class Heartbeat(bootsteps.StartStopStep):
    """The worker tells the job sweeper it is alive, every WORKER_HEARTBEAT_SECONDS, from its main
    process: a job started by a worker that stopped beating is re-enqueued within a minute instead
    of waiting for the broker's visibility timeout."""

    requires = {"celery.worker.components:Timer"}

    def start(self, worker) -> None:
        self.timer = worker.timer.call_repeatedly(settings.WORKER_HEARTBEAT_SECONDS, self.beat, (worker.hostname,))
        self.beat(worker.hostname)

    def beat(self, hostname: str) -> None:
        try:
            worker_alive(hostname)
        except Exception:  # noqa: BLE001 - Redis away for a moment: the next beat tries again
            logger.warning("worker heartbeat not written", exc_info=True)

    def stop(self, worker) -> None:
        if getattr(self, "timer", None) is not None:
            self.timer.cancel()
        try:
            worker_gone(worker.hostname)
        except Exception:  # noqa: BLE001 - expires by itself
            pass


app.steps["worker"].add(Heartbeat)

__all__ = ["app"]

"""The Celery worker and beat entry point: `celery -A workers.celery worker|beat`.

The app itself is the domain's (`backend.jobs.celery_app.app`: configured from Django settings,
routed by the job-kind registry), so the web process can enqueue without importing this package. Here it
gets its tasks: `workers/tasks.py`, one per job kind plus the hourly prunes. It also sends the
worker's heartbeat (for the sweeper of stranded jobs in the relay, `workers/relay.py`).
"""

from backend.common.entrypoint import declare_process

declare_process("worker")

import logging  # noqa: E402

from celery import bootsteps  # noqa: E402
from celery.signals import task_postrun, task_prerun  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import close_old_connections  # noqa: E402

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


# Database connections live across tasks, as across a web server's requests: each task starts and
# ends like a request, with `close_old_connections()` (CONN_MAX_AGE, CONN_HEALTH_CHECKS), instead of
# Celery's Django fix-up closing every connection around every task (docs/performance.md, "Sustained
# state changes", has the cost). The fix-up still closes them every DB_REUSE_MAX tasks, as a backstop.
DB_REUSE_MAX = 1000
app.conf["CELERY_DB_REUSE_MAX"] = DB_REUSE_MAX  # the key the fix-up reads, as it spells it


@task_prerun.connect
@task_postrun.connect
def _task_database_connections(**_kwargs) -> None:
    close_old_connections()

__all__ = ["app"]

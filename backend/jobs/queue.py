"""The job queue as the domain uses it: enqueueing a job (its task, named after its kind, sent once
the job row has committed, through the Celery app of celery_app.py), and what the sweeper of
stranded jobs needs to know of the broker: which task ids it still holds. (Which workers are alive
is in heartbeats.py.)"""

from __future__ import annotations

import json
import logging
import time

from celery.signals import before_task_publish
from kombu.exceptions import OperationalError

from backend.common.errors import BrokerUnavailable
from backend.common.trace import TRACE_HEADER, trace_for_message, trace_stamp

from . import registry
from .celery_app import app
from .models import Job, JobStatus

logger = logging.getLogger(__name__)


BROKER_ERRORS = (OperationalError, OSError, TimeoutError)


def send(job: Job) -> None:
    """Send the task of `job` (task id = job id) to its kind's queue; raises when the broker
    cannot take it (after a few quick retries)."""
    # The request trace (issue 33) rides in the headers: the web side's stamps, for the worker.
    stamps = trace_for_message(job=str(job.id))
    app.send_task(
        job.kind,
        kwargs={"job_id": str(job.id)},
        task_id=str(job.id),
        headers={TRACE_HEADER: stamps} if stamps else None,
        # Flower shows this instead of a bare uuid: what is being done to what, by whom.
        kwargsrepr=repr({"job_id": str(job.id), "what": job.description or job.kind}),
        retry=True,
        retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
    )


@before_task_publish.connect(dispatch_uid="records-trace-enqueued")
def _trace_enqueued(sender=None, headers=None, **_kwargs) -> None:
    """The request trace's `enqueued`: the task's message is built and goes to the broker now."""
    stamps = (headers or {}).get(TRACE_HEADER)
    if isinstance(stamps, dict):
        stamps["enqueued"] = time.time()


def enqueue(job: Job) -> None:
    """Send a new job's task once its row has committed. If the broker cannot take it, the job row
    is removed again and BrokerUnavailable (503) is raised: nothing is left half-created."""
    trace_stamp("job_row_committed")
    try:
        send(job)
    except BROKER_ERRORS as exc:
        logger.error("job %s not enqueued, broker unavailable: %s", job.id, exc)
        Job.objects.filter(id=job.id, status=JobStatus.QUEUED).delete()
        raise BrokerUnavailable("The job queue is unavailable; nothing was changed. Try again shortly.") from exc


def broker_task_ids() -> tuple[set[str], set[str]]:
    """Task ids the broker holds: (waiting in a queue, delivered to a worker and not acknowledged).

    Read through the app's own broker channel (so a Sentinel setup works too) from kombu's Redis
    layout: one list per queue, and the `unacked` hash of delivered messages. O(queue length): the
    sweeper calls it only when some job looks stranded."""
    queues = {kind.queue for kind in registry.kinds()} | {app.conf.task_default_queue}
    unacked_key = app.conf.broker_transport_options.get("unacked_key", "unacked")
    with app.connection_for_read() as connection:
        client = connection.default_channel.client
        waiting = {_task_id(raw) for queue in queues for raw in client.lrange(queue, 0, -1)}
        delivered = {_task_id(json.loads(raw)[0]) for raw in client.hvals(unacked_key)}
    return waiting - {None}, delivered - {None}


def _task_id(message) -> str | None:
    try:
        payload = json.loads(message) if isinstance(message, bytes | str) else message
        return payload["headers"]["id"]
    except (ValueError, KeyError, TypeError):
        return None

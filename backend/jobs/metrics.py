"""Metrics of the job pipeline, read at scrape time: the Job table (jobs by kind and status, the oldest
queued job per queue), the broker (messages waiting in each Celery queue) and the workers'
heartbeats (keys Redis)."""

from __future__ import annotations

from django.db.models import Count, Min
from django.db.models.functions import Coalesce
from django.utils import timezone
from kombu.exceptions import ChannelError
from prometheus_client.core import GaugeMetricFamily

from backend.common.redis import keys_client

from . import registry
from .celery_app import app
from .heartbeats import WORKER_KEY, live_workers
from .models import Job, JobStatus


class JobsCollector:
    def collect(self):
        jobs = GaugeMetricFamily("records_jobs", "Jobs by kind and status", labels=["kind", "status"])
        for row in Job.objects.values("kind", "status").annotate(n=Count("id")):
            jobs.add_metric([row["kind"], row["status"]], row["n"])
        yield jobs


def job_queues() -> list[str]:
    """Every Celery queue a job can be sent to: the kinds' queues and the default one."""
    return sorted({kind.queue for kind in registry.kinds()} | {app.conf.task_default_queue})


def queue_of(kind: str) -> str:
    """The queue a kind's task is routed to (registry.route), the default queue for unknown kinds."""
    route = registry.route(kind, (), {}, {})
    return route["queue"] if route else app.conf.task_default_queue


def queue_depths(queues: list[str], timeout: float) -> dict[str, int]:
    """Messages waiting in each queue, as kombu's Redis transport counts them (`queue_declare`'s
    message count: LLEN of the queue's list and of one list per priority step, `<queue>\\x06\\x16<n>`).
    Through the app's own broker settings (Sentinel too), with short timeouts and no retries."""
    options = {
        **app.conf.broker_transport_options,
        "max_retries": 0,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }
    depths = {}
    with app.connection_for_read(connect_timeout=timeout, transport_options=options) as connection:
        channel = connection.default_channel
        for queue in queues:
            try:
                depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
            except ChannelError:  # no list left: kombu's Redis deletes a queue's lists when empty
                depths[queue] = 0
    return depths


class QueueDepthCollector:
    """records_job_queue_depth{queue}: read from the broker (Redis db 0)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    def collect(self):
        family = GaugeMetricFamily("records_job_queue_depth", "Jobs waiting in each Celery queue", labels=["queue"])
        for queue, depth in queue_depths(job_queues(), self.timeout).items():
            family.add_metric([queue], depth)
        yield family


class QueueAgeCollector:
    """records_job_queue_oldest_seconds{queue}: how long the oldest `queued` job of each queue has
    waited since its task was (last) sent (`enqueued_at`; the relay resets it when it sends a lost
    task again), 0 for an empty queue. From the Job table (index job_unfinished_idx)."""

    def collect(self):
        family = GaugeMetricFamily(
            "records_job_queue_oldest_seconds", "How long the oldest queued job of each queue has waited",
            labels=["queue"],
        )
        oldest: dict[str, object] = dict.fromkeys(job_queues())
        rows = (
            Job.objects.filter(status=JobStatus.QUEUED)
            .values("kind")
            .annotate(oldest=Min(Coalesce("enqueued_at", "created_at")))
        )
        for row in rows:
            queue = queue_of(row["kind"])
            if oldest.get(queue) is None or row["oldest"] < oldest[queue]:
                oldest[queue] = row["oldest"]
        now = timezone.now()
        for queue, since in sorted(oldest.items()):
            family.add_metric([queue], max((now - since).total_seconds(), 0.0) if since is not None else 0.0)
        yield family


class WorkersCollector:
    """records_workers: Celery workers whose heartbeat (workers/celery.py, every
    WORKER_HEARTBEAT_SECONDS, expiring after three missed) is current."""

    def collect(self):
        client = keys_client()
        names = {key.decode()[len(WORKER_KEY) :] for key in client.scan_iter(f"{WORKER_KEY}*", count=500)}
        yield GaugeMetricFamily("records_workers", "Workers whose heartbeat is current", value=len(live_workers(names)))

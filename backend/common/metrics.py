"""`GET /metrics`: Prometheus text for operators.

Every number is read at scrape time from where it is true for the whole deployment, not from one
process's memory: jobs and the outbox from the database; WebSocket numbers from the per-process
snapshots each Daphne hub writes to Redis every few seconds (realtime.hub). So one scrape of any
web process describes all of them. Flower keeps its own /metrics for Celery internals.

Protected: set METRICS_TOKEN and scrape with `Authorization: Bearer <METRICS_TOKEN>`; without a
token configured, only loopback clients in DEBUG may read it.
"""

from __future__ import annotations

import hmac
from statistics import quantiles

import redis
from django.conf import settings
from django.db.models import Count, Min, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import CollectorRegistry

from backend.common.redis import redis_from_url
from backend.events.models import OutboxEvent, UnitSequence
from backend.jobs.models import Job

REALTIME_KEY_PREFIX = "metrics:realtime:"
LAG_SAMPLE = 2000


class RecordsCollector:
    def collect(self):
        jobs = GaugeMetricFamily("records_jobs", "Jobs by kind and status", labels=["kind", "status"])
        for row in Job.objects.values("kind", "status").annotate(n=Count("id")):
            jobs.add_metric([row["kind"], row["status"]], row["n"])
        yield jobs

        written = UnitSequence.objects.aggregate(n=Sum("last_seq"))["n"] or 0
        backlog = OutboxEvent.objects.filter(published_at__isnull=True).aggregate(n=Count("id"), oldest=Min("created_at"))
        yield CounterMetricFamily("records_events_written", "Outbox events committed (all units)", value=written)
        yield CounterMetricFamily(
            "records_events_published", "Outbox events handed to the channel layer", value=written - backlog["n"]
        )
        yield GaugeMetricFamily("records_outbox_backlog", "Committed events not yet published", value=backlog["n"])
        age = (timezone.now() - backlog["oldest"]).total_seconds() if backlog["oldest"] else 0.0
        yield GaugeMetricFamily("records_outbox_oldest_unpublished_seconds", "Age of the oldest unpublished event", value=age)

        lag = GaugeMetricFamily(
            "records_commit_to_publish_seconds",
            f"Commit-to-publish lag over the last {LAG_SAMPLE} published events",
            labels=["quantile"],
        )
        recent = list(
            OutboxEvent.objects.filter(published_at__isnull=False)
            .order_by("-id")
            .values_list("created_at", "published_at")[:LAG_SAMPLE]
        )
        if len(recent) >= 2:
            seconds = sorted((p - c).total_seconds() for c, p in recent)
            cuts = quantiles(seconds, n=100, method="inclusive")
            for q, value in (("0.5", cuts[49]), ("0.99", cuts[98]), ("1", seconds[-1])):
                lag.add_metric([q], value)
        yield lag

        connections = GaugeMetricFamily("records_ws_connections", "Open WebSocket connections", labels=["process"])
        delivered = CounterMetricFamily(
            "records_ws_messages_delivered", "Frames written to WebSocket clients", labels=["process"]
        )
        client = redis_from_url(settings.KEYS_REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        try:
            for key in client.scan_iter(f"{REALTIME_KEY_PREFIX}*", count=500):
                snapshot = client.hgetall(key)
                process = key.decode()[len(REALTIME_KEY_PREFIX) :]
                connections.add_metric([process], float(snapshot.get(b"connections", 0)))
                delivered.add_metric([process], float(snapshot.get(b"delivered", 0)))
        except redis.RedisError:
            pass
        finally:
            client.close()
        yield connections
        yield delivered


def _allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if token:
        header = request.headers.get("Authorization", "")
        return hmac.compare_digest(header.encode(), f"Bearer {token}".encode())
    return settings.DEBUG and request.META.get("REMOTE_ADDR") in ("127.0.0.1", "::1")


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return HttpResponse("metrics need Authorization: Bearer <METRICS_TOKEN>\n", status=401, content_type="text/plain")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RecordsCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

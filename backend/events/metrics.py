"""Metrics of event delivery, read at scrape time from where they are true for the whole deployment:
the outbox (database) for what was committed and published, and the per-process snapshots each
Daphne hub writes to the keys Redis every few seconds for what reached WebSocket clients."""

from __future__ import annotations

from statistics import quantiles

import redis
from django.db.models import Count, Min, Sum
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from backend.common.redis import keys_client, keys_client_async

from .models import OutboxEvent, UnitSequence

REALTIME_KEY_PREFIX = "metrics:realtime:"
LAG_SAMPLE = 2000


async def realtime_snapshot_save(process: str, numbers: dict[str, float], ttl: float) -> None:
    """One Daphne process's numbers, kept `ttl` seconds (so a dead process drops out)."""
    client = keys_client_async()
    key = f"{REALTIME_KEY_PREFIX}{process}"
    await client.hset(key, mapping=numbers)
    await client.expire(key, int(ttl))


class OutboxCollector:
    def collect(self):
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


class RealtimeCollector:
    def collect(self):
        connections = GaugeMetricFamily("records_ws_connections", "Open WebSocket connections", labels=["process"])
        delivered = CounterMetricFamily(
            "records_ws_messages_delivered", "Frames written to WebSocket clients", labels=["process"]
        )
        filled = CounterMetricFamily(
            "records_ws_outbox_fills", "Events a hub read from the outbox because the push did not bring them",
            labels=["process"],
        )
        reaped = CounterMetricFamily(
            "records_ws_reaped_connections", "Connections a hub unregistered after finding them closed",
            labels=["process"],
        )
        client = keys_client()
        try:
            for key in client.scan_iter(f"{REALTIME_KEY_PREFIX}*", count=500):
                snapshot = client.hgetall(key)
                process = key.decode()[len(REALTIME_KEY_PREFIX) :]
                connections.add_metric([process], float(snapshot.get(b"connections", 0)))
                delivered.add_metric([process], float(snapshot.get(b"delivered", 0)))
                filled.add_metric([process], float(snapshot.get(b"filled", 0)))
                reaped.add_metric([process], float(snapshot.get(b"reaped", 0)))
        except redis.RedisError:
            pass
        yield from (connections, delivered, filled, reaped)

"""`GET /metrics`: Prometheus text for operators.

Every number is read at scrape time from where it is true for the whole deployment, not from one
process's memory (each app's collector says where), so one scrape of any web process describes all
of them. Flower keeps its own /metrics for Celery internals.

Protected: set METRICS_TOKEN and scrape with `Authorization: Bearer <METRICS_TOKEN>`; without a
token configured, only loopback clients in DEBUG may read it.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from backend.events.metrics import OutboxCollector, RealtimeCollector
from backend.jobs.metrics import JobsCollector

COLLECTORS = (JobsCollector, OutboxCollector, RealtimeCollector)


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
    for collector in COLLECTORS:
        registry.register(collector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

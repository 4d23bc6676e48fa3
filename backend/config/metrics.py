"""`GET /metrics`: Prometheus text for operators.

Every number is read at scrape time from where it is true for the whole deployment, not from one
process's memory (each app's collector says where), so one scrape of any web process describes all
of them. Flower keeps its own /metrics for Celery internals.

The scrape first probes Redis and the database with short timeouts (`records_redis_up`,
`records_database_up`), then runs only the collectors whose source answered: with Redis or
PostgreSQL down, /metrics still answers 200 with the probe at 0 and the rest it could read. A
collector that fails anyway is left out of that scrape (and logged), never a 500.

Protected: set METRICS_TOKEN and scrape with `Authorization: Bearer <METRICS_TOKEN>`; without a
token configured, only loopback clients in DEBUG may read it.
"""

from __future__ import annotations

import hmac
import logging
from urllib.parse import urlsplit

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import CollectorRegistry

from backend.accounts.models import Unit
from backend.audit.metrics import AuditCollector
from backend.common.redis import is_sentinel_url, redis_from_url
from backend.events.metrics import OutboxCollector, RealtimeCollector, RelayCollector
from backend.jobs.metrics import JobsCollector, QueueAgeCollector, QueueDepthCollector, WorkersCollector

logger = logging.getLogger(__name__)

# Each probe, and each broker read, gives up after this long: a scrape (Prometheus allows 10 s)
# stays well inside its timeout even with every backing service silently dropping packets.
PROBE_TIMEOUT_SECONDS = 2.0


def _allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if token:
        header = request.headers.get("Authorization", "")
        return hmac.compare_digest(header.encode(), f"Bearer {token}".encode())
    return settings.DEBUG and request.META.get("REMOTE_ADDR") in ("127.0.0.1", "::1")


# --- probes ---------------------------------------------------------------------------------------


def redis_answers(url: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    """PING through a client of its own (never a pooled connection that may be stale)."""
    client = None
    try:
        client = redis_from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - whatever the reason, the application cannot use it
        return False
    finally:
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass


def redis_roles_up(timeout: float = PROBE_TIMEOUT_SECONDS) -> dict[str, bool]:
    """Whether each Redis role answers: the broker, the channel layer, the short-lived keys. One
    PING per server (roles on one server share it), whatever their database number."""
    roles = {"broker": settings.CELERY_BROKER_URL, "channels": settings.CHANNEL_LAYER_URL, "keys": settings.KEYS_REDIS_URL}
    # The channel layer's other shards, if any: the layer needs every one of them.
    roles.update({f"channels-{n}": url for n, url in enumerate(settings.CHANNEL_LAYER_SHARD_URLS, start=2)})
    answers: dict[str, bool] = {}
    up = {}
    for role, url in roles.items():
        server = url if is_sentinel_url(url) else urlsplit(url)._replace(path="").geturl()
        if server not in answers:
            answers[server] = redis_answers(url, timeout)
        up[role] = answers[server]
    return up


def database_answers(connection=None, timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    """`SELECT 1` on a connection of its own with a connect timeout (PostgreSQL; libpq counts whole
    seconds, at least 2), so a database host that drops packets cannot hold the scrape; on SQLite
    (a local file) through Django's connection."""
    connection = connection or connections[DEFAULT_DB_ALIAS]
    try:
        if connection.vendor == "postgresql":
            params = connection.get_connection_params()
            params["connect_timeout"] = max(2, int(timeout + 0.5))
            options = f"-c statement_timeout={int(timeout * 1000)}"
            params["options"] = f"{params['options']} {options}" if params.get("options") else options
            with connection.Database.connect(**params) as probe:
                probe.execute("SELECT 1")
        else:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        return True
    except Exception:  # noqa: BLE001 - whatever the reason, the application cannot use it
        return False


class ProbeCollector:
    def __init__(self, redis_up: bool, database_up: bool) -> None:
        self.redis_up, self.database_up = redis_up, database_up

    def collect(self):
        yield GaugeMetricFamily(
            "records_redis_up", "1 when every Redis the application uses (broker, channel layer, keys) answers",
            value=int(self.redis_up),
        )
        yield GaugeMetricFamily("records_database_up", "1 when the application reaches its database", value=int(self.database_up))


# --- unit codes, for records_ws_unit_connections ---------------------------------------------------

_unit_codes: dict[str, str] = {}  # the last codes read, for scrapes while the database is down


def unit_codes_reader(database_up: bool):
    def read(unit_ids: list[str]) -> dict[str, str]:
        if database_up:
            _unit_codes.update((str(pk), code) for pk, code in Unit.objects.filter(id__in=unit_ids).values_list("id", "code"))
        return {unit_id: _unit_codes[unit_id] for unit_id in unit_ids if unit_id in _unit_codes}

    return read


# --- the view ---------------------------------------------------------------------------------------


class _Guarded:
    """A collector whose failure drops its families from this scrape instead of failing it."""

    def __init__(self, collector) -> None:
        self.collector = collector

    def collect(self):
        try:
            yield from self.collector.collect()
        except Exception:  # noqa: BLE001 - a degraded scrape beats no scrape
            logger.warning("metrics: %s failed", type(self.collector).__name__, exc_info=True)


def collectors(redis: dict[str, bool], database_up: bool) -> list:
    """The collectors whose sources answered the probes."""
    found: list = [ProbeCollector(all(redis.values()), database_up)]
    if database_up:
        found += [JobsCollector(), QueueAgeCollector(), OutboxCollector(), AuditCollector()]
    if redis["broker"]:
        found.append(QueueDepthCollector(timeout=PROBE_TIMEOUT_SECONDS))
    if redis["keys"]:
        found += [WorkersCollector(), RealtimeCollector(unit_codes=unit_codes_reader(database_up)), RelayCollector()]
    return found


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return HttpResponse("metrics need Authorization: Bearer <METRICS_TOKEN>\n", status=401, content_type="text/plain")
    redis = redis_roles_up()
    database_up = database_answers()
    if not database_up or not all(redis.values()):
        down = [role for role, up in redis.items() if not up] + ([] if database_up else ["database"])
        logger.warning("metrics: %s unreachable; their metrics are left out", ", ".join(down))
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors(redis, database_up):
        registry.register(_Guarded(collector))
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

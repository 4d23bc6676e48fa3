"""Metrics of event delivery, read at scrape time from where they are true for the whole deployment:
the outbox (database) for what was committed and published, the per-process snapshots each Daphne
hub writes to the keys Redis every few seconds for what reached WebSocket clients, and the relays'
heartbeats (keys Redis) for when each last finished a round."""

from __future__ import annotations

import os
import socket
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable
from statistics import quantiles

import redis
from django.db.models import Count, Min, Sum
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from backend.common.redis import keys_client, keys_client_async

from .models import OutboxEvent, UnitSequence

REALTIME_KEY_PREFIX = "metrics:realtime:"
RELAY_KEY_PREFIX = "metrics:relay:"
LAG_SAMPLE = 2000

# records_commit_to_client_seconds: Prometheus's default buckets (0.5 s, the alert's budget, is one).
COMMIT_TO_CLIENT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# Fields of a hub's snapshot (a Redis hash of numbers): one per bucket (`c2c:<le>`, not cumulative),
# the sum, one per unit (`unit:<unit id>`) and one per close code (`close:<code>`).
C2C_FIELD, C2C_SUM_FIELD, UNIT_FIELD, CLOSE_FIELD = "c2c:", "c2c_sum", "unit:", "close:"
# A relay's heartbeat outlives a few missed rounds: a stopped relay's series shows its last round
# for this long (RelayNotRunning fires on its age after 30 s), then disappears (the alert's
# `absent()` branch keeps it firing when no relay is left).
RELAY_HEARTBEAT_TTL_SECONDS = 300


class LatencyHistogram:
    """One process's commit-to-client histogram, kept in memory by the hub (single-threaded: the
    event loop's thread): a bisect and two additions per observation, no lock. Buckets are not
    cumulative here; the collector makes them so."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Iterable[float] = COMMIT_TO_CLIENT_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float, weight: int = 1) -> None:
        """`weight` observations of `seconds` (a negative value, clocks out of step, counts as 0)."""
        if seconds < 0:
            seconds = 0.0
        # le semantics: bucket i holds bounds[i-1] < seconds <= bounds[i]
        self.counts[bisect_left(self.bounds, seconds)] += weight
        self.total += seconds * weight

    def fields(self) -> dict[str, float]:
        les = [*(floatToGoString(b) for b in self.bounds), "+Inf"]
        numbers: dict[str, float] = {f"{C2C_FIELD}{le}": count for le, count in zip(les, self.counts, strict=True)}
        numbers[C2C_SUM_FIELD] = self.total
        return numbers


async def realtime_snapshot_save(process: str, numbers: dict[str, float], ttl: float) -> None:
    """One Daphne process's numbers, kept `ttl` seconds (so a dead process drops out). The hash is
    replaced as a whole (MULTI): fields of units that have no connections left do not linger."""
    client = keys_client_async()
    key = f"{REALTIME_KEY_PREFIX}{process}"
    async with client.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.hset(key, mapping=numbers)
        pipe.expire(key, int(ttl))
        await pipe.execute()


def relay_process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def relay_round_save(process: str, finished_at: float | None = None) -> None:
    """A relay finished a round (workers/relay.py): its heartbeat, the Unix time of that round."""
    keys_client().set(
        f"{RELAY_KEY_PREFIX}{process}", repr(time.time() if finished_at is None else finished_at),
        ex=RELAY_HEARTBEAT_TTL_SECONDS,
    )


RELAY_TASK_KEY_PREFIX = "metrics:relay-task:"


def relay_task_save(process: str, task: str, ok: bool, at: float | None = None) -> None:
    """One run of a relay task (workers/relay.py: `sweep`, `rescue`, `streams`): when it last
    succeeded, and how many of its runs failed. Each task has its own, so one failing never hides
    whether another still works."""
    key = f"{RELAY_TASK_KEY_PREFIX}{process}"
    pipe = keys_client().pipeline()
    if ok:
        pipe.hset(key, f"{task}:ok_at", repr(time.time() if at is None else at))
    else:
        pipe.hincrby(key, f"{task}:failures", 1)
    pipe.expire(key, RELAY_HEARTBEAT_TTL_SECONDS)
    pipe.execute()


def _float(raw: bytes | None) -> float:
    try:
        return float(raw) if raw is not None else 0.0
    except ValueError:
        return 0.0


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
    """The Daphne processes' snapshots, summed or labelled by process.

    Counters stay per process (label `process`) and are summed in PromQL (`sum by (code) (rate(...))`):
    summing them here would make the total drop whenever a process exits, which Prometheus reads as a
    counter reset and turns into a burst of phantom increases. Gauges (connections per unit) are
    summed here. `unit_codes` maps unit ids to their codes (the composition root passes it: this app
    sits below accounts); a unit it does not know keeps its id as the label."""

    def __init__(self, unit_codes: Callable[[list[str]], dict[str, str]] | None = None) -> None:
        self.unit_codes = unit_codes

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
        closes = CounterMetricFamily(
            "records_ws_error_closes",
            "WebSocket connections the server closed with an error or application close code",
            labels=["process", "code"],
        )
        latency = HistogramMetricFamily(
            "records_commit_to_client_seconds",
            "From an event's commit (its outbox timestamp) to its frame handed to a client connection's writer",
            labels=["process"],
        )
        per_unit: dict[str, float] = defaultdict(float)
        client = keys_client()
        try:
            for key in client.scan_iter(f"{REALTIME_KEY_PREFIX}*", count=500):
                snapshot = {k.decode(): v for k, v in client.hgetall(key).items()}
                if not snapshot:
                    continue  # expired between SCAN and HGETALL
                process = key.decode()[len(REALTIME_KEY_PREFIX) :]
                connections.add_metric([process], _float(snapshot.get("connections")))
                delivered.add_metric([process], _float(snapshot.get("delivered")))
                filled.add_metric([process], _float(snapshot.get("filled")))
                reaped.add_metric([process], _float(snapshot.get("reaped")))
                buckets: list[tuple[float, str, float]] = []
                for field, raw in snapshot.items():
                    if field.startswith(UNIT_FIELD):
                        per_unit[field[len(UNIT_FIELD) :]] += _float(raw)
                    elif field.startswith(CLOSE_FIELD):
                        closes.add_metric([process, field[len(CLOSE_FIELD) :]], _float(raw))
                    elif field.startswith(C2C_FIELD):
                        le = field[len(C2C_FIELD) :]
                        buckets.append((float(le), le, _float(raw)))
                if buckets:
                    buckets.sort()
                    cumulative, running = [], 0.0
                    for _, le, count in buckets:
                        running += count
                        cumulative.append((le, running))
                    latency.add_metric([process], cumulative, sum_value=_float(snapshot.get(C2C_SUM_FIELD)))
        except redis.RedisError:
            pass
        units = GaugeMetricFamily("records_ws_unit_connections", "Open WebSocket connections per unit", labels=["unit"])
        codes = self.unit_codes(sorted(per_unit)) if self.unit_codes is not None and per_unit else {}
        by_code: dict[str, float] = defaultdict(float)
        for unit_id, count in per_unit.items():
            by_code[codes.get(unit_id, unit_id)] += count
        for code, count in sorted(by_code.items()):
            units.add_metric([code], count)
        yield from (connections, units, delivered, filled, reaped, closes, latency)


class RelayCollector:
    """records_relay_last_round_timestamp_seconds: one series per relay process whose heartbeat has
    not expired (RELAY_HEARTBEAT_TTL_SECONDS after its last round)."""

    def collect(self):
        family = GaugeMetricFamily(
            "records_relay_last_round_timestamp_seconds",
            "When each relay process last finished a round (Unix time)",
            labels=["process"],
        )
        client = keys_client()
        keys = list(client.scan_iter(f"{RELAY_KEY_PREFIX}*", count=500))
        if keys:
            for key, value in zip(keys, client.mget(keys), strict=True):
                if value is not None:
                    family.add_metric([key.decode()[len(RELAY_KEY_PREFIX) :]], _float(value))
        yield family
        succeeded = GaugeMetricFamily(
            "records_relay_task_last_success_timestamp_seconds",
            "When each relay task (sweep, rescue, streams) last succeeded (Unix time)", labels=["process", "task"],
        )
        failures = CounterMetricFamily(
            "records_relay_task_failures", "Runs of each relay task that failed", labels=["process", "task"],
        )
        for key in client.scan_iter(f"{RELAY_TASK_KEY_PREFIX}*", count=500):
            process = key.decode()[len(RELAY_TASK_KEY_PREFIX) :]
            for field, value in sorted(client.hgetall(key).items()):
                task, _, what = field.decode().partition(":")
                (succeeded if what == "ok_at" else failures).add_metric([process, task], _float(value))
        yield from (succeeded, failures)

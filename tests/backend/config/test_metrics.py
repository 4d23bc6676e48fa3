"""/metrics: protected, and describing the whole deployment (database + every Daphne's snapshot)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta

import httpx
import pytest
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.test import override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from backend.accounts.models import Role
from backend.common.redis import keys_client
from backend.config.metrics import database_answers, redis_answers
from backend.events.metrics import (
    REALTIME_KEY_PREFIX,
    RELAY_HEARTBEAT_TTL_SECONDS,
    RELAY_KEY_PREFIX,
    LatencyHistogram,
    realtime_snapshot_save,
)
from backend.jobs import registry
from backend.jobs.celery_app import app as celery_app
from backend.jobs.heartbeats import worker_alive, worker_gone
from backend.jobs.models import Job, JobStatus
from backend.jobs.registry import JobKind
from backend.records import services
from bench import processes
from tests.support.auth import access_token
from tests.support.factories import UnitFactory, UserFactory
from tests.support.realtime import failed_connection, make_world, relocate_async
from tests.support.ws import collect_updates, connect, recv_json


@pytest.mark.django_db
def test_metrics_need_the_token(client):
    with override_settings(METRICS_TOKEN="s3cret"):
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200
    with override_settings(METRICS_TOKEN="", DEBUG=False):
        assert client.get("/metrics").status_code == 401


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_metrics_report_jobs_outbox_and_live_connections(client, daphne):
    # given a unit with one committed change and one client connected to the live Daphne
    unit = UnitFactory()
    store = UserFactory(unit=unit, role=Role.STORE)
    services.crate_create(actor=store, location="A1")

    async def hold_connection():
        ws = await connect(daphne, token=access_token(store))
        await recv_json(ws)
        await asyncio.sleep(2.5)  # the hub reports every REALTIME_REPORT_SECONDS (1 s here)
        body = await asyncio.to_thread(_scrape, client)
        await ws.close()
        return body

    # when the operator scrapes /metrics
    body = asyncio.run(hold_connection())

    # then the numbers are there, computed across processes
    assert "records_events_written_total 1.0" in body
    assert "records_events_published_total 1.0" in body
    assert "records_outbox_backlog 0.0" in body
    connections = [line for line in body.splitlines() if line.startswith("records_ws_connections{")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in connections) >= 1


def _scrape(client) -> str:
    from django.db import connection

    try:
        with override_settings(METRICS_TOKEN="t"):
            deadline = time.monotonic() + 10
            while True:
                body = client.get("/metrics", HTTP_AUTHORIZATION="Bearer t").content.decode()
                if "records_ws_connections{" in body or time.monotonic() > deadline:
                    return body
                time.sleep(0.5)
    finally:
        connection.close()


# --- helpers -----------------------------------------------------------------------------------------


def samples(body: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of a Prometheus text exposition, read by prometheus_client's own parser."""
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    ]


def total(body: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when there is none)."""
    return sum(v for n, found, v in samples(body) if n == name and labels.items() <= found.items())


def series(body: str, name: str) -> list[dict[str, str]]:
    return [labels for n, labels, _ in samples(body) if n == name]


def scrape(client, until=None, timeout: float = 10.0) -> str:
    """GET /metrics as Prometheus does (until `until(body)` holds, or `timeout`); usable from a thread."""
    from django.db import connection

    try:
        with override_settings(METRICS_TOKEN="t"):
            deadline = time.monotonic() + timeout
            while True:
                response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer t")
                assert response.status_code == 200, response.content[:500]
                body = response.content.decode()
                if until is None or until(body) or time.monotonic() > deadline:
                    return body
                time.sleep(0.2)
    finally:
        if threading.current_thread() is not threading.main_thread():
            connection.close()


def silent_listener() -> socket.socket:
    """A TCP port that accepts connections (the kernel completes the handshake) and never answers:
    a server that hangs, or a firewall that swallows the traffic."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener


# --- commit -> client latency, clients per unit, error closes: the hubs' snapshots ---------------------


def test_the_latency_histogram_puts_each_observation_in_its_le_bucket():
    histogram = LatencyHistogram((0.1, 0.5, 1.0))

    for seconds, weight in ((0.1, 1), (0.10001, 2), (-0.3, 1), (0.7, 1), (12.0, 4)):
        histogram.observe(seconds, weight)

    # le is inclusive; a negative value (clocks out of step) counts as 0; beyond the last bound is +Inf
    assert histogram.counts == [2, 2, 1, 4]
    assert histogram.fields() == {"c2c:0.1": 2, "c2c:0.5": 2, "c2c:1.0": 1, "c2c:+Inf": 4, "c2c_sum": pytest.approx(49.00002)}


@pytest.fixture
def snapshots():
    """`save(process, numbers)`: a hub snapshot in the keys Redis, removed after the test."""
    saved: list[str] = []

    def save(process: str, numbers: dict) -> None:
        saved.append(process)
        asyncio.run(realtime_snapshot_save(process, numbers, ttl=60))

    yield save
    keys_client().delete(*(f"{REALTIME_KEY_PREFIX}{process}" for process in saved))


@pytest.mark.django_db
def test_hub_snapshots_become_a_histogram_per_process_and_connections_summed_per_unit(client, snapshots):
    # given two Daphne processes' snapshots: their histograms, clients of two units (one of them
    # on both processes, one unit unknown to the database) and their error closes
    north, south = UnitFactory(code="north-m"), UnitFactory(code="south-m")
    gone = "00000000-0000-0000-0000-00000000dead"
    a = LatencyHistogram()
    for seconds in (0.003, 0.02, 0.02, 0.3, 20.0):
        a.observe(seconds)
    snapshots("metrics-test-a:1", {
        "connections": 4, "delivered": 10, "filled": 0, "reaped": 0, **a.fields(),
        f"unit:{north.id}": 3, f"unit:{gone}": 1, "close:4001": 2, "close:1011": 1,
    })
    snapshots("metrics-test-b:2", {
        "connections": 2, "delivered": 5, "filled": 1, "reaped": 0, **LatencyHistogram().fields(),
        f"unit:{north.id}": 1, f"unit:{south.id}": 1, "close:4001": 5,
    })

    # when Prometheus scrapes
    body = scrape(client)

    # then each process has a cumulative histogram ending in +Inf, with its sum and count
    buckets = {
        labels["le"]: value for name, labels, value in samples(body)
        if name == "records_commit_to_client_seconds_bucket" and labels["process"] == "metrics-test-a:1"
    }
    assert list(buckets)[0] == "0.005" and list(buckets)[-1] == "+Inf" and len(buckets) == 15
    assert (buckets["0.005"], buckets["0.025"], buckets["0.25"], buckets["0.5"], buckets["10.0"], buckets["+Inf"]) == (
        1, 3, 3, 4, 4, 5,
    )
    assert list(buckets.values()) == sorted(buckets.values())
    assert total(body, "records_commit_to_client_seconds_count", process="metrics-test-a:1") == 5
    assert total(body, "records_commit_to_client_seconds_sum", process="metrics-test-a:1") == pytest.approx(20.343)
    assert total(body, "records_commit_to_client_seconds_count", process="metrics-test-b:2") == 0
    # connections per unit are summed over processes, labelled with the unit's code (its id when the
    # unit is gone); error closes stay per process, by code, for PromQL to sum their rates
    assert total(body, "records_ws_unit_connections", unit="north-m") == 4
    assert total(body, "records_ws_unit_connections", unit="south-m") == 1
    assert total(body, "records_ws_unit_connections", unit=gone) == 1
    assert total(body, "records_ws_error_closes_total", process="metrics-test-a:1", code="4001") == 2
    assert total(body, "records_ws_error_closes_total", process="metrics-test-b:2", code="4001") == 5
    assert total(body, "records_ws_error_closes_total", code="1011") == 1

    # and when a process's clients of a unit have all left, its next snapshot no longer counts them
    snapshots("metrics-test-b:2", {"connections": 1, "delivered": 6, "filled": 1, "reaped": 0, f"unit:{north.id}": 1})
    body = scrape(client)
    assert total(body, "records_ws_unit_connections", unit="south-m") == 0
    assert total(body, "records_ws_unit_connections", unit="north-m") == 4


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_live_update_is_timed_from_its_commit_and_refused_clients_count_as_error_closes(client, daphne):
    # given a client of a unit connected to the live Daphne, and the numbers before
    world = make_world("metrics")
    before = scrape(client)

    def grew(body: str, name: str, **labels) -> float:
        return total(body, name, **labels) - total(before, name, **labels)

    def reported(body: str) -> bool:
        return (
            grew(body, "records_commit_to_client_seconds_count") >= 3
            and grew(body, "records_ws_error_closes_total", code="4001") >= 1
            and total(body, "records_ws_unit_connections", unit=world.unit.code) == 1
        )

    async def scenario():
        ws = await connect(daphne, token=world.token())
        await recv_json(ws)  # connection_established
        # when three changes commit and reach the client, and a client with a bad token is refused
        await relocate_async(world, 3)
        updates = await collect_updates(ws, 3)
        received = time.time()
        _, code = await failed_connection(daphne, token="not-a-jwt")
        after = await asyncio.to_thread(scrape, client, reported)
        await ws.close()
        return updates, received, code, after

    updates, received, code, after = asyncio.run(scenario())

    # then the histogram counted each update handed to the client, in plausible buckets, never later
    # than the client itself got it (both from the update's commit timestamp)
    assert code == 4001
    assert grew(after, "records_commit_to_client_seconds_count") == 3
    assert grew(after, "records_commit_to_client_seconds_bucket", le="1.0") == 3  # all within a second
    client_latency = sum(received - datetime.fromisoformat(update["timestamp"]).timestamp() for update in updates)
    assert 0 < grew(after, "records_commit_to_client_seconds_sum") <= client_latency
    # the client is counted for its unit (by code), and the refused one by its close code
    assert total(after, "records_ws_unit_connections", unit=world.unit.code) == 1
    assert grew(after, "records_ws_error_closes_total", code="4001") == 1


# --- the job queue and the workers ------------------------------------------------------------------


@pytest.fixture
def private_queue(monkeypatch):
    """A job kind of the test's own, routed to a queue no worker of the suite consumes."""
    queue = f"metrics-test-{uuid.uuid4().hex[:8]}"
    kind = JobKind(name=f"{queue}.kind", apply=lambda *args: {}, queue=queue)
    monkeypatch.setitem(registry._KINDS, kind.name, kind)
    yield kind
    with celery_app.connection_for_write() as connection:
        channel = connection.default_channel
        channel.client.delete(*(channel._q_for_pri(queue, priority) for priority in channel.priority_steps))


@pytest.mark.django_db
def test_queue_depth_counts_tasks_waiting_in_the_broker_and_age_comes_from_the_oldest_queued_job(client, private_queue):
    # given three tasks of the kind waiting in its queue (one sent with a priority: kombu keeps it in a
    # list of its own, `<queue>\x06\x163`), no worker consuming, and its oldest queued job sent 90 s ago
    unit = UnitFactory()
    user = UserFactory(unit=unit)
    now = timezone.now()
    for age in (90, 30):
        Job.objects.create(kind=private_queue.name, unit=unit, requested_by=user, enqueued_at=now - timedelta(seconds=age))
    Job.objects.create(
        kind=private_queue.name, unit=unit, requested_by=user, status=JobStatus.SUCCEEDED,
        enqueued_at=now - timedelta(hours=1),
    )
    for priority in (None, None, 5):
        celery_app.send_task(private_queue.name, kwargs={"job_id": str(uuid.uuid4())}, priority=priority)
    with celery_app.connection_for_write() as connection:
        assert connection.default_channel.client.llen(private_queue.queue) == 2  # not what a plain LLEN says

    # when Prometheus scrapes
    body = scrape(client)

    # then the queue's depth is every waiting task, and its age the oldest queued job's wait
    assert total(body, "records_job_queue_depth", queue=private_queue.queue) == 3
    assert 89 <= total(body, "records_job_queue_oldest_seconds", queue=private_queue.queue) < 100
    # every queue a job can go to is there, waiting or not
    assert {"default", "bulk", private_queue.queue} <= {labels["queue"] for labels in series(body, "records_job_queue_depth")}
    assert {"default", "bulk"} <= {labels["queue"] for labels in series(body, "records_job_queue_oldest_seconds")}


@pytest.mark.django_db
def test_workers_are_counted_by_their_current_heartbeats(client):
    # given the number of live workers, then one more worker's heartbeat (as workers/celery.py writes it)
    before = total(scrape(client), "records_workers")
    worker_alive("metrics-test@host")
    try:
        with_one = total(scrape(client), "records_workers")
    finally:
        worker_gone("metrics-test@host")  # what a worker does at a warm shutdown
    after = total(scrape(client), "records_workers")

    assert (with_one, after) == (before + 1, before)


# --- Redis and the database: probes, and /metrics while they are down ---------------------------------


@pytest.mark.django_db
def test_with_redis_unreachable_metrics_answer_with_redis_up_0_and_the_database_numbers(client):
    # given every Redis role pointed at a port nothing listens on
    closed = f"redis://127.0.0.1:{processes.free_port()}/0"
    healthy = scrape(client)
    with override_settings(CELERY_BROKER_URL=closed, CHANNEL_LAYER_URL=closed, KEYS_REDIS_URL=closed):
        # when Prometheus scrapes
        started = time.monotonic()
        body = scrape(client)
        elapsed = time.monotonic() - started

    # then it gets an answer (200) at once, with the probe at 0 and what the database can tell
    assert total(healthy, "records_redis_up") == 1 and total(healthy, "records_database_up") == 1
    assert total(body, "records_redis_up") == 0 and total(body, "records_database_up") == 1
    assert series(body, "records_jobs") is not None and "records_outbox_backlog" in body
    assert "records_workers" not in body and "records_job_queue_depth" not in body
    assert elapsed < 5


@pytest.mark.django_db
def test_a_channel_layer_shard_that_is_down_shows_as_redis_down(client):
    # given the channel layer sharded over a second Redis server that does not answer
    closed = f"redis://127.0.0.1:{processes.free_port()}/1"
    assert total(scrape(client), "records_redis_up") == 1
    with override_settings(CHANNEL_LAYER_SHARD_URLS=[closed]):
        body = scrape(client)
    # then Redis is not up: the layer needs every shard
    assert total(body, "records_redis_up") == 0


@pytest.mark.django_db
def test_the_probes_give_up_quickly_on_a_server_that_never_answers():
    # given a Redis and a database address whose server accepts connections and never answers
    listener = silent_listener()
    port = listener.getsockname()[1]
    database = connections[DEFAULT_DB_ALIAS]
    silent_database = database.__class__({**database.settings_dict, "HOST": "127.0.0.1", "PORT": str(port)}, "probe")
    assert redis_answers(settings.KEYS_REDIS_URL) and database_answers(database)  # the real ones answer
    try:
        # when they are probed
        started = time.monotonic()
        redis_up = redis_answers(f"redis://127.0.0.1:{port}/0", timeout=1.0)
        redis_seconds = time.monotonic() - started
        started = time.monotonic()
        database_up = database_answers(silent_database, timeout=1.0)
        database_seconds = time.monotonic() - started
    finally:
        listener.close()

    # then each is down once its timeout is over (libpq counts at least 2 s), not after TCP's minutes
    assert redis_up is False and 0.9 < redis_seconds < 2.5
    if database.vendor == "postgresql":  # (SQLite is a local file: no server to wait for)
        assert database_up is False and 1.9 < database_seconds < 4


@pytest.mark.integration
def test_a_web_process_whose_database_and_redis_are_down_still_answers_metrics(live_env, spawn_daphne):
    # given a web process whose database and Redis refuse connections
    closed = processes.free_port()
    proc, port = spawn_daphne(
        DATABASE_URL=f"postgres://records@127.0.0.1:{closed}/records",
        TEST_CELERY_BROKER_URL=f"redis://127.0.0.1:{closed}/0",
        TEST_CHANNEL_LAYER_URL=f"redis://127.0.0.1:{closed}/1",
        TEST_KEYS_REDIS_URL=f"redis://127.0.0.1:{closed}/2",
    )

    # when Prometheus scrapes it
    response = httpx.get(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {live_env['METRICS_TOKEN']}"}, timeout=20
    )

    # then it answers, both probes at 0
    assert response.status_code == 200, (response.status_code, proc.output()[-2000:])
    assert total(response.text, "records_redis_up") == 0
    assert total(response.text, "records_database_up") == 0


# --- the relay's heartbeat ----------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.django_db
def test_each_relay_reports_when_it_last_finished_a_round(client, live_env):
    # given a relay process
    started = time.time()
    relay = processes.start_relay(live_env, name="metrics-relay")
    process = f"{socket.gethostname()}:{relay.popen.pid}"
    try:
        # when Prometheus scrapes after its first rounds, and again a little later
        def reported(body: str) -> bool:
            return total(body, "records_relay_last_round_timestamp_seconds", process=process) > 0

        first = total(scrape(client, until=reported), "records_relay_last_round_timestamp_seconds", process=process)
        later = total(
            scrape(client, until=lambda body: total(body, "records_relay_last_round_timestamp_seconds", process=process) > first),
            "records_relay_last_round_timestamp_seconds", process=process,
        )
        ttl = keys_client().ttl(f"{RELAY_KEY_PREFIX}{process}")
    finally:
        relay.stop()

    # then the relay's series says when it finished a round, and it keeps moving with every round
    assert started < first < later <= time.time()
    # and a stopped relay's series expires (RelayNotRunning fires on its age, then on its absence)
    assert 0 < ttl <= RELAY_HEARTBEAT_TTL_SECONDS


@pytest.mark.django_db
def test_each_relay_task_reports_its_successes_and_failures_on_its_own(client):
    # given a relay whose sweep failed twice while its rescue and stream watch succeeded
    from backend.events.metrics import relay_task_save

    process = f"test-relay-{uuid.uuid4().hex[:8]}"
    relay_task_save(process, "sweep", ok=False)
    relay_task_save(process, "sweep", ok=False)
    relay_task_save(process, "rescue", ok=True, at=1_800_000_000.0)
    relay_task_save(process, "streams", ok=True, at=1_800_000_001.0)

    # when Prometheus scrapes
    body = scrape(client)

    # then each task has its own series
    assert total(body, "records_relay_task_failures_total", process=process, task="sweep") == 2
    assert total(body, "records_relay_task_last_success_timestamp_seconds", process=process, task="rescue") == 1_800_000_000.0
    assert total(body, "records_relay_task_last_success_timestamp_seconds", process=process, task="streams") == 1_800_000_001.0
    assert total(body, "records_relay_task_last_success_timestamp_seconds", process=process, task="sweep") == 0

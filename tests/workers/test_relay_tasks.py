"""The relay's tasks fail independently (workers/relay.py): the outbox sweep, the stranded-job rescue and
the stream watch each run on their own and report on their own, both ways: the rescue works while the
sweep's Redis is down, and the sweep works while the rescue's broker is down."""

from __future__ import annotations

import socket
import time
from datetime import timedelta
from unittest import mock

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from backend.accounts.models import Role
from backend.events.metrics import RELAY_TASK_KEY_PREFIX
from backend.events.models import OutboxEvent
from backend.jobs.models import Job, JobStatus
from backend.records import services
from bench import processes
from tests.support.factories import CrateFactory, UnitFactory, UserFactory
from tests.support.pipeline import wait_until
from tests.workers.test_outages import FAST_RESCUE, _finished, _post

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _task_numbers(pid: int) -> dict[str, float]:
    client = redis.Redis.from_url(settings.KEYS_REDIS_URL)
    try:
        raw = client.hgetall(f"{RELAY_TASK_KEY_PREFIX}{socket.gethostname()}:{pid}")
        return {k.decode(): float(v) for k, v in raw.items()}
    finally:
        client.close()


def test_the_rescue_still_rescues_while_the_sweeps_redis_is_down(live_env, redis_server, own_processes):
    # given an event that committed but was never published (its publish failed)
    unit = UnitFactory()
    store = UserFactory(unit=unit, role=Role.STORE)
    crate, other = CrateFactory(unit=unit), CrateFactory(unit=unit)
    with mock.patch("backend.events.outbox.unit_events_send", side_effect=ConnectionError("layer away")):
        services.crate_relocate(actor=store, crate_id=other.id, location="Unpublished")
    assert OutboxEvent.objects.filter(unit=unit, published_at__isnull=True).count() == 1
    # and a job whose message the broker lost (queued through a Daphne on a broker of the test's own)
    env = {**live_env, **FAST_RESCUE, "TEST_CELERY_BROKER_URL": redis_server.url(0)}
    daphne, port = processes.start_daphne(env)
    own_processes.append(daphne)
    job_id = _post(port, f"/api/crates/{crate.id}/relocate/", store, {"location": "Vault 7"}).json()["job"]["id"]
    redis.Redis.from_url(redis_server.url(0)).flushdb()

    # when the relay runs with the sweep's Redis (the channel layer) down, and a worker runs
    dead_layer = f"redis://127.0.0.1:{processes.free_port()}/1"
    relay = processes.start_relay({**env, "TEST_CHANNEL_LAYER_URL": dead_layer})
    own_processes.append(relay)
    own_processes.append(processes.start_worker(env, name="rescued"))

    # then the rescue re-enqueued the job and it ran, while the sweep kept failing
    job = wait_until(lambda: _finished(job_id), 40, "the lost job to run")
    assert job.status == JobStatus.SUCCEEDED
    assert f"re-enqueued 1 stranded jobs: {job_id}" in relay.output()
    assert "relay sweep failed" in relay.output()
    assert OutboxEvent.objects.filter(unit=unit, published_at__isnull=True, object_id=other.id).count() == 1
    # and each task reports on its own: the sweep's failures, the rescue's and the watch's successes
    numbers = wait_until(
        lambda: (n := _task_numbers(relay.popen.pid)).get("sweep:failures", 0) >= 2 and "rescue:ok_at" in n and n,
        20, "the relay's task metrics",
    )
    assert "sweep:ok_at" not in numbers
    assert numbers["rescue:ok_at"] > 0 and numbers["streams:ok_at"] > 0


def test_the_sweep_still_publishes_while_the_broker_is_down(live_env, own_processes, listen):
    # given a job that looks stranded (queued long ago, its message gone): the rescue must ask the broker
    unit = UnitFactory()
    store = UserFactory(unit=unit, role=Role.STORE)
    crate = CrateFactory(unit=unit)
    Job.objects.create(kind="crate.relocate", unit=unit, requested_by=store, targets=[str(crate.id)],
                       enqueued_at=timezone.now() - timedelta(hours=1))
    # when the relay runs with its broker down (nothing listens on that port)
    dead_broker = f"redis://127.0.0.1:{processes.free_port()}/0"
    relay = processes.start_relay({**live_env, **FAST_RESCUE, "TEST_CELERY_BROKER_URL": dead_broker})
    own_processes.append(relay)
    wait_until(lambda: _task_numbers(relay.popen.pid).get("rescue:failures", 0) >= 1, 20, "a failed rescue")
    # and then an event commits whose publish fails (its process died after COMMIT, say)
    listener = listen(units=[unit.id])
    with mock.patch("backend.events.outbox.unit_events_send", side_effect=ConnectionError("layer away")):
        services.crate_relocate(actor=store, crate_id=crate.id, location="Stranded")
    stranded_at = time.time()
    event = OutboxEvent.objects.get(unit=unit, object_id=crate.id)

    # then the sweep publishes it all the same: its row is marked and its frame reaches the unit's group
    wait_until(lambda: OutboxEvent.objects.get(id=event.id).published_at is not None, 20, "the sweep to publish it")
    assert [f["seq"] for f in listener.wait_frames(unit.id, 1)] == [event.seq]
    assert "relay rescue failed" in relay.output()
    # and each task's metric says which works: the sweep succeeded since, the rescue never did
    numbers = wait_until(
        lambda: (n := _task_numbers(relay.popen.pid)).get("rescue:failures", 0) >= 2
        and n.get("sweep:ok_at", 0) > stranded_at and n,
        20, "the relay's task metrics",
    )
    assert "rescue:ok_at" not in numbers and "sweep:failures" not in numbers
    assert numbers["streams:ok_at"] > stranded_at

"""Redis Sentinel: REDIS_SENTINELS + REDIS_SENTINEL_MASTER turn every Redis role (Celery broker,
channel layer, WebSocket tickets) into clients of whichever server the sentinels name master.

The mapping is checked in fresh processes (settings are read once per process); then a real
sentinel in front of a redis-server of our own carries a whole job: ticket, handshake, enqueue,
the worker, the broadcast, and the same again after the sentinels fail the master over."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import httpx
import pytest
import redis

from backend.jobs.models import Job, JobStatus
from backend.records.models import RequestStatus, WithdrawalRequest
from bench import processes
from tests.support.deploy import ROOT, make_approver, production_secrets
from tests.support.factories import PASSWORD, CrateFactory, UserFactory, make_request
from tests.support.signing import signed
from tests.support.ws import connect, recv_json, recv_until

MASTER = "records-master"

DUMP_SETTINGS = """
import json
import django
django.setup()
from django.conf import settings
from channels_redis.utils import create_pool
from kombu import Connection

host = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]
broker = Connection(settings.CELERY_BROKER_URL, transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS)
print(json.dumps({
    "broker_url": settings.CELERY_BROKER_URL,
    "broker_options": settings.CELERY_BROKER_TRANSPORT_OPTIONS,
    "broker_transport": broker.transport_cls,
    "layer_host": host,
    "layer_pool": type(create_pool(host)).__name__,
    "keys_url": settings.KEYS_REDIS_URL,
}, default=list))
"""


def dump_settings(**env: str) -> dict:
    """Settings as a fresh process with this environment reads them (nothing connects to Redis)."""
    clean = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    result = subprocess.run(
        [sys.executable, "-c", DUMP_SETTINGS], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**clean, "DJANGO_SETTINGS_MODULE": "backend.config.settings.base", **env},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


LAYER_OPTIONS = {
    "max_connections": 10_000,
    "socket_timeout": None,
    "socket_connect_timeout": 5,
    "socket_keepalive": True,
    "health_check_interval": 30,
    "retry_on_timeout": True,
}


def test_without_sentinels_every_role_keeps_its_redis_url():
    found = dump_settings(REDIS_URL="redis://cache.internal:6379")

    assert found["broker_url"] == "redis://cache.internal:6379/0"
    assert found["broker_transport"] == "redis"
    assert "master_name" not in found["broker_options"]
    assert found["layer_host"] == {"address": "redis://cache.internal:6379/1", **LAYER_OPTIONS}
    assert found["layer_pool"] == "ConnectionPool"
    assert found["keys_url"] == "redis://cache.internal:6379/2"


def test_sentinels_map_to_the_broker_the_channel_layer_and_the_keys():
    found = dump_settings(
        REDIS_URL="redis://ignored:6379", REDIS_SENTINELS="sentinel-a:26379, sentinel-b:26380", REDIS_SENTINEL_MASTER=MASTER
    )

    sentinel_kwargs = {"socket_timeout": 5, "socket_connect_timeout": 5}
    assert found["broker_url"] == "sentinel://sentinel-a:26379/0;sentinel://sentinel-b:26380/0"
    assert found["broker_transport"] == "sentinel"
    assert found["broker_options"]["master_name"] == MASTER
    assert found["broker_options"]["sentinel_kwargs"] == sentinel_kwargs
    assert found["broker_options"]["visibility_timeout"] == 900  # the rest of the options stay
    assert found["layer_host"] == {
        "sentinels": [["sentinel-a", 26379], ["sentinel-b", 26380]],
        "master_name": MASTER,
        "sentinel_kwargs": sentinel_kwargs,
        "db": 1,
        **LAYER_OPTIONS,
    }
    assert found["layer_pool"] == "SentinelConnectionPool"
    assert found["keys_url"] == "sentinel://sentinel-a:26379/2;sentinel://sentinel-b:26380/2"


def test_sentinel_passwords_go_to_the_master_and_to_the_sentinels():
    found = dump_settings(
        REDIS_SENTINELS="sentinel-a", REDIS_PASSWORD="p@ss word/1", REDIS_SENTINEL_PASSWORD="sentinel-secret"
    )

    assert found["broker_url"] == "sentinel://:p%40ss%20word%2F1@sentinel-a:26379/0"
    assert found["broker_options"]["master_name"] == "mymaster"
    assert found["broker_options"]["sentinel_kwargs"]["password"] == "sentinel-secret"
    assert found["layer_host"]["password"] == "p@ss word/1"
    assert found["layer_host"]["sentinel_kwargs"]["password"] == "sentinel-secret"
    assert found["layer_host"]["sentinels"] == [["sentinel-a", 26379]]


# --- a real sentinel ------------------------------------------------------------------------------


class SentinelCluster:
    """A master, a replica and one sentinel (quorum 1) on free ports, without persistence, their
    files in `workdir`."""

    def __init__(self, workdir) -> None:
        self.workdir = workdir
        self.master_port, self.replica_port, self.sentinel_port = (processes.free_port() for _ in range(3))
        self.procs: list[processes.LiveProcess] = []

    def _redis(self, port: int, *extra: str) -> None:
        # --dir: a replica writes the master's snapshot to disk while it syncs
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.workdir), *extra]
        proc = processes.LiveProcess(f"sentinel-redis-{port}", args, {})
        self.procs.append(proc)
        processes.wait_for_port(port, proc=proc)

    def start(self) -> None:
        self._redis(self.master_port)
        self._redis(self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
        conf = self.workdir / "sentinel.conf"  # the sentinel rewrites its own config file
        conf.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.master_port} 1\n"
            f"sentinel down-after-milliseconds {MASTER} 2000\n"
            f"sentinel failover-timeout {MASTER} 10000\n"
        )
        proc = processes.LiveProcess("sentinel", ["redis-server", str(conf), "--sentinel"], {})
        self.procs.append(proc)
        processes.wait_for_port(self.sentinel_port, proc=proc)
        self.wait_until(lambda: self.replicas_known() >= 1, "the sentinel to discover the replica")

    def sentinel(self) -> redis.Redis:
        return redis.Redis(port=self.sentinel_port, socket_timeout=5, decode_responses=True)

    def master_address(self) -> tuple[str, int]:
        host, port = self.sentinel().sentinel_get_master_addr_by_name(MASTER)
        return host, int(port)

    def replicas_known(self) -> int:
        return len([r for r in self.sentinel().sentinel_slaves(MASTER) if "s_down" not in r["flags"]])

    def role(self, port: int) -> str:
        return redis.Redis(port=port, socket_timeout=5).info("replication")["role"]

    def failover(self) -> None:
        """Promote the replica (SENTINEL FAILOVER) and wait until the sentinel names it and the old
        master has been turned into its replica (read-only: a write there fails from then on)."""
        self.sentinel().execute_command("SENTINEL", "FAILOVER", MASTER)
        self.wait_until(lambda: self.master_address()[1] == self.replica_port, "the failover")
        self.wait_until(lambda: self.role(self.replica_port) == "master", "the promotion")
        self.wait_until(lambda: self.role(self.master_port) == "slave", "the old master's demotion")

    @staticmethod
    def wait_until(predicate, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.2)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture
def sentinel_cluster(tmp_path):
    cluster = SentinelCluster(tmp_path)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_job_runs_end_to_end_through_the_sentinel_and_again_after_a_failover(live_env, sentinel_cluster, tmp_path):
    # given web (Daphne) and a worker with production settings that know only the sentinel
    env = {k: v for k, v in live_env.items() if not k.startswith(("TEST_", "CELERY_", "CHANNEL_LAYER", "KEYS_REDIS"))}
    env.update(
        DJANGO_SETTINGS_MODULE="backend.config.settings.production",
        **production_secrets(),
        ALLOWED_HOSTS="localhost",
        REDIS_URL="redis://127.0.0.1:1",  # nothing listens here: everything must go through the sentinel
        REDIS_SENTINELS=f"127.0.0.1:{sentinel_cluster.sentinel_port}",
        REDIS_SENTINEL_MASTER=MASTER,
        CELERY_UNACKED_RESTORE_SECONDS="1",
        TRUSTED_PROXIES="127.0.0.1",  # this test plays the TLS proxy (X-Forwarded-Proto: https)
    )
    web, port = processes.start_daphne(env)
    worker = processes.start_worker(env, name="sentinel")
    unit, approver, _ = make_approver("sentinel")
    requester = UserFactory(unit=unit, role="requester")
    requests = [make_request("withdrawal", requester, [CrateFactory(unit=unit)]) for _ in range(2)]
    https = {"Host": "localhost", "X-Forwarded-Proto": "https"}

    async def approve_and_watch(http: httpx.AsyncClient, auth: dict, request) -> tuple[dict, dict, dict]:
        ticket = (await http.post("/api/auth/ws-ticket/", headers=auth)).json()["ticket"]
        ws = await connect(port, origin="https://localhost", ticket=ticket)
        hello = await recv_json(ws, 20)
        answer = await http.post(f"/api/withdrawal-requests/{request.id}/approve/", headers=auth, json=signed("approve"))
        assert answer.status_code == 202, answer.text
        update = await recv_until(ws, "data_update", timeout=30)
        await ws.close()
        return hello, update, answer.json()["job"]

    async def scenario():
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30, headers=https) as http:
            tokens = (await http.post("/api/auth/token/", json={"username": approver.username, "password": PASSWORD})).json()
            auth = {"Authorization": f"Bearer {tokens['access']}"}
            before = await approve_and_watch(http, auth, requests[0])
            await asyncio.to_thread(sentinel_cluster.failover)
            after = await approve_and_watch(http, auth, requests[1])
            # /metrics reads the realtime gauges from the keys Redis, through the sentinel too
            metrics = await http.get("/metrics", headers={"Authorization": f"Bearer {env['METRICS_TOKEN']}"})
            return before, after, metrics

    try:
        # when a request is approved (ticket, handshake, job, broadcast), the master fails over,
        # and a second request is approved
        before, after, metrics = asyncio.run(scenario())
    finally:
        worker.stop()
        web.stop()

    # then both went all the way through, each on the master of its time
    for (hello, update, job), request in zip((before, after), requests, strict=True):
        assert hello["type"] == "connection_established" and hello["unit_id"] == str(unit.id)
        assert update["entity"] == "withdrawal" and update["data"]["id"] == str(request.id)
        assert update["seq"] == hello["seq"] + 1
        assert Job.objects.get(id=job["id"]).status == JobStatus.SUCCEEDED
        assert WithdrawalRequest.objects.get(id=request.id).status == RequestStatus.APPROVED
    # and the second one went through the promoted replica (the old master was read-only by then)
    assert sentinel_cluster.master_address() == ("127.0.0.1", sentinel_cluster.replica_port)
    assert sentinel_cluster.role(sentinel_cluster.master_port) == "slave"
    assert metrics.status_code == 200 and "records_ws_connections" in metrics.text

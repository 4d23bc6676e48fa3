"""Scale-out on one machine: two Daphne processes, two Celery workers and the relay on one Redis and one
PostgreSQL, as `docker compose up --scale web=2 --scale worker=2` runs them.

Forty WebSocket clients (two units, ten of each on each Daphne) follow a stream of relocations and
approvals run as jobs. One Daphne is killed with SIGKILL and its clients resume on the other with
`last_seq`; one worker is killed with SIGKILL in the middle of a job, which Redis hands to the other
worker after the visibility timeout. Every client must see every update of its unit exactly once,
in seq order, and every job must succeed exactly once."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass, field

import pytest
import websockets
from django.conf import settings
from django.db import transaction

from backend.accounts.models import Role
from backend.events.models import UnitSequence
from backend.jobs import registry
from backend.jobs.models import Job, JobStatus
from backend.jobs.services import job_submit
from backend.records.models import Crate
from bench import processes
from tests.support.auth import access_token
from tests.support.deploy import in_own_connection
from tests.support.factories import CrateFactory, UnitFactory, UserFactory, make_request
from tests.support.queues import enqueue_on
from tests.support.signing import sign
from tests.support.ws import connect

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.skipif(
        not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
        reason="concurrent workers on row locks need PostgreSQL (SQLite serialises writers)",
    ),
    pytest.mark.django_db(transaction=True),
]

CLIENTS_PER_UNIT_PER_DAPHNE = 10
# The workers under test: a task whose worker died goes back to the queue after 12 s (the hard time
# limit stays below it, as in production) and the survivors look for such tasks every second.
WORKER_ENV = {"CELERY_TASK_TIME_LIMIT": "10", "CELERY_VISIBILITY_TIMEOUT": "12", "CELERY_UNACKED_RESTORE_SECONDS": "1"}


@dataclass
class Scene:
    unit_id: str
    store: object
    approver: object
    viewers: list  # whose clients watch (no job_update messages of their own), a few sockets each
    crates: list[Crate]  # relocated
    requests: list  # pending withdrawals, one crate each


def make_scene(code: str) -> Scene:
    unit = UnitFactory(code=code)
    requester = UserFactory(unit=unit, role=Role.REQUESTER)
    return Scene(
        unit_id=str(unit.id),
        store=UserFactory(unit=unit, role=Role.STORE),
        approver=UserFactory(unit=unit, role=Role.APPROVER),
        viewers=[UserFactory(unit=unit, role=Role.REQUESTER) for _ in range(CLIENTS_PER_UNIT_PER_DAPHNE)],
        crates=[CrateFactory(unit=unit) for _ in range(4)],
        requests=[make_request("withdrawal", requester, [CrateFactory(unit=unit)]) for _ in range(3)],
    )


def unit_seq(unit_id: str) -> int:
    return UnitSequence.objects.get(unit_id=unit_id).last_seq


@dataclass
class Client:
    """A WebSocket client that records every seq it is sent and, when its Daphne dies, resumes on
    the other one with the last seq it saw."""

    unit_id: str
    token: str
    port: int
    fallback: int
    start: int = -1
    last: int = -1
    seqs: list[int] = field(default_factory=list)
    other: list[dict] = field(default_factory=list)  # anything but data_update (must stay empty)
    resumed_on: list[int] = field(default_factory=list)
    ws: object = None

    async def open(self) -> None:
        query = {"token": self.token} if self.start < 0 else {"token": self.token, "last_seq": self.last}
        self.ws = await connect(self.port, **query)
        hello = json.loads(await asyncio.wait_for(self.ws.recv(), 20))
        assert hello["type"] == "connection_established" and hello["unit_id"] == self.unit_id, hello
        if self.start < 0:
            self.start = self.last = hello["seq"]

    async def follow(self) -> None:
        """Until cancelled: take updates, and resume on the fallback Daphne when the socket dies."""
        while True:
            try:
                message = json.loads(await self.ws.recv())
            except websockets.ConnectionClosed:
                self.port, self.fallback = self.fallback, self.port
                self.resumed_on.append(self.port)
                deadline = time.monotonic() + 20
                while True:
                    try:
                        await self.open()
                        break
                    except (OSError, websockets.WebSocketException, TimeoutError):
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.2)
                continue
            if message["type"] == "data_update":
                self.seqs.append(message["seq"])
                self.last = message["seq"]
            else:
                self.other.append(message)


def submit(queue: str, jobs: list[tuple]) -> list[str]:
    """Submit jobs (through the same service the API calls) to the test's own queue."""
    ids = []
    with enqueue_on(queue):
        for actor, kind, target, params in jobs:
            params = params() if callable(params) else params  # (signed here, in this thread's connection)
            ids.append(str(job_submit(actor=actor, kind=registry.get(kind), targets=[target], params=params).id))
    return ids


def relocation(scene: Scene, index: int, location: str) -> tuple:
    return (scene.store, "crate.relocate", scene.crates[index].id, {"location": location})


def approval(scene: Scene, index: int) -> tuple:
    return (scene.approver, "withdrawal.approve", scene.requests[index].id,
            lambda: {"signature_id": str(sign(scene.approver, "withdrawal", "approve")),
                     "versions": {str(scene.requests[index].id): 1}})


def hold_row_lock(crate_id, locked: threading.Event, release: threading.Event) -> None:
    """Keep crate `crate_id` locked (SELECT ... FOR UPDATE) until `release` is set."""
    with transaction.atomic():
        Crate.objects.select_for_update().get(id=crate_id)
        locked.set()
        release.wait(60)


def wait_for(predicate, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def test_clients_and_jobs_survive_losing_a_daphne_and_a_worker(live_env):
    # given two units with crates and pending requests
    a, b = make_scene(f"scale{uuid.uuid4().hex[:6]}a"), make_scene(f"scale{uuid.uuid4().hex[:6]}b")
    start_seq = {s.unit_id: unit_seq(s.unit_id) for s in (a, b)}
    doomed_crate = a.crates[3]
    doomed_version = doomed_crate.version
    # and two Daphnes, two workers on a queue of the test's own (plus default), the relay
    queue = f"scale-{uuid.uuid4().hex[:10]}"
    started: list[processes.LiveProcess] = []
    try:
        d1, port1 = processes.start_daphne(live_env)
        started.append(d1)
        d2, port2 = processes.start_daphne(live_env)
        started.append(d2)
        workers = [
            processes.start_worker({**live_env, **WORKER_ENV}, name=f"scale{i}", queues=f"{queue},default")
            for i in (1, 2)
        ]
        started += workers
        started.append(processes.start_relay(live_env))

        clients = [
            Client(s.unit_id, access_token(s.viewers[i]), port, other_port)
            for s in (a, b)
            for port, other_port in ((port1, port2), (port2, port1))
            for i in range(CLIENTS_PER_UNIT_PER_DAPHNE)
        ]
        submitted: list[str] = []
        doomed_job: list[str] = []
        killed_worker: list[processes.LiveProcess] = []
        client_errors: list[BaseException] = []

        async def scenario() -> None:
            await asyncio.gather(*(c.open() for c in clients))
            followers = [asyncio.create_task(c.follow()) for c in clients]
            try:
                # when jobs flow through both workers to clients on both Daphnes
                submitted.extend(await asyncio.to_thread(in_own_connection, submit, queue, [
                    relocation(a, 0, "A1"), relocation(b, 0, "B1"), approval(a, 0), approval(b, 0),
                    relocation(a, 1, "A2"), relocation(b, 1, "B2"),
                ]))
                # and the first Daphne is killed while more jobs are being submitted
                d1.kill()
                submitted.extend(await asyncio.to_thread(in_own_connection, submit, queue, [
                    relocation(a, 2, "A3"), approval(b, 1), relocation(b, 2, "B3"), approval(a, 1),
                ]))
                # and, once the jobs so far have ended (a unit's relocations are applied in batches: the
                # doomed job must not share the killed worker's batch with an earlier one, whose second
                # attempt would then be this drill's doing too), a worker is killed in the middle of a
                # job (it waits on a row lock held here)
                def ended(ids: list[str]) -> bool:
                    return not Job.objects.filter(id__in=ids).exclude(
                        status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED]
                    ).exists()

                await asyncio.to_thread(
                    wait_for, lambda: in_own_connection(lambda: ended(submitted)), "the jobs so far to end", 60
                )
                locked, release = threading.Event(), threading.Event()
                holder = threading.Thread(
                    target=in_own_connection, args=(hold_row_lock, doomed_crate.id, locked, release), daemon=True
                )
                holder.start()
                assert await asyncio.to_thread(locked.wait, 20)
                doomed_job.extend(await asyncio.to_thread(
                    in_own_connection, submit, queue, [relocation(a, 3, "A4-after-crash")]
                ))
                holder_of_job = await asyncio.to_thread(
                    wait_for,
                    lambda: next((w for w in workers if f"[{doomed_job[0]}] received" in w.output()), None),
                    "a worker to receive the job",
                )
                await asyncio.to_thread(
                    wait_for,
                    lambda: in_own_connection(lambda: Job.objects.get(id=doomed_job[0]).status == JobStatus.RUNNING),
                    "the job to run",
                )
                holder_of_job.kill()
                killed_worker.append(holder_of_job)
                # and jobs keep coming while the survivor works alone
                submitted.extend(await asyncio.to_thread(in_own_connection, submit, queue, [
                    relocation(b, 3, "B4"), approval(a, 2), approval(b, 2),
                ]))
                release.set()
                holder.join(10)

                # then every job ends, the orphaned one after the visibility timeout
                await asyncio.to_thread(
                    wait_for, lambda: in_own_connection(lambda: ended(submitted + doomed_job)), "every job to end", 60
                )
                final = await asyncio.to_thread(
                    in_own_connection, lambda: {s.unit_id: unit_seq(s.unit_id) for s in (a, b)}
                )
                await asyncio.to_thread(
                    wait_for, lambda: all(c.last >= final[c.unit_id] for c in clients), "every client to catch up"
                )
                await asyncio.sleep(0.5)  # anything extra (a duplicate) would arrive now
            finally:
                for task in followers:
                    task.cancel()
                results = await asyncio.gather(*followers, return_exceptions=True)
                client_errors.extend(r for r in results if isinstance(r, Exception))
                await asyncio.gather(*(c.ws.close() for c in clients if c.ws is not None), return_exceptions=True)

        asyncio.run(asyncio.wait_for(scenario(), 80))
    finally:
        for proc in reversed(started):
            proc.stop()

    assert client_errors == []
    # then every job succeeded, each applied once: the orphaned one on its second delivery
    jobs = {str(j.id): j for j in Job.objects.filter(id__in=submitted + doomed_job)}
    assert {j.status for j in jobs.values()} == {JobStatus.SUCCEEDED}
    assert jobs[doomed_job[0]].attempts == 2
    assert [jobs[i].attempts for i in submitted] == [1] * len(submitted)
    assert f"[{doomed_job[0]}] succeeded" not in killed_worker[0].log_path.read_text()
    crate = Crate.objects.get(id=doomed_crate.id)
    assert (crate.location, crate.version) == ("A4-after-crash", doomed_version + 1)
    # and each unit's seq moved by exactly its updates: 4 relocations + 3 approvals x 2 each
    final = {s.unit_id: unit_seq(s.unit_id) for s in (a, b)}
    assert {u: final[u] - start_seq[u] for u in final} == {a.unit_id: 10, b.unit_id: 10}
    # and every client saw every update of its unit exactly once, in order, and nothing else
    for client in clients:
        assert client.start == start_seq[client.unit_id]
        assert client.seqs == list(range(start_seq[client.unit_id] + 1, final[client.unit_id] + 1))
        assert client.other == []
    # the first Daphne's clients resumed on the second one; the second one's never had to
    assert sorted(tuple(c.resumed_on) for c in clients) == [()] * 20 + [(port2,)] * 20

"""The request -> client trace (issue 33) across the real processes: a relocation made over HTTP
to a real Daphne, carried out by a real Celery worker, handed by the Daphne's hub to a real
WebSocket client. The hub logs one line for it, with every stage from the request's arrival to the
hand-over in path order, once it was slower than REQUEST_TRACE_WARN_MS; a stage forced to be slow
(the worker held before its COMMIT) is the one the line names."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest
import redis
from django.conf import settings

from backend.common.trace import STAGES, parse_trace_line
from backend.config.settings.base import redis_db_url
from bench import processes
from tests.support.auth import access_token
from tests.support.factories import CrateFactory, UnitFactory, unit_staff
from tests.support.pipeline import wait_until
from tests.support.ws import collect_updates, connect

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _stack(live_env, own_processes, daphne_env: dict, worker_env: dict) -> int:
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    broker = redis_db_url(settings.REDIS_URL, 8 + index)  # (no other worker of the session takes the job)
    redis.Redis.from_url(broker).flushdb()
    env = {**live_env, "TEST_CELERY_BROKER_URL": broker}
    daphne, port = processes.start_daphne({**env, **daphne_env})
    worker = processes.start_worker({**env, **worker_env}, name="traced")
    own_processes.extend([daphne, worker])
    return port, daphne


def _relocate_and_receive(port: int, store, watcher, crate, location: str) -> str:
    async def run() -> str:
        ws = await connect(port, token=access_token(watcher))
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as http:
                answer = await http.post(f"/api/crates/{crate.id}/relocate/", json={"location": location},
                                         headers={"Authorization": f"Bearer {access_token(store)}"})
            assert answer.status_code == 202, answer.text
            [update] = await collect_updates(ws, 1, timeout=20)
            assert update["data"]["id"] == str(crate.id), update
            return answer.json()["job"]["id"]
        finally:
            await ws.close()

    return asyncio.run(run())


def _traces(daphne) -> list[dict]:
    return [t for t in map(parse_trace_line, daphne.output().splitlines()) if t]


def test_a_change_held_before_its_commit_is_logged_with_every_stage_and_that_stage_named_slowest(
    live_env, own_processes
):
    # given a worker that holds each job's transaction open 0.6 s (a single job's, or a batch's: a
    # relocation takes the batch path), and a hub that logs changes over 300 ms
    port, daphne = _stack(live_env, own_processes, {"REQUEST_TRACE_WARN_MS": "300"},
                          {"FAULT_POINTS": "job.before_commit=pause:0.6;job.batch_before_commit=pause:0.6"})
    unit = UnitFactory()
    staff = unit_staff(unit)
    crate = CrateFactory(unit=unit)

    # when the store relocates a crate over the API and a watcher of the unit receives it
    job = _relocate_and_receive(port, staff["store"], staff["requester"], crate, "Bay 9")

    # then the hub logged its trace: every stage, in path order, the held one the slowest
    [trace] = wait_until(lambda: [t for t in _traces(daphne) if t["job"] == job] or None, 10, "the trace line")
    assert list(trace["stages"]) == list(STAGES[1:])
    assert trace["slowest"] == "started -> committed"
    assert trace["stages"]["committed"] >= 600
    assert trace["total_ms"] >= 600 and trace["unit"] == str(unit.id)


def test_a_change_quicker_than_the_limit_logs_no_trace(live_env, own_processes):
    # given a hub that logs only changes slower than 30 s
    port, daphne = _stack(live_env, own_processes, {"REQUEST_TRACE_WARN_MS": "30000"}, {})
    unit = UnitFactory()
    staff = unit_staff(unit)
    crate = CrateFactory(unit=unit)

    # when a relocation reaches its client (well within that)
    _relocate_and_receive(port, staff["store"], staff["requester"], crate, "Bay 4")

    # then nothing was logged for it
    assert _traces(daphne) == []
    assert "request trace" not in daphne.output()

"""A 1,000-item bulk on the real stack: plain clients get every data_update, batch=1 clients get the
same updates coalesced into far fewer data_update_batch frames, all with consecutive seqs."""

from __future__ import annotations

import asyncio
import json

import pytest
from django.db import connection

from backend.accounts.models import Role
from backend.jobs.models import Job
from tests.support.auth import access_token
from tests.support.factories import UnitFactory, UserFactory, pending_requests_fast
from tests.support.realtime import hub_filled
from tests.support.signing import signed
from tests.support.ws import connect, recv_json

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ITEMS = 1000


async def _drain(ws, expected: int, timeout: float = 60.0) -> tuple[list[dict], int]:
    """Read until `expected` updates arrived; returns (updates, frames that carried them)."""
    updates: list[dict] = []
    frames = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(updates) < expected:
        message = json.loads(await asyncio.wait_for(ws.recv(), deadline - loop.time()))
        if message["type"] == "data_update":
            updates.append(message)
            frames += 1
        elif message["type"] == "data_update_batch":
            updates.extend(message["updates"])
            frames += 1
    return updates, frames


def test_bulk_of_1000_reaches_plain_and_batch_clients(api, daphne, worker):
    # given 1,000 pending requests (one crate each) and two clients of the unit, one with batch=1
    unit = UnitFactory()
    requester, approver = UserFactory(unit=unit, role=Role.REQUESTER), UserFactory(unit=unit, role=Role.APPROVER)
    ids = [str(r.id) for r in pending_requests_fast("withdrawal", requester, ITEMS)]
    token = access_token(approver)

    def _submit():
        try:
            return api(approver).post("/api/bulk-actions/",
                signed("approve", {"entity": "withdrawal", "action": "approve", "ids": ids}))
        finally:
            connection.close()  # this thread's own connection: never left open on the test database

    async def scenario():
        plain = await connect(daphne, token=token)
        batched = await connect(daphne, token=token, batch=1)
        start = (await recv_json(plain))["seq"]
        assert (await recv_json(batched))["seq"] == start
        # (the hub reports once it holds a connection: read its fill counter now, not before)
        filled_before = await asyncio.to_thread(hub_filled, daphne)
        # when the approver bulk-approves all of them (a real job on the real worker)
        answer = await asyncio.to_thread(_submit)
        assert answer.status_code == 202
        results = await asyncio.gather(_drain(plain, 2 * ITEMS), _drain(batched, 2 * ITEMS))
        filled_after = await asyncio.to_thread(hub_filled, daphne)
        for ws in (plain, batched):
            await ws.close()
        return start, results, filled_after - filled_before

    start, ((plain_updates, plain_frames), (batch_updates, batch_frames)), filled = asyncio.run(scenario())

    # then both saw all 2,000 changes (1,000 requests + 1,000 crates) as consecutive seqs,
    expected = list(range(start + 1, start + 2 * ITEMS + 1))
    assert [u["seq"] for u in plain_updates] == expected
    assert [u["seq"] for u in batch_updates] == expected
    assert {u["data"]["id"] for u in plain_updates if u["entity"] == "withdrawal"} == set(ids)
    # the plain client one frame per change, the batch client far fewer frames
    assert plain_frames == 2 * ITEMS
    assert batch_frames <= 2 * ITEMS // 10, batch_frames
    assert Job.objects.get(kind="bulk.withdrawal.approve").progress == {"total": ITEMS, "done": ITEMS, "failed": 0}
    # and every update came by the channel layer's push: the hub read none of them from the outbox
    assert filled == 0


def test_batch_client_resumes_with_last_seq_inside_batches(daphne):
    """Resume works for batch clients too: replayed updates arrive batched, seqs unbroken."""
    unit = UnitFactory()
    requester = UserFactory(unit=unit, role=Role.REQUESTER)
    from backend.records import services

    crates = [services.crate_create(actor=UserFactory(unit=unit, role=Role.STORE), location=f"A{i}") for i in range(5)]
    token = access_token(requester)

    async def scenario():
        ws = await connect(daphne, token=token, batch=1, last_seq=0)
        hello = await recv_json(ws)
        message = await recv_json(ws)
        await ws.close()
        return hello, message

    hello, message = asyncio.run(scenario())
    assert hello["seq"] == 5
    assert message["type"] == "data_update_batch"
    assert [u["seq"] for u in message["updates"]] == [1, 2, 3, 4, 5]
    assert [u["data"]["id"] for u in message["updates"]] == [str(c.id) for c in crates]


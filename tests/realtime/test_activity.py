"""The live activity feed (`&activity=1`): each person's change as its audit entry, right after the
update it describes and with that update's seq; replayed on resume; batched clients get it after
their batch; clients that did not ask see nothing new."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest

from backend.audit.models import AuditEntry
from backend.events import schema
from tests.support.factories import make_request
from tests.support.realtime import relocate_async
from tests.support.signing import sign, transition_now
from tests.support.ws import assert_silent, connect, recv_json

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


async def read(ws, count: int, timeout: float = 15.0) -> list[dict]:
    """The next `count` update-or-activity messages (batches flattened), in arrival order."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    got: list[dict] = []
    while len(got) < count:
        message = await recv_json(ws, max(deadline - loop.time(), 0.01))
        if message["type"] == "data_update_batch":
            got.extend(message["updates"])
        elif message["type"] in ("data_update", "activity"):
            got.append(message)
    return got


def _approve(world, request) -> None:
    from django.db import connection

    try:
        transition_now(
            entity="withdrawal", action="approve", actor=world.approver, request_id=request.id,
            signature_id=sign(world.approver, "withdrawal", "approve"),
        )
    finally:
        connection.close()


def test_activity_follows_each_update_with_its_seq_and_plain_clients_see_nothing_new(daphne, unit_a):
    request = make_request("withdrawal", unit_a.requester, [unit_a.crates[0]])

    async def scenario():
        feed = await connect(daphne, token=unit_a.token(), activity=1)
        plain = await connect(daphne, token=unit_a.token())
        await recv_json(feed), await recv_json(plain)
        # when the approver approves (a signed decision: the request and its crate change) and the
        # store relocates a crate
        await asyncio.to_thread(_approve, unit_a, request)
        await relocate_async(unit_a, 1)
        fed = await read(feed, 6)
        heard = await read(plain, 3)
        await assert_silent(plain)
        await feed.close(), await plain.close()
        return fed, heard

    fed, heard = asyncio.run(scenario())

    # then the plain client got the three updates only; the feed each update then its activity
    assert [m["type"] for m in heard] == ["data_update"] * 3
    assert [m["type"] for m in fed] == ["data_update", "activity"] * 3
    for update, activity in zip(fed[::2], fed[1::2], strict=True):
        jsonschema.validate(activity, schema.ACTIVITY_SCHEMA)
        assert activity["seq"] == update["seq"] and activity["entry"]["seq"] == update["seq"]
        assert activity["entry"]["record_id"] == update["data"]["id"]
    approved, withdrawn, relocated = (m["entry"] for m in fed[1::2])
    assert (approved["action"], approved["actor"]["username"], approved["record_number"]) == (
        "approved", unit_a.approver.username, request.request_number)
    assert approved["signature"]["meaning"] == "approved" and approved["signature"]["signer"] == unit_a.approver.username
    assert (withdrawn["action"], relocated["action"]) == ("withdrawn", "relocated")
    # the entry is the audit trail's, without where the client was or the chain's hashes
    entry = AuditEntry.objects.get(id=approved["id"])
    assert (entry.position, entry.action) == (approved["position"], "approved")
    assert not {"client", "hash", "prev_hash"} & set(approved)


@pytest.mark.parametrize("batch", [False, True], ids=["plain", "batch"])
def test_a_resume_replays_the_missed_activity_too(daphne, unit_a, batch):
    async def scenario():
        ws = await connect(daphne, token=unit_a.token(), activity=1)
        hello = await recv_json(ws)
        await ws.close()
        await relocate_async(unit_a, 3)  # while it is away
        ws = await connect(daphne, token=unit_a.token(), activity=1, last_seq=hello["seq"],
                           **({"batch": 1} if batch else {}))
        await recv_json(ws)
        replayed = await read(ws, 6)
        await relocate_async(unit_a, 1)
        live = await read(ws, 2)
        await ws.close()
        return hello["seq"], replayed, live

    start, replayed, live = asyncio.run(scenario())
    seqs = [start + 1, start + 2, start + 3]
    if batch:  # the batch's updates, then their activity, in seq order
        assert [(m["type"], m["seq"]) for m in replayed] == [("data_update", s) for s in seqs] + [
            ("activity", s) for s in seqs]
    else:
        assert [(m["type"], m["seq"]) for m in replayed] == [
            (kind, s) for s in seqs for kind in ("data_update", "activity")]
    assert [(m["type"], m["seq"]) for m in live] == [("data_update", start + 4), ("activity", start + 4)]
    assert all(m["entry"]["actor"]["username"] == unit_a.store.username for m in replayed + live
               if m["type"] == "activity")
    assert json.dumps(replayed)  # plain JSON all the way

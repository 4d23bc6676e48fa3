"""Nothing crosses a unit, or another user's boundary, over the socket: presence, the activity feed and
job progress, each checked on a real Daphne with a positive control (the same connection does hear what
is its own, so its silence means something)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from backend.events.broadcast import job_update_send
from tests.support.realtime import relocate_async
from tests.support.ws import assert_silent, connect, recv_json, recv_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


async def _open(port: int, token: str, **query):
    ws = await connect(port, token=token, **query)
    assert (await recv_json(ws, 10))["type"] == "connection_established"
    return ws


def _job(status: str = "running") -> dict:
    return {"id": str(uuid.uuid4()), "kind": "crate.relocate", "status": status,
            "progress": {"total": 4, "done": 1, "failed": 0}}


def test_presence_stays_in_its_unit(daphne, unit_a, unit_b):
    async def scenario():
        # given a presence client in unit B (its snapshot taken), and then unit A's users coming online
        watcher_b = await _open(daphne, unit_b.token(unit_b.store), presence=1)
        snapshot_b = await recv_until(watcher_b, "presence", 5)
        own_join = await recv_until(watcher_b, "presence_update", 5)  # its own user's `joined`
        assert own_join["user"]["id"] == str(unit_b.store.id)
        a_tab = await _open(daphne, unit_a.token(unit_a.requester), presence=1)
        await recv_until(a_tab, "presence", 5)
        await a_tab.send(json.dumps({"type": "viewing", "entity": "crate", "id": str(unit_a.crates[0].id)}))
        # (unit A's own observer hears it: the changes were published)
        observer_a = await _open(daphne, unit_a.token(unit_a.approver), presence=1)
        a_snapshot = await recv_until(observer_a, "presence", 5)
        # then unit B hears nothing of it
        await assert_silent(watcher_b)
        # positive control: a colleague of unit B coming online reaches the same connection
        b_tab = await _open(daphne, unit_b.token(unit_b.requester), presence=1)
        joined = await recv_until(watcher_b, "presence_update", 5)
        for ws in (watcher_b, a_tab, observer_a, b_tab):
            await ws.close()
        return snapshot_b, a_snapshot, joined

    snapshot_b, a_snapshot, joined = asyncio.run(scenario())
    assert str(unit_a.requester.id) not in {u["id"] for u in snapshot_b["users"]}
    assert str(unit_a.requester.id) in {u["id"] for u in a_snapshot["users"]}
    assert (joined["state"], joined["user"]["id"]) == ("joined", str(unit_b.requester.id))


def test_the_activity_feed_stays_in_its_unit(daphne, unit_a, unit_b):
    async def scenario():
        feed_a = await _open(daphne, unit_a.token(), activity=1)
        feed_b = await _open(daphne, unit_b.token(), activity=1)
        # when a person of unit A relocates a crate
        await relocate_async(unit_a, 1)
        own = await recv_until(feed_a, "activity", 5)
        # then unit B's feed hears nothing
        await assert_silent(feed_b)
        # positive control: unit B's own change reaches its feed, activity included
        await relocate_async(unit_b, 1)
        b_update = await recv_until(feed_b, "data_update", 5)
        b_activity = await recv_until(feed_b, "activity", 5)
        for ws in (feed_a, feed_b):
            await ws.close()
        return own, b_update, b_activity

    own, b_update, b_activity = asyncio.run(scenario())
    assert own["entry"]["unit"] == unit_a.id and own["entry"]["actor"]["username"] == unit_a.store.username
    assert b_activity["entry"]["unit"] == unit_b.id and b_activity["seq"] == b_update["seq"]


def test_a_users_job_progress_reaches_only_that_user(daphne, unit_a, unit_b):
    owner, colleague, stranger = unit_a.store, unit_a.approver, unit_b.store

    async def scenario():
        mine = await _open(daphne, unit_a.token(owner))
        theirs = await _open(daphne, unit_a.token(colleague))
        outside = await _open(daphne, unit_b.token(stranger))
        # when the owner's job makes progress (sent as the worker sends it)
        job = _job()
        await asyncio.to_thread(job_update_send, owner.id, job)
        got = await recv_until(mine, "job_update", 5)
        # then the colleague of the same unit, and a user of another unit, hear nothing
        await asyncio.gather(assert_silent(theirs), assert_silent(outside))
        # positive control: each of them does hear its own job
        controls = []
        for ws, user in ((theirs, colleague), (outside, stranger)):
            own = _job("queued")
            await asyncio.to_thread(job_update_send, user.id, own)
            controls.append(((await recv_until(ws, "job_update", 5))["job"]["id"], own["id"]))
        for ws in (mine, theirs, outside):
            await ws.close()
        return job, got, controls

    job, got, controls = asyncio.run(scenario())
    assert got["job"] == job
    assert all(received == sent for received, sent in controls)

"""Selective updates (docs/realtime.md, "Selective updates"): `subscribe` narrows a connection to the
matching data_updates; a resume with `last_seq` and the filter in the URL replays exactly the matching
updates it missed; a filter never reaches past the unit."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from backend.accounts.models import Role
from backend.events.models import OutboxEvent
from backend.records import services
from tests.support.factories import UserFactory
from tests.support.realtime import in_thread, make_world, relocate_async, unit_seq
from tests.support.signing import sign, transition_now
from tests.support.ws import assert_silent, connect, recv_json

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def decide(entity: str, action: str, actor, request_id, reason: str = ""):
    """A signed decision, committed and published as a worker does."""
    return transition_now(
        entity=entity, action=action, actor=actor, request_id=request_id, reason=reason,
        signature_id=sign(actor, entity, action),
    )


async def sync(ws) -> list[dict]:
    """Ping, and return what came before the pong (the server has handled every earlier message)."""
    await ws.send(json.dumps({"type": "ping", "timestamp": "t"}))
    before = []
    while (message := await recv_json(ws, 10))["type"] != "pong":
        before.append(message)
    return before


class Watcher:
    """An unfiltered connection of the unit on the same Daphne: once it has seq n, the hub has handed
    seq n to every connection of the unit (it delivers to all of them at once, in seq order)."""

    def __init__(self, ws) -> None:
        self.ws, self.seq = ws, 0

    async def reach(self, seq: int, timeout: float = 15) -> None:
        while self.seq < seq:
            message = await recv_json(self.ws, timeout)
            if message["type"] == "data_update":
                self.seq = message["seq"]


async def watcher(port: int, world) -> Watcher:
    ws = await connect(port, token=await asyncio.to_thread(world.token, world.store))
    await recv_json(ws)
    return Watcher(ws)


async def updates_until(ws, seq: int, watch: Watcher) -> list[dict]:
    """The data_updates `ws` got up to seq `seq` (every earlier one has been handed to it by then)."""
    await watch.reach(seq)
    return [m for m in await sync(ws) if m["type"] == "data_update"]


def reference(unit, after: int, upto: int, username: str, mine_ids: set[str], entities=None, ids=None, mine=False):
    """The documented rule, applied to the committed frames of (after, upto]: the seqs that match."""
    matched = []
    rows = OutboxEvent.objects.filter(unit=unit, seq__gt=after, seq__lte=upto).order_by("seq")
    for seq, frame in rows.values_list("seq", "frame"):
        update = json.loads(frame)
        data = update["data"]
        its = {data["id"], data.get("request_id")}
        is_mine = False
        if mine:
            if data.get("actor") == username:
                is_mine = True
                if update["entity"] in ("withdrawal", "destruction", "transfer"):
                    mine_ids.add(data["id"])
                elif update["entity"] == "sendback":
                    mine_ids.add(data["request_id"])
            else:
                is_mine = bool(its & mine_ids)
        if entities is not None and update["entity"] not in entities:
            continue
        if (ids is None and not mine) or (ids is not None and its & set(ids)) or is_mine:
            matched.append(seq)
    return matched


def test_a_mine_filter_gets_exactly_its_updates_and_resumes_gap_free(daphne):
    world = make_world("sub", crates=8)
    requester, approver = world.requester, world.approver
    colleague = UserFactory(unit=world.unit, role=Role.REQUESTER)
    crates = world.crates
    # a request the requester filed before subscribing: theirs, resolved at subscribe time
    earlier = services.request_create(entity="withdrawal", actor=requester, crate_ids=[crates[0].id], reason="r")
    start = unit_seq(world)
    token = world.token(requester)

    async def commit_round(offset: int) -> int:
        """Changes of every kind: a relocation (not theirs), a decision on their earlier request,
        a new request of theirs and its rejection, a colleague's request, and a send-back."""
        await relocate_async(world, 1)
        mine = await in_thread(
            services.request_create, entity="destruction", actor=requester, crate_ids=[crates[1 + 2 * offset].id], reason="r"
        )
        await in_thread(
            services.request_create, entity="withdrawal", actor=colleague, crate_ids=[crates[2 + 2 * offset].id], reason="r"
        )
        await in_thread(decide, "destruction", "reject", approver, mine.id, "no")
        await relocate_async(world, 1)
        return await in_thread(unit_seq, world)

    async def scenario():
        watch = await watcher(daphne, world)
        ws = await connect(daphne, token=token)
        hello = await recv_json(ws)
        await ws.send(json.dumps({"type": "subscribe", "mine": True}))
        assert await sync(ws) == []
        # when a first round commits, and a decision on the earlier request
        await in_thread(decide, "withdrawal", "approve", approver, earlier.id)
        first_end = await commit_round(0)
        live = await updates_until(ws, first_end, watch)
        await ws.close()
        # when a second round commits while the client is away, and it resumes with the filter in the URL
        second_end = await commit_round(1)
        back = await connect(daphne, token=token, last_seq=live[-1]["seq"], mine=1)
        hello2 = await recv_json(back)
        replayed = await updates_until(back, second_end, watch)
        # and a third round commits live
        third_end = await commit_round(2)
        after = await updates_until(back, third_end, watch)
        await back.close()
        await watch.ws.close()
        return hello, live, hello2, replayed, after, (first_end, second_end, third_end)

    hello, live, hello2, replayed, after, (first_end, second_end, third_end) = asyncio.run(scenario())

    username = requester.username
    mine_ids = {str(earlier.id)}
    expected_live = reference(world.unit, start, first_end, username, mine_ids, mine=True)
    resolved_at_resume = {str(earlier.id)} | {str(r.id) for r in requester_requests(world, requester)}
    expected_replay = reference(world.unit, live[-1]["seq"], second_end, username, resolved_at_resume, mine=True)
    expected_after = reference(world.unit, second_end, third_end, username, resolved_at_resume, mine=True)
    assert hello["seq"] == start
    assert [u["seq"] for u in live] == expected_live
    # 1 approve of theirs + their create and its rejection; never the relocations or the colleague's request
    assert len(expected_live) == 3 and all(u["entity"] != "crate" for u in live)
    assert [u["seq"] for u in replayed] == expected_replay and len(expected_replay) == 2
    assert [u["seq"] for u in after] == expected_after and len(expected_after) == 2


def requester_requests(world, user):
    from backend.records.models import DestructionRequest, WithdrawalRequest

    return [*WithdrawalRequest.objects.filter(created_by=user), *DestructionRequest.objects.filter(created_by=user)]


def test_entities_and_ids_filters_and_unsubscribe(daphne, unit_a):
    crate = str(unit_a.crates[0].id)

    async def scenario():
        watch = await watcher(daphne, unit_a)
        ws = await connect(daphne, token=unit_a.token())
        await recv_json(ws)
        # ids: only the first crate's relocations (relocate() cycles through the three crates)
        await ws.send(json.dumps({"type": "subscribe", "ids": [crate.upper()]}))
        await sync(ws)
        seqs = await relocate_async(unit_a, 6)
        by_id = await updates_until(ws, seqs[-1], watch)
        # entities: a request kind only, so no crate update at all
        await ws.send(json.dumps({"type": "subscribe", "entities": ["withdrawal"]}))
        await sync(ws)
        seqs2 = await relocate_async(unit_a, 2)
        by_entity = await updates_until(ws, seqs2[-1], watch)
        # unsubscribe: the whole unit again
        await ws.send(json.dumps({"type": "unsubscribe"}))
        await sync(ws)
        seqs3 = await relocate_async(unit_a, 2)
        whole = await updates_until(ws, seqs3[-1], watch)
        await ws.close()
        await watch.ws.close()
        return seqs, by_id, seqs2, by_entity, seqs3, whole

    seqs, by_id, seqs2, by_entity, seqs3, whole = asyncio.run(scenario())
    assert [u["seq"] for u in by_id] == [seqs[0], seqs[3]]
    assert all(u["data"]["id"] == crate for u in by_id)
    assert by_entity == []
    assert [u["seq"] for u in whole] == seqs3


def test_a_filter_never_reaches_another_unit(daphne, unit_a, unit_b):
    a_request = services.request_create(entity="withdrawal", actor=unit_a.requester, crate_ids=[unit_a.crates[0].id])

    async def scenario():
        # given clients of unit B that name unit A's ids (and one of B's own crates), and ask for "mine"
        by_ids = await connect(daphne, token=unit_b.token())
        mine = await connect(daphne, token=unit_b.token(unit_b.requester), mine=1, ids=f"{a_request.id},{unit_a.crates[1].id}")
        await recv_json(by_ids), await recv_json(mine)
        await by_ids.send(json.dumps({"type": "subscribe", "ids": [str(c.id) for c in unit_a.crates] + [str(a_request.id)]
                                      + [str(unit_b.crates[0].id)]}))
        await sync(by_ids)
        watch_a = await watcher(daphne, unit_a)
        # when unit A relocates its crates and decides its request
        seqs = await relocate_async(unit_a, 3)
        decided = await in_thread(decide, "withdrawal", "approve", unit_a.approver, a_request.id)
        # then neither hears anything, though unit A's own client heard all of it
        await watch_a.reach(seqs[-1] + 1)
        await assert_silent(by_ids, 2)
        await assert_silent(mine, 0.5)
        # (positive controls: the same connections do hear what matches in their own unit)
        await relocate_async(unit_b, 1)
        own = await recv_json(by_ids, 5)
        mine_request = await in_thread(services.request_create, entity="withdrawal", actor=unit_b.requester,
                                       crate_ids=[unit_b.crates[1].id])
        own_mine = await recv_json(mine, 5)
        for ws in (by_ids, mine, watch_a.ws):
            await ws.close()
        return decided, own, mine_request, own_mine

    decided, own, mine_request, own_mine = asyncio.run(scenario())
    assert decided.status == "approved"
    assert (own["type"], own["data"]["id"]) == ("data_update", str(unit_b.crates[0].id))
    assert (own_mine["type"], own_mine["entity"], own_mine["data"]["id"]) == ("data_update", "withdrawal", str(mine_request.id))


def test_bad_filters_get_invalid_message_and_keep_the_connection(daphne, unit_a):
    bad = [
        {"entities": []}, {"entities": ["crate", "secrets"]}, {"entities": "crate"}, {"ids": []},
        {"ids": ["not-a-uuid"]}, {"ids": [str(uuid.uuid4())] * 101}, {"mine": "yes"}, {"mine": 1},
    ]

    async def scenario():
        watch = await watcher(daphne, unit_a)
        ws = await connect(daphne, token=unit_a.token())
        await recv_json(ws)
        answers = []
        for fields in bad:
            await ws.send(json.dumps({"type": "subscribe", **fields}))
            answers.append(await recv_json(ws))
        # a bad filter in the URL is reported after the greeting, and the connection serves the whole unit
        url_bad = await connect(daphne, token=unit_a.token(), entities="nope", mine="maybe")
        greeting, complaint = await recv_json(url_bad), await recv_json(url_bad)
        seqs = await relocate_async(unit_a, 1)
        got = await updates_until(ws, seqs[-1], watch), await updates_until(url_bad, seqs[-1], watch)
        await ws.close()
        await watch.ws.close()
        await url_bad.close()
        return answers, greeting, complaint, seqs, got

    answers, greeting, complaint, seqs, (got, got_bad) = asyncio.run(scenario())
    assert [(a["type"], a["code"]) for a in answers] == [("error", "invalid_message")] * len(bad)
    assert greeting["type"] == "connection_established" and complaint["code"] == "invalid_message"
    # the last bad subscribe left the previous filter (none) in place
    assert [u["seq"] for u in got] == seqs and [u["seq"] for u in got_bad] == seqs

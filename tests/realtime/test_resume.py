"""Resuming with `last_seq` (the public protocol, docs/realtime.md: "the server first replays every missed update in order, then
goes live; if the gap is older than the retained history it sends resync_required instead")."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from backend.events.models import OutboxEvent
from tests.support.realtime import SeqClient, relocate, relocate_async
from tests.support.ws import assert_silent, collect_updates, connect, recv_json

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_resume_replays_exactly_the_missed_updates_then_goes_live(daphne, unit_a):
    async def scenario():
        # given a client that saw seq 1 and went away
        ws = await connect(daphne, token=unit_a.token())
        await recv_json(ws)
        await relocate_async(unit_a, 1)
        seen = (await collect_updates(ws, 1, timeout=15))[0]["seq"]
        await ws.close()
        # when five changes commit while it is away, and it comes back with last_seq
        await relocate_async(unit_a, 5)
        ws = await connect(daphne, token=unit_a.token(), last_seq=seen)
        hello = await recv_json(ws)
        replayed = await collect_updates(ws, 5, timeout=15)
        # and two more changes commit after it is back
        await relocate_async(unit_a, 2)
        live = await collect_updates(ws, 2, timeout=15)
        await assert_silent(ws)
        await ws.close()
        return seen, hello, replayed, live

    seen, hello, replayed, live = asyncio.run(scenario())

    # then the greeting names the unit's current seq, the five missed updates come in order, then
    # the live ones, and nothing twice
    assert (seen, hello["seq"]) == (1, 6)
    assert [u["seq"] for u in replayed] == [2, 3, 4, 5, 6]
    assert [u["seq"] for u in live] == [7, 8]
    # the replayed frames are the committed ones, byte for byte
    frames = dict(OutboxEvent.objects.filter(unit=unit_a.unit).values_list("seq", "frame"))
    assert [json.dumps(u, separators=(",", ":"), ensure_ascii=False) for u in replayed] == [frames[s] for s in range(2, 7)]


async def _hop(client: SeqClient, producing: asyncio.Task, final: list[int]) -> None:
    """Read a little, drop the connection, resume with last_seq: again and again while changes commit."""
    while not producing.done():
        await client.read_for(random.uniform(0.02, 0.2))
        await client.close()
        await client.open()
    await client.follow(until=final[0], timeout=20)
    await client.read_for(0.5)  # anything after the final seq would be a duplicate or a phantom
    await client.close()


@pytest.mark.parametrize("batch", [False, True], ids=["plain", "batch"])
def test_resuming_while_changes_commit_leaves_no_gap_and_no_duplicate(daphne, unit_a, unit_b, batch):
    # given, in unit A, a client that stays connected (the process already follows A) and one that
    # keeps reconnecting; in unit B only a reconnecting client (each resume joins B afresh)
    steady = SeqClient(daphne, unit_a.token(), batch=batch)
    hopper_a = SeqClient(daphne, unit_a.token(), batch=batch)
    hopper_b = SeqClient(daphne, unit_b.token(), batch=batch)
    final_a, final_b = [0], [0]

    async def scenario():
        for client in (steady, hopper_a, hopper_b):
            await client.open()

        async def produce(world, final):
            final[0] = (await relocate_async(world, 40, pause=0.01))[-1]

        # when both units commit 40 changes while the hoppers drop and resume over and over
        producing = asyncio.gather(produce(unit_a, final_a), produce(unit_b, final_b))
        await asyncio.gather(producing, _hop(hopper_a, producing, final_a), _hop(hopper_b, producing, final_b))
        await steady.follow(until=final_a[0], timeout=20)
        await steady.read_for(0.2)
        await steady.close()

    asyncio.run(scenario())

    # then every client has every seq exactly once, in order, across all its connections
    assert (final_a[0], final_b[0]) == (40, 40)
    assert hopper_a.connects >= 5 and hopper_b.connects >= 5
    for client in (steady, hopper_a, hopper_b):
        client.assert_exactly(1, 40)
        assert client.resyncs == []


def test_resume_from_pruned_history_gets_resync_required(daphne, unit_a):
    # given six changes of which the outbox no longer holds the first three (pruned)
    relocate(unit_a, 6)
    OutboxEvent.objects.filter(unit=unit_a.unit, seq__lte=3).delete()

    async def scenario():
        results = {}
        for last_seq in ("1", "3", "99", "abc"):
            ws = await connect(daphne, token=unit_a.token(), last_seq=last_seq)
            hello = await recv_json(ws)
            results[last_seq] = [hello["seq"], await recv_json(ws)]
            if last_seq == "3":
                results[last_seq] += await collect_updates(ws, 2, timeout=15)
            await ws.close()
        # and a client told to resync goes live from the seq it was given
        ws = await connect(daphne, token=unit_a.token(), last_seq=1)
        await recv_json(ws), await recv_json(ws)
        await relocate_async(unit_a, 1)
        live = await collect_updates(ws, 1, timeout=15)
        await assert_silent(ws)
        await ws.close()
        return results, live

    results, live = asyncio.run(scenario())

    def short(message):
        return (message["type"], message.get("reason"), message["seq"])

    # when a client resumes from before the retained history, then it is told to resync at seq 6;
    assert [results["1"][0], short(results["1"][1])] == [6, ("resync_required", "history_unavailable", 6)]
    # from within it, the rest is replayed;
    assert [results["3"][0], *[short(m) for m in results["3"][1:]]] == [
        6, ("data_update", None, 4), ("data_update", None, 5), ("data_update", None, 6)
    ]
    # from a seq the unit never reached, or from nonsense, it is told to resync too
    assert short(results["99"][1]) == ("resync_required", "last_seq_ahead", 6)
    assert short(results["abc"][1]) == ("resync_required", "invalid_last_seq", 6)
    assert [u["seq"] for u in live] == [7]


def test_resume_beyond_the_replay_limit_gets_resync_required(spawn_daphne, unit_a):
    # given a Daphne that replays at most 5 updates, and 8 committed changes
    _, port = spawn_daphne(REALTIME_REPLAY_LIMIT="5")
    relocate(unit_a, 8)

    async def scenario():
        too_old = await connect(port, token=unit_a.token(), last_seq=2)
        await recv_json(too_old)
        resync = await recv_json(too_old)
        await too_old.close()
        batched = await connect(port, token=unit_a.token(), last_seq=3, batch=1)
        await recv_json(batched)
        replay = await recv_json(batched)
        await assert_silent(batched)
        await batched.close()
        return resync, replay

    # when clients resume 6 and 5 updates back (the second in batch mode)
    resync, replay = asyncio.run(scenario())

    # then the first is told to resync, the second gets its 5 updates as one batch, seqs kept
    assert resync == {"type": "resync_required", "reason": "history_limit", "seq": 8}
    assert replay["type"] == "data_update_batch"
    assert [u["seq"] for u in replay["updates"]] == [4, 5, 6, 7, 8]

"""Live delivery on a real Daphne: unit isolation, transfers reaching both units with their own
seqs, `batch=1` coalescing that keeps every item's seq, and a lost push filled at the next one."""

from __future__ import annotations

import asyncio
import json
from unittest import mock

import pytest

from backend.records import services
from bench import processes
from tests.support.realtime import fresh_hub_snapshot, in_thread, relocate, relocate_async, unit_seq
from tests.support.signing import sign
from tests.support.ws import assert_silent, collect_updates, connect, recv_json

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_unit_never_receives_another_units_updates(daphne, unit_a, unit_b):
    async def scenario():
        # given a client in each unit
        a, b = await connect(daphne, token=unit_a.token()), await connect(daphne, token=unit_b.token())
        hellos = [await recv_json(a), await recv_json(b)]
        # when unit A changes three times and unit B twice
        seqs_a = await relocate_async(unit_a, 3)
        seqs_b = await relocate_async(unit_b, 2)
        got_a, got_b = await collect_updates(a, 3, timeout=15), await collect_updates(b, 2, timeout=15)
        await assert_silent(a)
        await assert_silent(b)
        await a.close()
        await b.close()
        return hellos, seqs_a, seqs_b, got_a, got_b

    hellos, seqs_a, seqs_b, got_a, got_b = asyncio.run(scenario())

    # then each client saw exactly its own unit's changes, numbered by its own unit's seq
    assert [(h["unit_id"], h["seq"]) for h in hellos] == [(unit_a.id, 0), (unit_b.id, 0)]
    assert seqs_a == [1, 2, 3] and seqs_b == [1, 2]
    assert [(u["seq"], u["entity"], u["data"]["crate_number"]) for u in got_a] == [
        (1, "crate", unit_a.crates[0].crate_number), (2, "crate", unit_a.crates[1].crate_number),
        (3, "crate", unit_a.crates[2].crate_number),
    ]
    assert [(u["seq"], u["entity"], u["data"]["crate_number"]) for u in got_b] == [
        (1, "crate", unit_b.crates[0].crate_number), (2, "crate", unit_b.crates[1].crate_number),
    ]


def test_a_transfer_reaches_both_units_each_with_its_own_seq(daphne, unit_a, unit_b):
    # given a head start in unit A, so the two units' seqs differ
    relocate(unit_a, 2)
    crates = unit_a.crates[:2]

    async def scenario():
        a, b = await connect(daphne, token=unit_a.token()), await connect(daphne, token=unit_b.token())
        await recv_json(a), await recv_json(b)
        # when unit A files a transfer of two crates to unit B and approves it
        request = await in_thread(
            services.request_create, entity="transfer", actor=unit_a.requester, crate_ids=[c.id for c in crates],
            reason="move", destination_unit_id=unit_b.unit.id,
        )
        signature_id = await in_thread(sign, unit_a.approver, "transfer", "approve")
        await in_thread(
            services.request_transition, entity="transfer", action="approve", actor=unit_a.approver,
            request_id=request.id, signature_id=signature_id, expected_version=request.version,
        )
        got_a, got_b = await collect_updates(a, 4, timeout=15), await collect_updates(b, 4, timeout=15)
        await assert_silent(a)
        await assert_silent(b)
        await a.close()
        await b.close()
        return request, got_a, got_b

    request, got_a, got_b = asyncio.run(scenario())

    def summary(updates):
        return [(u["seq"], u["entity"], u["action"], u["data"]["id"], u["data"]["status"]) for u in updates]

    crate_ids = sorted(str(c.id) for c in crates)
    # then the source unit saw the request and its crates leaving, as its seqs 3..6,
    assert summary(got_a) == [
        (3, "transfer", "created", str(request.id), "pending"),
        (4, "transfer", "updated", str(request.id), "approved"),
        (5, "crate", "deleted", crate_ids[0], "in_storage"),
        (6, "crate", "deleted", crate_ids[1], "in_storage"),
    ]
    # and the destination saw the same request and the crates arriving, as its own seqs 1..4
    assert summary(got_b) == [
        (1, "transfer", "created", str(request.id), "pending"),
        (2, "transfer", "updated", str(request.id), "approved"),
        (3, "crate", "created", crate_ids[0], "in_storage"),
        (4, "crate", "created", crate_ids[1], "in_storage"),
    ]
    assert (unit_seq(unit_a), unit_seq(unit_b)) == (6, 4)


def test_batch_clients_get_updates_that_land_together_in_one_frame(daphne, unit_a):
    async def scenario():
        # given a batch=1 client and a seed client of the same unit
        batched, plain = await connect(daphne, token=unit_a.token(), batch=1), await connect(daphne, token=unit_a.token())
        await recv_json(batched), await recv_json(plain)
        # when one transaction creates 30 crates (30 updates that land together)
        await in_thread(services.crates_create_bulk, actor=unit_a.store, unit=unit_a.unit, count=30)
        frames = []
        while sum(len(f.get("updates", [f])) for f in frames) < 30:
            frames.append(json.loads(await asyncio.wait_for(batched.recv(), 15)))
        singles = [json.loads(await asyncio.wait_for(plain.recv(), 15)) for _ in range(30)]
        await assert_silent(batched)
        await assert_silent(plain)
        await batched.close()
        await plain.close()
        return frames, singles

    frames, singles = asyncio.run(scenario())

    # then the batch client got them as data_update_batch frames (fewer frames than updates), every
    # item a complete data_update keeping its own seq, all 30 in order
    assert {f["type"] for f in frames} == {"data_update_batch"}
    assert len(frames) < 30
    items = [item for f in frames for item in f["updates"]]
    assert [i["seq"] for i in items] == list(range(1, 31))
    assert {(i["type"], i["entity"], i["action"]) for i in items} == {("data_update", "crate", "created")}
    # and the seed client got the very same updates one data_update at a time
    assert singles == items


@pytest.mark.outbox_fill
def test_a_lost_push_is_filled_from_the_outbox_when_the_next_one_arrives(daphne, unit_a):
    # (the one test on the session Daphne whose update comes by the fill: tests/conftest.py, _PushOnly)
    async def scenario():
        ws = await connect(daphne, token=unit_a.token())
        await recv_json(ws)
        filled_before = await asyncio.to_thread(fresh_filled, daphne)
        # when seq 1's push is lost (its process died after COMMIT, before publishing) and seq 2's arrives
        with mock.patch("backend.events.services.outbox_publish"):
            await relocate_async(unit_a, 1)
        await relocate_async(unit_a, 1)
        got = await collect_updates(ws, 2, timeout=10)  # long before the hub's minute-apart catch-up
        filled = await asyncio.to_thread(fresh_filled, daphne) - filled_before
        await ws.close()
        return got, filled

    got, filled = asyncio.run(scenario())

    # then the gap was filled from the outbox at once: both seqs, in order, one of them by the fill
    assert [u["seq"] for u in got] == [1, 2]
    assert filled == 1


def fresh_filled(port: int) -> int:
    return fresh_hub_snapshot(processes.DAPHNES[port])["filled"]

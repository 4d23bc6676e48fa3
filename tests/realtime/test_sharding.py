"""A channel layer sharded over two Redis servers (CHANNEL_LAYER_SHARD_URLS), two Daphnes and the
publishers: the units' groups land on both servers, and every client still receives every update of
its unit exactly once, in seq order, across a kill -9 of one Daphne (its clients resume on the other)."""

from __future__ import annotations

import asyncio

import pytest
import redis
from channels_redis.utils import _consistent_hash

from backend.events.groups import unit_group_name
from bench import processes
from tests.support.realtime import PUBSUB_LAYER, SeqClient, hub_filled, make_world, relocate, unit_seq

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

UNITS = 4
CHANGES = 30  # per unit, while clients on both Daphnes listen and one Daphne is killed half-way


def shard_of_unit(unit_id) -> int:
    """Which of two hosts channels-redis's pub/sub layer uses for the unit's group."""
    return _consistent_hash(f"asgi__group__{unit_group_name(unit_id)}", 2)  # the layer's default prefix


def test_a_sharded_layer_delivers_every_update_once_in_order_across_a_daphne_kill(live_env, settings):
    # given units whose groups hash to both shards (the second shard a Redis server of its own)
    worlds = [make_world(f"shard{i}") for i in range(UNITS)]
    while {shard_of_unit(w.unit.id) for w in worlds} != {0, 1}:
        worlds.append(make_world(f"shard{len(worlds)}"))
    second = processes.RedisServer()
    second.start()
    shard_url = second.url(1)
    env = {**live_env, "CHANNEL_LAYER_SHARD_URLS": shard_url}
    # and this process, which commits and publishes the changes, on the same two shards
    first_host = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": PUBSUB_LAYER, "CONFIG": {
        "hosts": [first_host, {**first_host, "address": shard_url}]}}}
    survivor, survivor_port = processes.start_daphne(env)
    doomed, doomed_port = processes.start_daphne(env)
    try:
        starts = {w.id: unit_seq(w) for w in worlds}
        # one client per unit on each Daphne
        clients = {w.id: [SeqClient(port, w.token()) for port in (survivor_port, doomed_port)] for w in worlds}

        async def scenario():
            await asyncio.gather(*(c.open() for pair in clients.values() for c in pair))
            for pair in clients.values():  # the doomed Daphne's clients come back on the survivor
                pair[1].port = survivor_port
            finals = {w.id: None for w in worlds}

            def produce(world):
                relocate(world, CHANGES // 2)
                return None

            followers = [asyncio.create_task(c.follow(lambda uid=uid: finals[uid], timeout=90))
                         for uid, pair in clients.items() for c in pair]
            await asyncio.gather(*(asyncio.to_thread(produce, w) for w in worlds))
            doomed.kill()  # SIGKILL, mid-stream: its clients see the connection drop
            await asyncio.gather(*(asyncio.to_thread(produce, w) for w in worlds))
            for w in worlds:
                finals[w.id] = await asyncio.to_thread(unit_seq, w)
            await asyncio.gather(*followers)
            # (while the clients are connected: the hub leaves a group its last client left)
            subscribed.extend(
                {name.decode() for name in redis.Redis.from_url(url).pubsub_channels("*__group__unit_*")}
                for url in (first_host["address"], shard_url)
            )
            for pair in clients.values():
                for c in pair:
                    await c.read_for(0.3)  # a duplicate would arrive now
                    await c.close()

        subscribed: list[set[str]] = []
        asyncio.run(scenario())

        # then the groups were spread over both servers, and every client got every update once, in order
        for world in worlds:
            group = f"__group__{unit_group_name(world.unit.id)}"
            assert any(group in name for name in subscribed[shard_of_unit(world.unit.id)]), (world.unit.code, subscribed)
        for world in worlds:
            for client in clients[world.id]:
                client.assert_exactly(starts[world.id] + 1, starts[world.id] + CHANGES)
        assert all(pair[1].connects == 2 for pair in clients.values())  # each resumed once, on the survivor
        # and live updates came by the push on both shards, never by the hub's outbox fill
        assert hub_filled(survivor) == 0
    finally:
        survivor.stop()
        doomed.stop()
        second.stop()

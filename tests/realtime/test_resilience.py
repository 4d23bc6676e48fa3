"""The realtime tier under trouble, on real processes: the channel layer's Redis restarting under
connected clients, connections idle past redis-py's default socket timeout (both on the core and on
the pub/sub channel layer), 500 clients connecting and leaving at once, and 1,000 clients
reconnecting together after Daphne is killed while changes keep committing."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import redis
from django.conf import settings

from tests.support.auth import access_token
from tests.support.realtime import (
    CORE_LAYER,
    PUBSUB_LAYER,
    SeqClient,
    failed_connection,
    hub_filled,
    make_users,
    raise_open_files_limit,
    relocate_async,
    wait_for_groups,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

LAYERS = pytest.mark.parametrize("backend", [CORE_LAYER, PUBSUB_LAYER], ids=["core", "pubsub"])


@LAYERS
def test_clients_miss_nothing_when_the_channel_layer_redis_restarts(
    spawn_daphne, redis_server, channel_layer_at, unit_a, unit_b, backend
):
    # given a Daphne and this process (the publisher) on a Redis of the test's own, and two clients
    # per unit that saw their unit's first three changes
    channel_layer_at(redis_server.url(1), backend)
    # (its catch-up tick every second: the change committed while Redis is down is only in the outbox)
    proc, port = spawn_daphne(
        CHANNEL_LAYER_BACKEND=backend, TEST_CHANNEL_LAYER_URL=redis_server.url(1),
        TEST_KEYS_REDIS_URL=redis_server.url(2), REALTIME_REVALIDATE_SECONDS="1",
    )
    clients = {world.id: [SeqClient(port, world.token()) for _ in range(2)] for world in (unit_a, unit_b)}
    everyone = clients[unit_a.id] + clients[unit_b.id]
    groups = [f"unit_{unit_a.id}", f"unit_{unit_b.id}"]
    where = {"url": redis_server.url(1), "backend": backend}

    async def scenario():
        for client in everyone:
            await client.open()
        await relocate_async(unit_a, 3)
        await relocate_async(unit_b, 3)
        await asyncio.gather(*(client.follow(until=3, timeout=15) for client in everyone))
        joined_before = await asyncio.to_thread(wait_for_groups, groups, True, 5, **where)
        # when Redis goes down (every key and subscription lost), a change commits while it is down
        # (its publish fails: only the outbox has it),
        await asyncio.to_thread(redis_server.stop)
        await relocate_async(unit_a, 1)
        # and Redis comes back and more changes commit
        await asyncio.to_thread(redis_server.start)
        await relocate_async(unit_a, 3)
        await relocate_async(unit_b, 4)
        await asyncio.gather(*(client.follow(until=7, timeout=30) for client in everyone))
        # (and the hub joins its groups again in the new Redis, so live delivery resumes too)
        joined_after = await asyncio.to_thread(wait_for_groups, groups, True, 15, **where)
        filled_before = await asyncio.to_thread(hub_filled, proc, url=redis_server.url(2))
        await relocate_async(unit_b, 1)
        await asyncio.gather(*(client.follow(until=8, timeout=15) for client in clients[unit_b.id]))
        await asyncio.gather(*(client.read_for(0.3) for client in everyone))
        # (the live update came by the push in the new Redis, not by the hub's 1 s outbox fill)
        filled_after = await asyncio.to_thread(hub_filled, proc, url=redis_server.url(2))
        await asyncio.gather(*(client.close() for client in everyone))
        return joined_before, joined_after, filled_after - filled_before

    joined_before, joined_after, filled_live = asyncio.run(scenario())

    # then every client has every seq of its unit exactly once, in order, without a resync
    assert joined_before == joined_after == groups
    assert filled_live == 0
    for client in clients[unit_a.id]:
        client.assert_exactly(1, 7)
    for client in clients[unit_b.id]:
        client.assert_exactly(1, 8)
    assert all(client.resyncs == [] for client in everyone)


def _client_ids(url: str) -> set[str]:
    """Ids of the connections a Redis server has open on the database of `url`, other than the one
    asking (the keys database of the same server has clients of its own: metric reports)."""
    client = redis.Redis.from_url(url)
    try:
        mine, db = client.client_id(), client.connection_pool.connection_kwargs.get("db", 0)
        return {str(c["id"]) for c in client.client_list() if int(c["id"]) != mine and int(c["db"]) == db}
    finally:
        client.close()


@LAYERS
def test_an_idle_connection_outlives_redis_pys_socket_timeout(
    spawn_daphne, redis_server, channel_layer_at, unit_a, backend
):
    # given a Daphne on a Redis of the test's own, whose only way to learn of an update is the
    # channel layer (its catch-up tick, which reads the database, is pushed out to 60 s)
    channel_layer_at(redis_server.url(1), backend)
    proc, port = spawn_daphne(
        CHANNEL_LAYER_BACKEND=backend, TEST_CHANNEL_LAYER_URL=redis_server.url(1),
        TEST_KEYS_REDIS_URL=redis_server.url(2), REALTIME_REVALIDATE_SECONDS="60",
    )
    client = SeqClient(port, unit_a.token())

    async def scenario():
        await client.open()
        await asyncio.sleep(0.5)
        before = await asyncio.to_thread(_client_ids, redis_server.url(1))
        # when nothing happens for 7 s (redis-py 8's default socket_timeout is 5 s), then one change
        await asyncio.sleep(7)
        after = await asyncio.to_thread(_client_ids, redis_server.url(1))
        await relocate_async(unit_a, 1)
        await client.follow(until=1, timeout=10, reconnect=False)
        await client.close()
        return before, after

    before, after = asyncio.run(scenario())

    # then the Daphne's channel-layer connections (its blocking receive among them) are the same
    # ones: none timed out and was replaced,
    assert before and after == before
    # and the update arrived live on the same WebSocket, with nothing amiss in the log
    assert (client.seqs, client.closes) == ([1], [])
    output = proc.output()
    assert "Timeout reading" not in output and "hub receive failed" not in output


@LAYERS
def test_500_clients_connecting_at_once_are_all_served_and_leave_nothing_behind(
    spawn_daphne, channel_layer_at, unit_a, unit_b, backend
):
    # given a Daphne on the test Redis with the channel layer under test, and 500 users (250 per
    # unit), each about to connect once
    raise_open_files_limit()
    channel_layer_at(settings.CHANNEL_LAYER_URL, backend)
    _, port = spawn_daphne(CHANNEL_LAYER_BACKEND=backend)
    users = [user for world in (unit_a, unit_b) for user in make_users(world, 250)]
    clients = [SeqClient(port, access_token(user)) for user in users]

    async def scenario():
        # when all connect at the same moment
        hellos = await asyncio.gather(*(client.open(retry_for=0) for client in clients))
        # and each unit then changes once
        await relocate_async(unit_a, 1)
        await relocate_async(unit_b, 1)
        await asyncio.gather(*(client.follow(until=1, timeout=60, reconnect=False) for client in clients))
        # and all of them then leave at the same moment
        await asyncio.gather(*(client.close() for client in clients))
        return hellos

    hellos = asyncio.run(scenario())

    # then every one was greeted on its first try, and every one was live,
    assert [h["unit_id"] for h in hellos] == [unit_a.id] * 250 + [unit_b.id] * 250
    assert all(client.seqs == [1] and client.closes == [] for client in clients)
    # and no channel-layer group membership outlives them (a leftover core-layer membership stays
    # for group_expiry, a day; a pub/sub one for as long as the process lives)
    groups = [f"user_{user.id}" for user in users] + [f"unit_{world.id}" for world in (unit_a, unit_b)]
    assert wait_for_groups(groups, joined=False, timeout=15, backend=backend) == []


def test_1000_clients_reconnecting_together_after_daphne_is_killed_miss_nothing(spawn_daphne, unit_a, unit_b):
    # given 1,000 clients (500 per unit, 50 users with 10 sockets each) connected to one Daphne
    raise_open_files_limit()
    proc, port = spawn_daphne()
    tokens = {world.id: [access_token(user) for user in make_users(world, 50)] for world in (unit_a, unit_b)}
    clients = {world.id: [SeqClient(port, tokens[world.id][i % 50]) for i in range(500)] for world in (unit_a, unit_b)}
    everyone = clients[unit_a.id] + clients[unit_b.id]
    final: dict[str, int] = {}
    restarted: list = []

    async def scenario():
        for start in range(0, 1000, 250):  # connected in waves, as live clients would have
            await asyncio.gather(*(client.open(retry_for=30) for client in everyone[start : start + 250]))

        async def produce(world):
            final[world.id] = (await relocate_async(world, 40, pause=0.05))[-1]

        async def crash_and_restart():
            # when Daphne is killed (-9) while changes keep committing, and a new one takes its port
            await asyncio.sleep(1.0)
            proc.kill()
            await asyncio.to_thread(proc.popen.wait, 10)
            restarted.append((await asyncio.to_thread(spawn_daphne, port=port))[0])

        # then every client reconnects with its last_seq and follows its unit up to the final seq
        await asyncio.gather(
            produce(unit_a), produce(unit_b), crash_and_restart(),
            *(client.follow(until=lambda unit=unit_id: final.get(unit), timeout=180)
              for unit_id, group in clients.items() for client in group),
        )
        await asyncio.gather(*(client.read_for(0.5) for client in everyone))
        await asyncio.gather(*(client.close() for client in everyone))

    asyncio.run(scenario())

    # having seen every seq of its unit exactly once, in order, and no resync
    assert final == {unit_a.id: 40, unit_b.id: 40}
    # and the new Daphne's live updates came by the push, not by its 60 s outbox fill (the resumes
    # replayed what was missed; the fill brought nothing)
    assert hub_filled(restarted[0]) == 0
    for client in everyone:
        assert client.closes[:1] == [1006] and client.resyncs == []
        client.assert_exactly(1, 40)


def test_a_daphne_whose_database_is_unreachable_answers_try_again_not_bad_credentials(spawn_daphne, unit_a):
    # given a Daphne whose database does not answer (nothing listens on its port)
    _, port = spawn_daphne(DATABASE_URL="postgres://postgres@127.0.0.1:9/unreachable")

    # when a client with a valid token connects, and calls the API
    hello = asyncio.run(failed_connection(port, token=unit_a.token()))
    answer = httpx.get(f"http://127.0.0.1:{port}/api/me/", headers={"Authorization": f"Bearer {unit_a.token()}"}, timeout=30)

    # then the socket is closed 1013 (try again later: the credentials may be fine) instead of 4001,
    # and the API answers 503 in its error shape instead of a 500
    assert hello == ([], 1013)
    assert (answer.status_code, answer.json()["code"]) == (503, "service_unavailable")

"""The benchmark's own WebSocket client (`bench/wsclient.py`) against a real Daphne: what
`make bench` reports is only as true as what this client reads. It must get the greeting, every
update in order, answer the server's pings (or Daphne drops it and the benchmark measures
reconnects), connect from the local address it is given, and report a refused handshake."""

from __future__ import annotations

import asyncio
import json

import pytest

from bench import wsclient
from tests.support.realtime import relocate_async
from tests.support.ws import ws_url

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("compression", [None, "deflate"], ids=["picows", "websockets-deflate"])
def test_the_bench_client_reads_the_greeting_and_every_update_in_order(daphne, unit_a, compression):
    async def scenario():
        received: list[tuple[str, float]] = []
        client = await wsclient.connect(
            ws_url(daphne, token=unit_a.token()), lambda text, at: received.append((text, at)),
            origin="http://127.0.0.1", compression=compression, local_addr=("127.0.0.2", 0),
            on_hello=lambda hello: received.append(("hello", hello["seq"])),
        )
        seqs = await relocate_async(unit_a, 5)
        for _ in range(150):
            if len(received) >= 6:  # the greeting and five updates
                break
            await asyncio.sleep(0.1)
        local = client.local_address
        await client.send('{"type": "ping", "timestamp": "t"}')
        await asyncio.sleep(0.5)
        await client.close()
        return client.hello, seqs, received, local

    hello, seqs, received, local = asyncio.run(scenario())

    assert received[0] == ("hello", 0)  # on_hello ran first
    messages = [json.loads(text) for text, _ in received[1:]]
    assert hello["type"] == "connection_established" and hello["unit_id"] == unit_a.id
    updates = [m for m in messages if m["type"] == "data_update"]
    assert [u["seq"] for u in updates] == seqs == [1, 2, 3, 4, 5]
    assert messages[-1]["type"] == "pong"  # what the client sent reached the server
    assert all(at > 0 for _, at in received[1:])
    assert local == "127.0.0.2"


def test_the_bench_client_answers_the_servers_pings(spawn_daphne, unit_a):
    # given a Daphne that pings every second and drops a socket whose ping is unanswered for 2 s
    _, port = spawn_daphne(extra=["--ping-interval", "1", "--ping-timeout", "2"])

    async def scenario():
        received: list[str] = []
        client = await wsclient.connect(ws_url(port, token=unit_a.token()), lambda text, _: received.append(text),
                                        origin="http://127.0.0.1")
        # when the client stays idle through several pings
        await asyncio.sleep(6)
        # then it is still connected and still gets updates
        seqs = await relocate_async(unit_a, 1)
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.1)
        await client.close()
        return seqs, received

    seqs, received = asyncio.run(scenario())
    assert seqs == [1] and len(received) == 1 and '"seq":1' in received[0].replace(" ", "")


def test_a_refused_handshake_is_reported_not_hung(daphne):
    async def scenario():
        with pytest.raises(wsclient.WebSocketRefused):
            await wsclient.connect(ws_url(daphne, token="not-a-token"), lambda *_: None,
                                   origin="http://127.0.0.1", timeout=10)

    asyncio.run(scenario())

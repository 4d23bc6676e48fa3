"""A client that stops reading must not make the server buffer for it without end: once its socket
stays full for REALTIME_SLOW_CLIENT_SECONDS the server closes it (4008), and its resume with
`last_seq` fills what it missed."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
import websockets

from backend.records import services
from tests.support.realtime import SeqClient, in_thread, unit_seq
from tests.support.ws import ws_url

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


async def _stalled_client(port: int, token: str) -> SeqClient:
    """A client whose socket has a tiny receive buffer and whose library stops reading from it once
    two frames wait unread: as soon as the test stops calling recv(), the server's sends back up."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    client = SeqClient(port, token)
    client.ws = await websockets.connect(
        ws_url(port, token=token), sock=sock, additional_headers={"Origin": "http://127.0.0.1"},
        max_queue=2, max_size=None, open_timeout=10,
    )
    hello = json.loads(await client.ws.recv())
    client.start = client.last_seq = hello["seq"]
    client.connects = 1
    return client


def test_a_client_that_stops_reading_is_closed_and_resumes_without_a_gap(spawn_daphne, unit_a):
    # given a Daphne that gives up on a socket that stays full for 1 s (and replays gaps of any size
    # this test makes), a healthy client and a stalled one
    proc, port = spawn_daphne(REALTIME_SLOW_CLIENT_SECONDS="1", REALTIME_REPLAY_LIMIT="1000000")
    token = unit_a.token()

    async def scenario():
        healthy = SeqClient(port, token)
        await healthy.open()
        stalled = await _stalled_client(port, token)
        # when updates keep being committed (2,000 per transaction, about 0.5 MB) and the stalled client
        # reads nothing, until the server gives up on it: the kernel's socket buffers (autotuned up to
        # tcp_wmem's maximum) take a few MB first
        rounds = 0
        while "client too slow" not in proc.output():
            assert rounds < 40, "the server never gave up on a client that stopped reading"
            await in_thread(services.crates_create_bulk, actor=unit_a.store, unit=unit_a.unit, count=2000)
            rounds += 1
            await asyncio.sleep(0.5)
        final = await in_thread(unit_seq, unit_a)
        # then the healthy client got everything,
        await healthy.follow(until=final, timeout=60)
        # and when the stalled client reads again, its connection ends (4008, or dropped if the close
        # frame never got through its full buffer) and its resume with last_seq brings the rest
        await stalled.follow(until=final, timeout=60)
        await healthy.close()
        await stalled.close()
        return final, healthy, stalled

    final, healthy, stalled = asyncio.run(scenario())

    healthy.assert_exactly(1, final)
    assert healthy.closes == []
    assert stalled.closes in ([4008], [1006]) and stalled.connects == 2
    stalled.assert_exactly(1, final)
    assert stalled.resyncs == []

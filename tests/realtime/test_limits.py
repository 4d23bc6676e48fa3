"""The realtime tier's limits on real Daphne processes: connections per user across processes (4029),
client messages per connection (rate_limited), and the bytes a connection may hold for a client that
does not read (a resume of a large gap that never reads is closed, not buffered)."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import psutil
import pytest
import websockets

from tests.support.factories import outbox_history_fast
from tests.support.realtime import SeqClient, failed_connection
from tests.support.ws import connect, recv_json, ws_url

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PING = json.dumps({"type": "ping"})


async def greeted_once_a_slot_frees(port: int, token: str, within: float, every: float) -> tuple[dict, float]:
    """Connect until greeted, each refusal a 4029 (all the user's slots taken) and none after `within`
    seconds: (the greeting, seconds waited)."""
    started = time.monotonic()
    while True:
        ws = await connect(port, token=token)
        try:
            hello = await recv_json(ws, 10)
            break
        except websockets.ConnectionClosed:
            assert ws.close_code == 4029 and time.monotonic() - started < within, "the slot stayed taken"
            await asyncio.sleep(every)
    await ws.close()
    return hello, time.monotonic() - started


def test_a_users_connections_are_capped_across_daphne_processes(spawn_daphne, unit_a):
    # given two Daphne processes and a cap of three connections per user
    first, port_a = spawn_daphne(WS_MAX_CONNECTIONS_PER_USER="3")
    _, port_b = spawn_daphne(WS_MAX_CONNECTIONS_PER_USER="3")
    token = unit_a.token()

    async def scenario():
        # when the user opens two sockets on one process and one on the other
        held = [await connect(port, token=token) for port in (port_a, port_a, port_b)]
        greetings = [(await recv_json(ws))["type"] for ws in held]
        # then a fourth, on either process, is refused with 4029 before any greeting
        refused = [await failed_connection(port, token=token) for port in (port_a, port_b)]
        # and a colleague is not affected
        colleague = await connect(port_b, token=unit_a.token(unit_a.store))
        colleague_hello = (await recv_json(colleague))["type"]
        # and once one socket closes, its slot is free again
        await held.pop(0).close()
        await asyncio.sleep(0.5)
        again = await connect(port_b, token=token)
        again_hello = (await recv_json(again))["type"]
        for ws in (*held, colleague, again):
            await ws.close()
        return greetings, refused, colleague_hello, again_hello

    greetings, refused, colleague_hello, again_hello = asyncio.run(scenario())
    assert greetings == ["connection_established"] * 3
    assert refused == [([], 4029), ([], 4029)]
    assert colleague_hello == again_hello == "connection_established"
    assert first.alive


def test_the_slots_of_a_killed_daphne_are_freed_by_its_expired_heartbeat(spawn_daphne, unit_a):
    # given a user holding all three of their slots on a Daphne that is then killed with -9
    doomed, port_a = spawn_daphne(WS_MAX_CONNECTIONS_PER_USER="3")
    _, port_b = spawn_daphne(WS_MAX_CONNECTIONS_PER_USER="3")
    token = unit_a.token()

    async def scenario():
        held = [await connect(port_a, token=token) for _ in range(3)]
        for ws in held:
            await recv_json(ws)
        refused_while_alive = await failed_connection(port_b, token=token)
        doomed.kill()
        doomed.popen.wait(10)
        # when the user reconnects to the surviving process (as clients do after a crash)
        hello, waited = await greeted_once_a_slot_frees(port_b, token, within=30, every=0.5)
        return refused_while_alive, hello, waited

    refused, hello, waited = asyncio.run(scenario())
    # then the slots came back once the dead process's heartbeat expired (5 report ticks: 5 s here)
    assert refused == ([], 4029)
    assert hello["type"] == "connection_established" and waited < 15


def test_a_slot_whose_release_failed_at_the_close_is_freed_at_the_next_heartbeat(spawn_daphne, unit_a):
    # given a Daphne allowing one connection per user, whose every release at a close fails (the keys
    # server dropped the connection just then)
    proc, port = spawn_daphne(WS_MAX_CONNECTIONS_PER_USER="1", FAULT_POINTS="connections.release=drop")
    token = unit_a.token()

    async def scenario():
        ws = await connect(port, token=token)
        await recv_json(ws)
        # when the user closes their only socket and opens another
        await ws.close()
        return await greeted_once_a_slot_frees(port, token, within=10, every=0.2)

    hello, waited = asyncio.run(scenario())
    # then the failed release is retried at the next heartbeat (every second here): the slot is free
    # again within a few ticks, not when the set's key expires a day later, while the process lives
    proc.wait_for_output("releasing a connection slot failed; retried at the next heartbeat")
    assert hello["type"] == "connection_established" and waited < 5
    assert proc.alive


def test_a_client_flooding_messages_is_rate_limited_and_stays_connected(spawn_daphne, unit_a):
    # given a Daphne allowing 10 messages a second in bursts of 20
    _, port = spawn_daphne(WS_CLIENT_MESSAGES_PER_SECOND="10", WS_CLIENT_MESSAGES_BURST="20")

    async def scenario():
        ws = await connect(port, token=unit_a.token())
        await recv_json(ws)
        # when it sends 200 pings at once
        for _ in range(200):
            await ws.send(PING)
        answers = []
        try:
            while True:
                answers.append(json.loads(await asyncio.wait_for(ws.recv(), 1.5)))
        except TimeoutError:
            pass
        # and, after a pause, one more
        await asyncio.sleep(1.5)
        await ws.send(PING)
        later = await recv_json(ws)
        await ws.close()
        return answers, later

    answers, later = asyncio.run(scenario())
    pongs = [a for a in answers if a["type"] == "pong"]
    limited = [a for a in answers if a["type"] == "error"]
    # then about a burst's worth was answered, the rest dropped with one rate_limited notice (at
    # most one a second), and the connection still works
    assert 20 <= len(pongs) <= 40, len(pongs)
    assert 1 <= len(limited) <= 3 and {a["code"] for a in limited} == {"rate_limited"}
    assert later["type"] == "pong"


def _rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def test_a_resume_of_a_large_gap_that_never_reads_is_closed_not_buffered(spawn_daphne, unit_a):
    # given a unit with 40,000 committed events (about 10 MB of frames) and a Daphne that replays a
    # gap that large, buffers at most its default 1 MiB for a client, and waits 3 s for one to drain
    proc, port = spawn_daphne(REALTIME_REPLAY_LIMIT="1000000", REALTIME_SLOW_CLIENT_SECONDS="3")
    final = outbox_history_fast(unit_a.unit, 40_000)

    async def scenario():
        # warm the process up (first connection, first replay) before measuring it
        warm = SeqClient(port, unit_a.token(unit_a.store), start=None)
        await warm.open()
        await warm.close()
        before = _rss_mb(proc.popen.pid)
        # when a client resumes from seq 0 with a tiny receive buffer and never reads
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        stalled = await websockets.connect(
            ws_url(port, token=unit_a.token(), last_seq=0), sock=sock,
            additional_headers={"Origin": "http://127.0.0.1"}, max_queue=1, max_size=None, open_timeout=10,
        )
        peak, started = before, time.monotonic()
        while "client too slow" not in proc.output() and time.monotonic() - started < 30:
            peak = max(peak, _rss_mb(proc.popen.pid))
            await asyncio.sleep(0.2)
        closed_after = time.monotonic() - started
        sock_closed = stalled
        await asyncio.sleep(1)
        peak = max(peak, _rss_mb(proc.popen.pid))
        await sock_closed.close()
        # and a healthy client (batch=1, to read 40,000 events quickly) still gets the whole gap
        healthy = SeqClient(port, unit_a.token(unit_a.store), batch=True)
        healthy.last_seq = 0
        healthy.start = 0
        await healthy.open()
        await healthy.follow(until=final, timeout=90, reconnect=False)
        await healthy.close()
        return before, peak, closed_after, healthy

    before, peak, closed_after, healthy = asyncio.run(scenario())
    # then the server gave up on it after its grace period instead of buffering the whole gap,
    assert closed_after < 15, closed_after
    # its memory grew by well under the 10 MB the gap would take (the budget, Twisted's buffer,
    # one replay page, allocator slack),
    assert peak - before < 6, (before, peak)
    # and the healthy client got every seq once
    healthy.assert_exactly(1, final)

"""Nothing a client sends can crash the connection handler or leave server state behind.

Every hostile frame gets an `error` (the connection stays open) or a documented close code; a
connection whose handling fails anywhere is unregistered from the hub, so its count in /metrics
returns to the truth and later events are not handed to dead connections.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from tests.support.realtime import SeqClient, failed_connection, relocate_async, wait_for_hub_connections
from tests.support.ws import connect, recv_json

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PING = json.dumps({"type": "ping", "timestamp": "2026-01-15T10:30:00.000Z"})

HOSTILE_FRAMES = {
    # deep nesting makes json raise RecursionError, not ValueError
    "1,000 [": ("[" * 1000, "malformed_json"),
    "800 nested objects": ('{"a":' * 800, "malformed_json"),
    "nesting under the size limit": ("[" * 4000 + "]" * 90, "malformed_json"),
    "a 4,000-digit number": ("9" * 4000, "invalid_message"),
    "a 10,000-digit number": ("9" * 10_000, "message_too_large"),
    "a 64 KB frame": (json.dumps({"type": "ping", "pad": "x" * 65_000}), "message_too_large"),
    "NaN": ("NaN", "invalid_message"),
    "an infinite float": ("1e99999", "invalid_message"),
    "null": ("null", "invalid_message"),
    "a lone surrogate as type": ('{"type": "\\ud800"}', "unknown_type"),
    "a null type": ('{"type": null}', "invalid_message"),
    "a number as type": ('{"type": 1}', "invalid_message"),
    "an empty frame": ("", "malformed_json"),
    "a binary frame": (b"\x00\xff" * 100, "binary_not_supported"),
}


def test_every_hostile_frame_gets_its_error_and_the_connection_stays_open(spawn_daphne, unit_a):
    proc, port = spawn_daphne()

    async def scenario():
        colleague = SeqClient(port, unit_a.token(unit_a.store))
        await colleague.open()
        ws = await connect(port, token=unit_a.token())
        await recv_json(ws)
        answers = {}
        for name, (frame, _) in HOSTILE_FRAMES.items():
            # when the client sends each hostile frame, then a ping
            await ws.send(frame)
            error = await recv_json(ws)
            await ws.send(PING)
            answers[name] = (error["type"], error["code"], (await recv_json(ws))["type"])
        await ws.close()
        # and a colleague in the unit still gets the next change
        await relocate_async(unit_a, 1)
        await colleague.follow(until=colleague.start + 1, timeout=15, reconnect=False)
        await colleague.close()
        return answers, colleague

    answers, colleague = asyncio.run(scenario())

    # then each got an error with its code, then its pong: the connection survived every one
    assert answers == {name: ("error", code, "pong") for name, (_, code) in HOSTILE_FRAMES.items()}
    assert colleague.seqs == [colleague.start + 1] and colleague.closes == []
    # and nothing is left registered once the sockets are gone
    assert wait_for_hub_connections(proc, 0) == 0
    assert "Traceback" not in proc.output()


def test_invalid_utf8_in_a_text_frame_closes_1007_and_leaves_nothing_registered(spawn_daphne, unit_a):
    proc, port = spawn_daphne()

    async def scenario():
        ws = await connect(port, token=unit_a.token())
        await recv_json(ws)
        # when the client sends bytes that are not UTF-8 as a text frame
        await ws.send(b"\xff\xfe{", text=True)
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed:
            return ws.close_code
        return None

    # then the protocol layer closes it as invalid payload data, and the hub forgets it
    assert asyncio.run(scenario()) == 1007
    assert wait_for_hub_connections(proc, 0) == 0


def test_sockets_that_sent_hostile_frames_and_closed_are_not_counted_or_served(spawn_daphne, unit_a):
    # the attack of the report: 5 sockets each send 1,000 "[" and close
    proc, port = spawn_daphne()

    async def scenario():
        for _ in range(5):
            ws = await connect(port, token=unit_a.token())
            await recv_json(ws)
            await ws.send("[" * 1000)
            assert (await recv_json(ws))["code"] == "malformed_json"
            await ws.close()
        listener = SeqClient(port, unit_a.token(unit_a.store))
        await listener.open()
        # then the hub counts only the one socket still open
        counted = await asyncio.to_thread(wait_for_hub_connections, proc, 1)
        # and a change reaches it
        await relocate_async(unit_a, 1)
        await listener.follow(until=listener.start + 1, timeout=15, reconnect=False)
        await listener.close()
        return counted, listener

    counted, listener = asyncio.run(scenario())
    assert counted == 1
    assert listener.seqs == [listener.start + 1] and listener.closes == []
    assert wait_for_hub_connections(proc, 0) == 0


def test_a_failure_while_handling_a_message_answers_internal_error_and_keeps_the_socket(spawn_daphne, unit_a):
    # given a Daphne whose message handling raises (a stand-in for any bug in it)
    proc, port = spawn_daphne(FAULT_POINTS="consumer.receive=raise")

    async def scenario():
        ws = await connect(port, token=unit_a.token())
        await recv_json(ws)
        await ws.send(PING)
        error = await recv_json(ws)
        await ws.send(PING)
        again = await recv_json(ws)
        await ws.close()
        return error, again

    error, again = asyncio.run(scenario())

    # then the client is told, and the connection is still usable
    assert (error["type"], error["code"]) == ("error", "internal_error")
    assert (again["type"], again["code"]) == ("error", "internal_error")
    assert wait_for_hub_connections(proc, 0) == 0


@pytest.mark.parametrize(("fault", "code"), [("drop", 1013), ("raise", 1011)])
def test_a_connect_that_fails_to_join_closes_with_a_defined_code_and_leaks_nothing(spawn_daphne, unit_a, fault, code):
    # given a Daphne whose channel-layer group_add fails: Redis dropped the connection (transient),
    # or anything else (a bug)
    proc, port = spawn_daphne(FAULT_POINTS=f"hub.group_add={fault}")

    async def scenario():
        return [await failed_connection(port, token=unit_a.token()) for _ in range(3)]

    # then each connection is closed with 1013 (try again later) or 1011, without a greeting
    assert asyncio.run(scenario()) == [([], code)] * 3
    # and none of them stays registered with the hub
    assert wait_for_hub_connections(proc, 0) == 0

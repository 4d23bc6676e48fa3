"""Generated input against a real Daphne: whatever a client sends, the server answers with a defined
message or a documented close code, logs no traceback, keeps no connection registered once the
sockets are gone, and keeps serving a colleague in the same unit.

Two campaigns (Hypothesis): client frames of every kind on one long-lived socket (reopened after a
documented close), and handshake query strings (`token`, `ticket`, `last_seq`, `batch` and the other
parameters clients may send), one connection each.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import jsonschema
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.events.schema import SCHEMAS
from tests.support.loop import BackgroundLoop
from tests.support.realtime import SeqClient, relocate_async, wait_for_hub_connections
from tests.support.ws import connect, recv_json

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# What a client frame may be answered with, and the close codes a frame may cause (docs/realtime.md).
ANSWERS = {"pong", "error"}
FRAME_CLOSES = {1007, 1009}
def campaign_settings(examples: int) -> settings:
    return settings(
        max_examples=examples, deadline=None, print_blob=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


FRAME_EXAMPLES, HANDSHAKE_EXAMPLES = 400, 150

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**30, max_value=10**200),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=200),
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=20), inner, max_size=8),
    max_leaves=30,
)
MESSAGE_TYPES = ["ping", "pong", "subscribe", "unsubscribe", "viewing", "editing", "idle", "error", "data_update"]
client_messages = st.builds(
    lambda kind, fields, extra: {**extra, **fields, "type": kind},
    st.one_of(st.sampled_from(MESSAGE_TYPES), st.text(max_size=60), json_scalars),
    st.fixed_dictionaries(
        {},
        optional={
            "timestamp": json_values, "entity": json_values, "id": json_values, "ids": json_values,
            "entities": json_values, "mine": json_values,
        },
    ),
    st.dictionaries(st.text(max_size=20), json_values, max_size=4),
)
frames = st.one_of(
    client_messages.map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=6000),
    st.binary(max_size=6000),
    st.integers(min_value=1, max_value=20_000).map(lambda n: "[" * n),
    st.integers(min_value=1, max_value=3000).map(lambda n: '{"a":' * n),
    st.integers(min_value=4000, max_value=12_000).map(lambda n: "9" * n),
    st.integers(min_value=60_000, max_value=70_000).map(lambda n: json.dumps({"type": "ping", "pad": "x" * n})),
    st.binary(min_size=1, max_size=200).map(lambda b: ("bytes-as-text", b)),
)


class Socket:
    """One client socket, reopened after a documented close; counts what happened."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.ws = None
        self.answers: dict[str, int] = {}
        self.closes: dict[int, int] = {}

    async def open(self) -> None:
        self.ws = await connect(self.port, token=self.token)
        assert (await recv_json(self.ws))["type"] == "connection_established"

    async def exchange(self, frame) -> None:
        """Send the frame, then a ping: every message before the ping's pong is the frame's answer.
        A valid subscribe, unsubscribe or presence message is answered by nothing (silence), so the
        ping is what tells that the server has handled it and is still serving the socket."""
        pongs = 1 + _is_ping(frame)
        try:
            if isinstance(frame, tuple):  # raw bytes sent as a text frame: invalid UTF-8 when it is
                await self.ws.send(frame[1], text=True)
            else:
                await self.ws.send(frame)
            await self.ws.send(json.dumps({"type": "ping", "timestamp": "sync"}))
            answers = []
            while pongs:
                answer = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
                assert answer["type"] in ANSWERS, answer
                jsonschema.validate(answer, SCHEMAS[answer["type"]])
                if answer["type"] == "pong":
                    pongs -= 1
                if pongs:
                    answers.append(answer)
        except websockets.ConnectionClosed:
            code = self.ws.close_code
            assert code in FRAME_CLOSES, f"frame {str(frame)[:200]!r} closed the socket with {code}"
            self.closes[code] = self.closes.get(code, 0) + 1
            await self.open()
            return
        assert len(answers) <= 1, answers
        key = "silence" if not answers else answers[0]["type"] if answers[0]["type"] != "error" else f"error:{answers[0]['code']}"
        self.answers[key] = self.answers.get(key, 0) + 1


def _is_ping(frame) -> bool:
    """Whether the server answers this frame with a pong of its own."""
    if not isinstance(frame, str) or len(frame.encode(errors="replace")) > 4096:
        return False
    try:
        message = json.loads(frame)
    except (ValueError, RecursionError):
        return False
    return isinstance(message, dict) and message.get("type") == "ping"


def test_generated_client_frames_get_defined_answers_and_leak_nothing(spawn_daphne, unit_a):
    # (the message rate limit, tested on its own in test_limits.py, would drop frames of this flood)
    proc, port = spawn_daphne(WS_CLIENT_MESSAGES_PER_SECOND="100000", WS_CLIENT_MESSAGES_BURST="100000")
    loop = BackgroundLoop()
    colleague = SeqClient(port, unit_a.token(unit_a.store))
    socket = Socket(port, unit_a.token())
    loop.run(colleague.open())
    loop.run(socket.open())

    @campaign_settings(FRAME_EXAMPLES)
    @given(frame=frames)
    def campaign(frame):
        loop.run(socket.exchange(frame))

    try:
        campaign()
        loop.run(socket.ws.close())
        # a colleague's socket in the unit still receives the next update, pushed live
        loop.run(relocate_async(unit_a, 1))
        loop.run(colleague.follow(until=colleague.start + 1, timeout=15, reconnect=False))
        loop.run(colleague.close())
    finally:
        loop.close()

    assert colleague.seqs == [colleague.start + 1] and colleague.closes == []
    assert sum(socket.answers.values()) + sum(socket.closes.values()) >= FRAME_EXAMPLES // 2  # (duplicates are skipped)
    assert wait_for_hub_connections(proc, 0) == 0
    output = proc.output()
    assert "Traceback" not in output and "Exception inside application" not in output
    print(f"\nframes campaign: answers {socket.answers}, closes {socket.closes}")


query_values = st.one_of(
    st.text(max_size=300), st.integers().map(str), st.just(""), st.binary(max_size=50).map(lambda b: b.hex())
)
PARAMETERS = ["token", "ticket", "last_seq", "epoch", "batch", "presence", "activity"]


def test_generated_handshake_queries_are_greeted_exactly_with_a_valid_token_and_leak_nothing(spawn_daphne, unit_a):
    proc, port = spawn_daphne()
    loop = BackgroundLoop()
    good = unit_a.token()
    outcomes: dict[str, int] = {}

    async def handshake(query: str) -> str:
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/ws/updates/?{query}", additional_headers={"Origin": "http://127.0.0.1"},
            open_timeout=10, max_size=None,
        )
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        except websockets.ConnectionClosed:
            assert ws.close_code == 4001, (query[:300], ws.close_code)
            return "4001"
        assert first["type"] == "connection_established", first
        jsonschema.validate(first, SCHEMAS["connection_established"])
        await ws.close()
        return "greeted"

    @campaign_settings(HANDSHAKE_EXAMPLES)
    @given(
        params=st.dictionaries(st.sampled_from(PARAMETERS) | st.text(max_size=10), query_values, max_size=5),
        with_good_token=st.booleans(),
    )
    def campaign(params, with_good_token):
        if with_good_token:
            params = {**params, "token": good}
            params.pop("ticket", None)
        query = "&".join(f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in params.items())
        result = loop.run(handshake(query))
        # a valid token is always greeted, whatever else the query holds (4001 is for bad credentials
        # only), and a query without one (no token, or a generated one; no ticket but a generated one)
        # is always closed 4001: nothing else in the query lets a connection in
        assert result == ("greeted" if with_good_token else "4001"), (with_good_token, query[:300])
        outcomes[result] = outcomes.get(result, 0) + 1

    try:
        campaign()
    finally:
        loop.close()

    assert sum(outcomes.values()) >= HANDSHAKE_EXAMPLES // 2  # (duplicates are skipped)
    assert outcomes.get("4001", 0) > 0 and outcomes.get("greeted", 0) > 0, outcomes
    assert wait_for_hub_connections(proc, 0) == 0
    output = proc.output()
    assert "Traceback" not in output and "Exception inside application" not in output
    print(f"\nhandshake campaign: {outcomes}")

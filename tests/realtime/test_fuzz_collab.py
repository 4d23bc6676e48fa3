"""Generated `subscribe`, `unsubscribe`, `viewing`, `editing` and `idle` messages (Hypothesis) on a
presence-enabled socket of unit A: each is answered by nothing (accepted) or an `error`
invalid_message, never a close (1011 least of all); the data_updates that reach the socket are
exactly unit A's updates that match the filter in force (docs/realtime.md's rule), so no filter
reaches another unit's ids or widens past the unit; once the socket closes, its presence is gone
and nothing is left registered."""

from __future__ import annotations

import json
import re
import time

import jsonschema
import pytest
import redis
from django.conf import settings as django_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.events.schema import ENTITIES, SCHEMAS
from tests.support.loop import BackgroundLoop
from tests.support.realtime import relocate_async, wait_for_hub_connections
from tests.support.ws import connect, recv_json

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

EXAMPLES = 300
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def test_generated_subscribe_and_presence_messages_never_fail_or_leak(spawn_daphne, unit_a, unit_b):
    proc, port = spawn_daphne(WS_CLIENT_MESSAGES_PER_SECOND="100000", WS_CLIENT_MESSAGES_BURST="100000")
    own = [str(c.id) for c in unit_a.crates]
    foreign = [str(c.id) for c in unit_b.crates]
    token = unit_a.token(unit_a.requester)
    loop = BackgroundLoop()
    state = {"filter": None, "relocations": 0, "received": 0, "expected": 0, "answers": {}}

    ids = st.one_of(st.sampled_from(own), st.sampled_from(foreign), st.uuids().map(str), st.text(max_size=40))
    junk = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=30), st.lists(st.integers(), max_size=3))
    messages = st.one_of(
        st.fixed_dictionaries(
            {"type": st.just("subscribe")},
            optional={
                "entities": st.one_of(st.lists(st.sampled_from([*ENTITIES, "secret", "CRATE"]), max_size=7), junk),
                "ids": st.one_of(st.lists(ids.map(lambda i: i.upper() if len(i) % 3 == 0 else i), max_size=6), junk),
                "mine": st.one_of(st.booleans(), junk),
                "unit_id": st.just(str(unit_b.unit.id)),
            },
        ),
        st.just({"type": "unsubscribe"}),
        st.fixed_dictionaries(
            {"type": st.sampled_from(["viewing", "editing"])},
            optional={"entity": st.one_of(st.sampled_from(ENTITIES), junk), "id": st.one_of(ids, junk)},
        ),
        st.just({"type": "idle"}),
    )

    def matches(update: dict) -> bool:
        """The documented rule, for a relocation by the store (never the requester's own)."""
        rule = state["filter"]
        if rule is None:
            return True
        entities, id_set, _mine = rule
        if entities is not None and update["entity"] not in entities:
            return False
        if id_set is None and not _mine:
            return True
        return id_set is not None and update["data"]["id"] in id_set

    def expected_rule(message: dict):
        """What the server should make of a subscribe: a rule, or None when it must refuse it."""
        entities, id_set, mine = None, None, False
        if set(message) - {"type", "entities", "ids", "mine"}:
            return "refused"  # another unit's id, or any key but these three
        if "entities" in message:
            value = message["entities"]
            if not isinstance(value, list) or not value or len(value) > 10 or not all(
                isinstance(e, str) and e in ENTITIES for e in value
            ):
                return "refused"
            entities = set(value)
        if "ids" in message:
            value = message["ids"]
            if not isinstance(value, list) or not value or len(value) > 100:
                return "refused"
            if not all(isinstance(i, str) and UUID.fullmatch(i.lower()) for i in value):
                return "refused"
            id_set = {i.lower() for i in value}
        if "mine" in message:
            if not isinstance(message["mine"], bool):
                return "refused"
            mine = message["mine"]
        if entities is None and id_set is None and not mine:
            return None
        return entities, id_set, mine

    async def open_socket():
        ws = await connect(port, token=token, presence=1)
        assert (await recv_json(ws))["type"] == "connection_established"
        snapshot = await recv_json(ws)
        jsonschema.validate(snapshot, SCHEMAS["presence"])
        return ws

    ws = loop.run(open_socket())
    watcher_token = unit_a.token(unit_a.store)

    async def open_watcher():
        watcher = await connect(port, token=watcher_token)
        assert (await recv_json(watcher))["type"] == "connection_established"
        return watcher

    watcher = loop.run(open_watcher())

    async def relocate_and_watch() -> None:
        """One change in unit B, one in unit A; back once the hub has handed A's to every socket."""
        await relocate_async(unit_b, 1)
        seq = (await relocate_async(unit_a, 1))[-1]
        while (message := await recv_json(watcher, 15))["type"] != "data_update" or message["seq"] < seq:
            pass

    async def exchange(message: dict | None) -> list[dict]:
        if message is not None:
            await ws.send(json.dumps(message))
        await ws.send(json.dumps({"type": "ping", "timestamp": "sync"}))
        got = []
        while (answer := await recv_json(ws, 10))["type"] != "pong":
            jsonschema.validate(answer, SCHEMAS[answer["type"]])
            got.append(answer)
        return got

    def check(answers: list[dict]) -> list[dict]:
        """Every data_update must be one the filter lets through; returns the other answers."""
        rest = []
        for answer in answers:
            if answer["type"] == "data_update":
                assert answer["data"]["id"] in own, answer  # never another unit's
                assert matches(answer), (state["filter"], answer)
                state["received"] += 1
            elif answer["type"] != "presence_update":
                rest.append(answer)
        return rest

    @settings(
        max_examples=EXAMPLES, deadline=None, print_blob=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(message=messages)
    def campaign(message):
        answers = check(loop.run(exchange(message)))
        assert len(answers) <= 1, answers
        if answers:
            assert answers[0]["type"] == "error" and answers[0]["code"] == "invalid_message", answers
        if message["type"] == "subscribe":
            rule = expected_rule(message)
            assert (rule == "refused") == bool(answers), (message, answers)
            if rule != "refused":
                state["filter"] = rule
        elif message["type"] == "unsubscribe":
            state["filter"] = None
        key = "accepted" if not answers else "refused"
        state["answers"][f"{message['type']}:{key}"] = state["answers"].get(f"{message['type']}:{key}", 0) + 1
        # now and then, a change in each unit: what reaches the socket must match the filter
        state["relocations"] += 1
        if state["relocations"] % 10 == 0:
            # unit A's change relocates its first crate: it must arrive exactly when the filter lets it through
            due = matches({"entity": "crate", "data": {"id": own[0]}})
            before = state["received"]
            loop.run(relocate_and_watch())
            assert check(loop.run(exchange(None))) == []
            assert state["received"] - before == (1 if due else 0), (state["filter"], due)
            state["expected"] += 1 if due else 0

    try:
        campaign()
        loop.run(ws.close())
        loop.run(watcher.close())
    finally:
        loop.close()

    assert state["answers"].get("subscribe:accepted", 0) > 0 and state["answers"].get("subscribe:refused", 0) > 0
    assert state["expected"] > 0 and state["received"] == state["expected"], state  # matching updates did arrive
    assert wait_for_hub_connections(proc, 0) == 0
    # the socket's presence is gone from Redis: no connection field of the user is left
    keys = redis.Redis.from_url(django_settings.KEYS_REDIS_URL)
    try:
        deadline = time.monotonic() + 10
        while keys.hlen(f"pr:{unit_a.id}:c:{unit_a.requester.id}") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert keys.hlen(f"pr:{unit_a.id}:c:{unit_a.requester.id}") == 0
    finally:
        keys.close()
    output = proc.output()
    assert "Traceback" not in output and "Exception inside application" not in output
    print(f"\ncollaboration campaign: {state['answers']}, {state['received']} matching updates received")

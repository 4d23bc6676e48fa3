"""Tokens refreshed on the open socket (docs/realtime.md, "Refreshing the token"): the greeting says
when the connection's token expires; `{"type": "refresh", "token": ...}` with a new access token of
the same active user in the same unit moves that expiry without a reconnect (the seq stream goes
on); any other token closes 4001; a user deactivated or moved since closes 4003.

Real Daphne, real `websockets` clients, real Redis; the short lifetimes are the tokens' own."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import jsonschema
import pytest
from rest_framework_simplejwt.tokens import AccessToken

from backend.accounts import services
from backend.accounts.models import User
from backend.accounts.services import user_set_password, user_update_access
from backend.events.schema import SCHEMAS
from tests.support.realtime import close_code, relocate_async
from tests.support.ws import collect_updates, connect, recv_json, recv_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _token(user, seconds: float = 900, unit_id: str | None = None) -> AccessToken:
    """An access token of `user` as the API issues it (unit claim, password hash), living `seconds`."""
    token = AccessToken.for_user(user)
    token["unit_id"] = unit_id if unit_id is not None else str(user.unit_id)
    token["role"] = user.role
    token.set_exp(lifetime=timedelta(seconds=seconds))
    return token


def _iso(exp: float) -> str:
    return datetime.fromtimestamp(exp, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_the_greeting_says_when_the_connections_token_expires(daphne, unit_a):
    token = _token(unit_a.approver, seconds=600)

    async def scenario():
        ws = await connect(daphne, token=str(token))
        hello = await recv_json(ws)
        await ws.close()
        return hello

    hello = asyncio.run(scenario())

    # then connection_established carries expires_at, the token's own expiry in ISO 8601 UTC
    assert hello["expires_at"] == _iso(float(token["exp"]))
    jsonschema.validate(hello, SCHEMAS["connection_established"], cls=jsonschema.Draft202012Validator)


def test_a_refreshed_socket_keeps_its_seq_stream_and_its_new_expiry(daphne, unit_a):
    # given a socket whose token expires in 4 s, and a change the unit already has (seq 1)
    user = unit_a.approver
    first = _token(user, seconds=4)
    second = _token(user, seconds=12)

    async def scenario():
        ws = await connect(daphne, token=str(first))
        hello = await recv_json(ws)
        await relocate_async(unit_a, 1)
        before = await collect_updates(ws, 1)
        # when the client sends a new token of the same user on the open socket
        await ws.send(json.dumps({"type": "refresh", "token": str(second)}))
        answer = await recv_until(ws, "refreshed")
        # and the first token's expiry passes (the socket would have closed 4002 then)
        await asyncio.sleep(max(float(first["exp"]) - time.time(), 0) + 1.5)
        await relocate_async(unit_a, 1)
        after = await collect_updates(ws, 1, timeout=15)
        messages, code = await close_code(ws, timeout=20)
        return hello, before, answer, after, messages, code, time.time()

    hello, before, answer, after, messages, code, closed_at = asyncio.run(scenario())

    # then the server answered `refreshed` with the new expiry, the socket stayed open past the
    # old one, and the next update came on it with the next seq (no reconnect, no replay)
    assert answer == {"type": "refreshed", "expires_at": _iso(float(second["exp"]))}
    assert [u["seq"] for u in before] == [hello["seq"] + 1]
    assert [u["seq"] for u in after] == [hello["seq"] + 2]
    # and at the new expiry it closed with 4002, as a socket never refreshed does at its own
    assert (messages, code) == ([], 4002)
    assert float(second["exp"]) - 1.0 <= closed_at <= float(second["exp"]) + 5.0


def _other_users_token(world):
    return str(_token(world.requester))


def _expired_token(world):
    return str(_token(world.approver, seconds=-5))


def _another_units_token(world):
    # a genuine token of this very user, but claiming a unit the user is not in
    return str(_token(world.approver, unit_id="6f1c2a52-8d5e-4a57-9b0e-2f1d3c4b5a69"))


def _refresh_token(world):
    from rest_framework_simplejwt.tokens import RefreshToken

    return str(RefreshToken.for_user(world.approver))


def _token_from_before_a_password_change(world):
    # a genuine token of this very user and unit, minted before the user's password was changed
    # (by the service every path of a new password goes through); the socket's own token is minted
    # after it, so only the refresh's token is stale
    before = str(_token(world.approver))
    user_set_password(user=world.approver, password="another-long-pass-2026!")
    return before


@pytest.mark.parametrize("make", [
    _other_users_token, _expired_token, _another_units_token, _refresh_token, _token_from_before_a_password_change,
    lambda world: "not-a-jwt", lambda world: "",
], ids=["another user", "expired", "another unit's claim", "a refresh token", "minted before a password change",
        "garbage", "empty"])
def test_a_refresh_with_any_other_token_closes_the_socket_4001(daphne, unit_a, make):
    # given a connected approver (a token that is refused is never taken: without the check, the
    # server answers `refreshed` and the socket stays open, and close_code times out)
    other = make(unit_a)

    async def scenario():
        ws = await connect(daphne, token=str(_token(unit_a.approver)))
        await recv_json(ws)
        # when the client sends a token that is not a valid access token of the same user and unit
        await ws.send(json.dumps({"type": "refresh", "token": other}))
        return await close_code(ws)

    # then the socket closes with 4001, with nothing before it
    assert asyncio.run(scenario()) == ([], 4001)


@pytest.mark.parametrize("change", ["deactivated", "moved"])
def test_a_refresh_for_a_user_who_lost_access_since_closes_4003(daphne, unit_a, unit_b, change):
    # given a connected user, on a Daphne whose periodic re-validation is a minute away
    user = unit_a.approver
    fresh = _token(user)

    async def scenario():
        ws = await connect(daphne, token=str(_token(user)))
        await recv_json(ws)
        # when the user is deactivated, or moved, in the database alone (no message pushed), and
        # the client then refreshes with a token it got before
        if change == "deactivated":
            await asyncio.to_thread(User.objects.filter(id=user.id).update, is_active=False)
        else:
            await asyncio.to_thread(User.objects.filter(id=user.id).update, unit=unit_b.unit)
        await ws.send(json.dumps({"type": "refresh", "token": str(fresh)}))
        return await close_code(ws)

    # then the socket closes with 4003, as the re-validation would have closed it
    assert asyncio.run(scenario()) == ([], 4003)


@pytest.mark.parametrize("change", ["moved", "deactivated"])
def test_a_refreshed_socket_is_still_closed_4003_when_the_user_is_moved(spawn_daphne, unit_a, unit_b, change,
                                                                        monkeypatch):
    # given a Daphne that re-validates its users every second, and a socket that has refreshed its
    # token on the open connection (the same user and unit: `refreshed`)
    _, port = spawn_daphne(REALTIME_REVALIDATE_SECONDS="1")
    user = unit_a.approver
    # The service's own close (a USER_CLOSE pushed to the user's sockets once its change commits) is
    # recorded, not sent: the close can then come only from the hub's periodic re-validation, the net
    # under that push, which must still cover a connection whose credentials were swapped.
    pushed = []
    monkeypatch.setattr(services, "user_close_send", lambda user_id, code: pushed.append((str(user_id), code)))

    async def scenario():
        ws = await connect(port, token=str(_token(user, seconds=600)))
        await recv_json(ws)
        await ws.send(json.dumps({"type": "refresh", "token": str(_token(user, seconds=1200))}))
        answer = await recv_until(ws, "refreshed")
        # when the user is moved to another unit (or deactivated) by the service the admin site uses
        if change == "moved":
            await asyncio.to_thread(user_update_access, user=user, unit=unit_b.unit)
        else:
            await asyncio.to_thread(user_update_access, user=user, is_active=False)
        return answer, await close_code(ws)

    answer, (messages, code) = asyncio.run(scenario())

    # then the refresh was taken, the service asked for the close (withheld here), and the hub's
    # re-validation closed the refreshed socket with 4003 within its tick. (Were a refreshed
    # connection lost to the re-validation, as a refresh that re-registered it under its new
    # credentials and dropped it from the hub's users would be, no close came: close_code times out.)
    assert answer["type"] == "refreshed"
    assert pushed == [(str(user.id), 4003)]
    assert (messages, code) == ([], 4003)


def test_a_refresh_without_a_token_is_an_invalid_message_and_the_socket_stays_open(daphne, unit_a):
    async def scenario():
        ws = await connect(daphne, token=str(_token(unit_a.approver)))
        await recv_json(ws)
        answers = []
        for frame in ({"type": "refresh"}, {"type": "refresh", "token": 42}):
            await ws.send(json.dumps(frame))
            answers.append(await recv_json(ws))
        await ws.send(json.dumps({"type": "ping", "timestamp": "2026-01-15T10:30:00.000Z"}))
        answers.append(await recv_json(ws))
        await ws.close()
        return answers

    errors = asyncio.run(scenario())
    assert [(m["type"], m.get("code")) for m in errors] == [
        ("error", "invalid_message"), ("error", "invalid_message"), ("pong", None),
    ]


def test_refresh_frames_count_against_the_client_message_limit(spawn_daphne, unit_a):
    # given a Daphne that takes 2 client messages in a burst, then one every 10 s
    _, port = spawn_daphne(WS_CLIENT_MESSAGES_PER_SECOND="0.1", WS_CLIENT_MESSAGES_BURST="2")
    token = str(_token(unit_a.approver))

    async def scenario():
        ws = await connect(port, token=token)
        await recv_json(ws)
        # when the client sends three refreshes at once
        for _ in range(3):
            await ws.send(json.dumps({"type": "refresh", "token": token}))
        answers = [await recv_json(ws) for _ in range(3)]
        await ws.close()
        return answers

    # then two are answered and the third is dropped with `rate_limited`, like any client message
    answers = asyncio.run(scenario())
    assert sorted(m["type"] if m["type"] != "error" else m["code"] for m in answers) == [
        "rate_limited", "refreshed", "refreshed",
    ]


def test_a_refresh_the_server_cannot_check_now_is_answered_and_changes_nothing(spawn_daphne, unit_a):
    # given a Daphne whose check of a refreshed token meets a dropped database connection
    _, port = spawn_daphne(FAULT_POINTS="credentials.refresh=drop")
    first = _token(unit_a.approver, seconds=600)

    async def scenario():
        ws = await connect(port, token=str(first))
        hello = await recv_json(ws)
        # when the client refreshes
        await ws.send(json.dumps({"type": "refresh", "token": str(_token(unit_a.approver))}))
        answer = await recv_json(ws)
        await ws.send(json.dumps({"type": "ping", "timestamp": "2026-01-15T10:30:00.000Z"}))
        pong = await recv_json(ws)
        await ws.close()
        return hello, answer, pong

    hello, answer, pong = asyncio.run(scenario())

    # then it hears `refresh_unavailable`, and the socket stays open on its old token (try again)
    assert (answer["type"], answer["code"]) == ("error", "refresh_unavailable")
    assert pong["type"] == "pong" and hello["expires_at"] == _iso(float(first["exp"]))

"""The rules of a live connection: 4002 when the token expires, 4003 when the user is deactivated or
moved, errors (and an open socket) for anything malformed, 1009 for a frame over Daphne's limit."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

import pytest
from rest_framework_simplejwt.tokens import AccessToken

from backend.accounts.models import User
from backend.accounts.services import user_set_password, user_update_access
from backend.accounts.tickets import ticket_issue
from backend.accounts.tokens import password_stamp
from tests.support.auth import access_token
from tests.support.realtime import SeqClient, close_code, failed_connection, make_users, raise_open_files_limit, relocate_async
from tests.support.ws import connect, recv_json

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_the_connection_closes_4002_when_its_token_expires(daphne, unit_a):
    # given an access token that expires in 6 s, and a ticket bought with a token expiring then too
    user = unit_a.approver
    token = AccessToken.for_user(user)
    token["unit_id"] = unit_a.id
    token.set_exp(lifetime=timedelta(seconds=6))
    expires_at = float(token["exp"])
    ticket = ticket_issue(
        user_id=str(user.id), access_exp=int(expires_at), stamp=password_stamp(user), unit_id=str(user.unit_id)
    )

    async def closed(ws):
        result = await close_code(ws)
        return (*result, time.time())

    async def scenario():
        # when a client connects with each and waits
        with_token = await connect(daphne, token=str(token))
        with_ticket = await connect(daphne, ticket=ticket)
        return await asyncio.gather(closed(with_token), closed(with_ticket))

    by_token, by_ticket = asyncio.run(scenario())

    # then both were connected, and closed with 4002 when the token expired (not before; JWT
    # expiry has whole-second resolution, hence the second of slack on each side)
    for messages, code, closed_at in (by_token, by_ticket):
        assert [m["type"] for m in messages] == ["connection_established"]
        assert code == 4002
        assert expires_at - 1.0 <= closed_at <= expires_at + 5.0, (closed_at, expires_at)


@pytest.mark.parametrize("change", ["deactivated", "moved"])
def test_the_connection_closes_4003_when_the_user_loses_access(spawn_daphne, unit_a, unit_b, change):
    # given a connected user, on a Daphne that re-validates every second
    _, daphne = spawn_daphne(REALTIME_REVALIDATE_SECONDS="1")
    user = unit_a.approver

    async def scenario():
        ws = await connect(daphne, token=unit_a.token(user))
        hello = await recv_json(ws)
        # when the user is deactivated, or moved to another unit, in the database (no message sent)
        if change == "deactivated":
            await asyncio.to_thread(User.objects.filter(id=user.id).update, is_active=False)
        else:
            await asyncio.to_thread(User.objects.filter(id=user.id).update, unit=unit_b.unit)
        return hello, await close_code(ws)

    hello, (messages, code) = asyncio.run(scenario())

    # then the server's periodic re-validation closes the connection with 4003
    assert hello["type"] == "connection_established"
    assert (messages, code) == ([], 4003)


def test_users_connecting_while_access_is_being_revalidated_stay_connected(spawn_daphne, unit_a):
    # given 600 users of a unit, who connect in a steady stream (10 handshakes at a time) lasting
    # several of the server's 1 s re-validation ticks, so that ticks land among the handshakes
    _, daphne = spawn_daphne(REALTIME_REVALIDATE_SECONDS="1")
    raise_open_files_limit()
    clients = [SeqClient(daphne, access_token(user)) for user in make_users(unit_a, 600)]

    async def scenario():
        gate = asyncio.Semaphore(10)

        async def connect_one(client):
            async with gate:
                await client.open(retry_for=0)

        await asyncio.gather(*(connect_one(client) for client in clients))
        # when a change then happens in the unit
        await relocate_async(unit_a, 1)
        await asyncio.gather(*(client.follow(until=1, timeout=60, reconnect=False) for client in clients))
        await asyncio.gather(*(client.close() for client in clients))

    asyncio.run(scenario())

    # then every one of them is still connected and got it: none was taken for a user who lost
    # access (4003) because it connected while the re-validation was reading the database
    assert all(client.seqs == [1] and client.closes == [] for client in clients)


def test_bad_client_messages_get_an_error_and_the_connection_stays_open(daphne, unit_a):
    frames = {
        "malformed_json": "{not json",
        "invalid_message (array)": "[1, 2]",
        "invalid_message (string)": '"ping"',
        "invalid_message (no type)": '{"kind": "ping"}',
        "unknown_type": '{"type": "join", "unit": "other"}',
        "invalid_message (subscribe to another unit)": '{"type": "subscribe", "unit": "other"}',
        "binary_not_supported": b"\x00\x01binary",
        "message_too_large (ascii)": json.dumps({"type": "ping", "pad": "x" * 4100}),
        "message_too_large (utf-8 bytes)": json.dumps({"type": "ping", "pad": "é" * 2100}, ensure_ascii=False),
    }

    async def scenario():
        ws = await connect(daphne, token=unit_a.token())
        await recv_json(ws)
        answers = {}
        for name, frame in frames.items():
            # when the client sends each bad frame, then a ping
            await ws.send(frame)
            error = await recv_json(ws)
            await ws.send(json.dumps({"type": "ping", "timestamp": "2026-01-15T10:30:00.000Z"}))
            answers[name] = (error["type"], error["code"], bool(error["message"]), (await recv_json(ws))["type"])
        # and a ping just under the limit is still a ping
        await ws.send(json.dumps({"type": "ping", "pad": "é" * 2000}, ensure_ascii=False))
        near_limit = await recv_json(ws)
        await ws.close()
        return answers, near_limit

    answers, near_limit = asyncio.run(scenario())

    # then each got an error with its code and a message, and the ping after it its pong
    assert answers == {name: ("error", name.split(" ")[0], True, "pong") for name in frames}
    assert near_limit["type"] == "pong"


def test_a_frame_over_daphnes_message_limit_closes_the_socket_1009(daphne, unit_a):
    async def scenario():
        ws = await connect(daphne, token=unit_a.token())
        await recv_json(ws)
        # when the client sends a 70,000-byte text frame (Daphne's --websocket-max-message-size is 65536)
        await ws.send(json.dumps({"type": "ping", "pad": "x" * 70_000}))
        return await close_code(ws)

    # then the protocol layer closes the connection with 1009 (message too big), before any answer
    assert asyncio.run(scenario()) == ([], 1009)


@pytest.mark.parametrize("how", ["deactivated", "moved", "deactivated in the admin", "new password"])
def test_an_access_change_closes_the_users_sockets_at_once(daphne, unit_a, unit_b, how, admin_client):
    # given a user with two sockets, on the shared Daphne (which re-validates only once a minute: the
    # close must come by the push the change sends, not by the periodic check)
    user = unit_a.approver
    token = unit_a.token(user)

    async def scenario():
        sockets = [await connect(daphne, token=token) for _ in range(2)]
        for ws in sockets:
            await recv_json(ws)
        started = time.monotonic()
        # when the change is made
        await asyncio.to_thread(_change, how, user, unit_b, admin_client)
        closes = await asyncio.gather(*(close_code(ws, timeout=15) for ws in sockets))
        return closes, time.monotonic() - started

    closes, took = asyncio.run(scenario())

    # then both sockets close with 4003 (access revoked; after a new password too: the token is no
    # longer valid and the client's refresh fails), within seconds
    assert closes == [([], 4003), ([], 4003)]
    assert took < 10


def _change(how: str, user, other_world, admin_client) -> None:
    from django.db import connection

    try:
        if how == "deactivated":
            user_update_access(user=user, is_active=False)
        elif how == "moved":
            user_update_access(user=user, unit=other_world.unit)
        elif how == "new password":
            user_set_password(user=user, password="another-long-password-2026")
        else:
            form = admin_client.get(f"/admin/accounts/user/{user.id}/change/").context["adminform"].form
            data = {k: v for k, v in form.initial.items() if v is not None}
            data.update(is_active="", unit=str(user.unit_id), role=user.role, date_joined_0="2026-01-01",
                        date_joined_1="00:00:00", username=user.username, change_reason="left the company")
            data.pop("password", None)
            data.pop("groups", None)
            data.pop("user_permissions", None)
            answer = admin_client.post(f"/admin/accounts/user/{user.id}/change/", data)
            assert answer.status_code == 302, answer.content[:2000]
    finally:
        connection.close()


def test_a_token_issued_before_a_password_change_is_refused_at_the_handshake(daphne, unit_a):
    token = unit_a.token(unit_a.requester)
    user_set_password(user=unit_a.requester, password="another-long-password-2026")
    assert asyncio.run(failed_connection(daphne, token=token)) == ([], 4001)

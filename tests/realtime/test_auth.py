"""The handshake's credentials (the public protocol, docs/realtime.md: "Bad, expired or missing credentials: the socket is
accepted and closed with code 4001"), against a real Daphne: every way in that must fail does,
before any message and before any channel-layer group is joined; a ticket works exactly once."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import timedelta

import httpx
import pytest
import redis
from django.conf import settings
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from backend.accounts.models import User
from backend.accounts.tickets import PREFIX, ticket_issue
from backend.accounts.tokens import password_stamp
from tests.support.realtime import failed_connection, joined_groups, relocate_async
from tests.support.ws import connect, recv_json

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _unb64(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _signed(user: User, lifetime: timedelta | None = None) -> AccessToken:
    token = AccessToken.for_user(user)
    token["unit_id"] = str(user.unit_id)
    token["role"] = user.role
    if lifetime is not None:
        token.set_exp(lifetime=lifetime)
    return token


def _tampered_signature(user: User) -> str:
    header, payload, signature = str(_signed(user)).split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return f"{header}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1:]}"


def _tampered_payload(user: User) -> str:
    """The signature of a real token over claims that name a superuser instead."""
    header, payload, signature = str(_signed(user)).split(".")
    other = User.objects.create_superuser(username=f"root-{user.username}", password="x", unit=user.unit)
    claims = {**_unb64(payload), "user_id": str(other.id)}
    return f"{header}.{_b64(claims)}.{signature}"


def _alg_none(user: User) -> str:
    claims = _unb64(str(_signed(user)).split(".")[1])
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


def _inactive(user: User) -> str:
    token = str(_signed(user))
    User.objects.filter(id=user.id).update(is_active=False)
    return token


def _moved(user: User, other_unit) -> str:
    token = str(_signed(user))  # its unit_id claim names the old unit
    User.objects.filter(id=user.id).update(unit=other_unit)
    return token


BAD_CREDENTIALS = {
    "missing": lambda user, other: {},
    "empty token": lambda user, other: {"token": ""},
    "garbage token": lambda user, other: {"token": "not.a.jwt"},
    "tampered signature": lambda user, other: {"token": _tampered_signature(user)},
    "tampered payload": lambda user, other: {"token": _tampered_payload(user)},
    "alg none": lambda user, other: {"token": _alg_none(user)},
    "expired token": lambda user, other: {"token": str(_signed(user, lifetime=timedelta(seconds=-30)))},
    "refresh token as access": lambda user, other: {"token": str(RefreshToken.for_user(user))},
    "inactive user": lambda user, other: {"token": _inactive(user)},
    "user moved to another unit": lambda user, other: {"token": _moved(user, other.unit)},
    "unknown ticket": lambda user, other: {"ticket": "x" * 43},
}


@pytest.mark.parametrize("case", BAD_CREDENTIALS)
def test_bad_credentials_are_accepted_then_closed_4001_without_joining(daphne, unit_a, unit_b, case):
    # given a user whose credentials are broken in one way, and a colleague connected to the unit
    user = unit_a.requester
    query = BAD_CREDENTIALS[case](user, unit_b)

    async def scenario():
        colleague = await connect(daphne, token=unit_a.token(unit_a.store))
        await recv_json(colleague)
        # when the user connects with them
        messages, code = await failed_connection(daphne, **query)
        groups = joined_groups([f"user_{user.id}"])
        # and a change then happens in the user's unit
        seqs = await relocate_async(unit_a, 1)
        update = await recv_json(colleague, timeout=15)
        await colleague.close()
        return messages, code, groups, seqs, update

    messages, code, groups, seqs, update = asyncio.run(scenario())

    # then the socket was accepted and closed with 4001 before a single message,
    assert (messages, code) == ([], 4001)
    # no group was joined for the user, while the unit's change went out as usual
    assert groups == []
    assert update["seq"] == seqs[0]


def test_a_ticket_from_the_api_works_once(daphne, unit_a):
    # given a ticket bought over HTTP with the user's access token
    user = unit_a.approver
    with httpx.Client(base_url=f"http://127.0.0.1:{daphne}", timeout=10) as http:
        answer = http.post("/api/auth/ws-ticket/", headers={"Authorization": f"Bearer {unit_a.token(user)}"})
    ticket = answer.json()["ticket"]

    async def scenario():
        # when it is used to connect
        ws = await connect(daphne, ticket=ticket)
        hello = await recv_json(ws)
        joined = joined_groups([f"user_{user.id}", f"unit_{unit_a.id}"])
        seqs = await relocate_async(unit_a, 1)
        update = await recv_json(ws, timeout=15)
        # and used again, while the first connection is still open
        second = await failed_connection(daphne, ticket=ticket)
        await ws.close()
        return hello, joined, seqs, update, second

    hello, joined, seqs, update, second = asyncio.run(scenario())

    # then the first use connects the user to its unit's updates (both groups joined),
    assert answer.status_code == 201 and answer.json()["expires_in"] == settings.WS_TICKET_TTL_SECONDS
    assert (hello["type"], hello["unit_id"]) == ("connection_established", unit_a.id)
    assert joined == [f"user_{user.id}", f"unit_{unit_a.id}"]
    assert (update["type"], update["seq"]) == ("data_update", seqs[0])
    # and the second use is refused like any bad credential
    assert second == ([], 4001)


def test_an_expired_ticket_is_refused(daphne, unit_a, settings):
    # given a ticket that lives one second, and has expired
    settings.WS_TICKET_TTL_SECONDS = 1
    ticket = ticket_issue(
        user_id=str(unit_a.approver.id), access_exp=int(time.time()) + 600, stamp=password_stamp(unit_a.approver),
        unit_id=str(unit_a.approver.unit_id),
    )
    keys = redis.Redis.from_url(settings.KEYS_REDIS_URL)
    assert keys.pttl(PREFIX + ticket) <= 1000  # (-2 if a slow machine already let it expire)
    deadline = time.monotonic() + 10
    while keys.exists(PREFIX + ticket) and time.monotonic() < deadline:
        time.sleep(0.1)
    keys.close()

    # when it is used, then the socket is closed with 4001 before any message
    assert asyncio.run(failed_connection(daphne, ticket=ticket)) == ([], 4001)

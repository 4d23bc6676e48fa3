"""Origin checks at the handshake (the public protocol, docs/realtime.md: "Origin not allowed by ALLOWED_HOSTS: refused at the
handshake (HTTP 403)"), with a valid token every time, so the origin alone decides.

ALLOWED_HOSTS names hosts, not origins: like Django's own Host check, it says nothing about scheme or
port, and the seed's development setup (an SPA on :3000 talking to Daphne on :8000) relies on that.
So by default any scheme and port of an allowed host name passes; WS_ALLOWED_ORIGINS pins exact
origins for deployments that want that (docs/realtime.md, "Origins")."""

from __future__ import annotations

import asyncio

import pytest
import websockets

from bench import processes
from tests.support.ws import connect, recv_json

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


async def _handshake(port: int, origin: str | None, token: str) -> int:
    """The HTTP status of the handshake (101 when the socket opened and the greeting arrived)."""
    try:
        ws = await connect(port, origin=origin, token=token)
    except websockets.InvalidStatus as refused:
        return refused.response.status_code
    hello = await recv_json(ws)
    await ws.close()
    assert hello["type"] == "connection_established"
    return 101


def _statuses(port: int, origins: list[str | None], token: str) -> dict[str | None, int]:
    async def scenario():
        return [await _handshake(port, origin, token) for origin in origins]

    return dict(zip(origins, asyncio.run(scenario()), strict=True))


def test_origins_are_checked_by_host_name_against_allowed_hosts(daphne, unit_a):
    # given ALLOWED_HOSTS=127.0.0.1,localhost (the default) and a valid token
    origins = [
        "http://evil.example", "null", None, "http://127.0.0.1.evil.example", f"http://evil.example:{daphne}",
        "http://127.0.0.1", "http://localhost:3000", "https://127.0.0.1", "http://127.0.0.1:9999",
    ]

    # when a handshake comes from each origin (no Origin header at all for None)
    statuses = _statuses(daphne, origins, unit_a.token())

    # then foreign, opaque (`null`) and missing origins are refused with 403 before the socket opens,
    # and every scheme and port of an allowed host name is let through
    assert statuses == {
        "http://evil.example": 403, "null": 403, None: 403, "http://127.0.0.1.evil.example": 403,
        f"http://evil.example:{daphne}": 403,
        "http://127.0.0.1": 101, "http://localhost:3000": 101, "https://127.0.0.1": 101, "http://127.0.0.1:9999": 101,
    }


def test_ws_allowed_origins_pins_scheme_host_and_port(spawn_daphne, unit_a):
    # given a Daphne that serves exactly one origin: its own
    port = processes.free_port()
    own = f"http://127.0.0.1:{port}"
    spawn_daphne(port=port, WS_ALLOWED_ORIGINS=own)
    origins = [own, f"https://127.0.0.1:{port}", "http://127.0.0.1:9999", "http://127.0.0.1", "http://evil.example"]

    # when a handshake comes from each origin
    statuses = _statuses(port, origins, unit_a.token())

    # then only that exact origin opens a socket; another scheme or port is refused with 403
    assert statuses == {
        own: 101, f"https://127.0.0.1:{port}": 403, "http://127.0.0.1:9999": 403, "http://127.0.0.1": 403,
        "http://evil.example": 403,
    }

"""Single-use WebSocket tickets: a short random string that stands in for the JWT in the URL.

`POST /api/auth/ws-ticket/` stores `ticket -> user_id|access_exp` in Redis for 30 s; the handshake
consumes it with GETDEL, so a ticket works once, atomically, even across Daphne processes.
The access token's expiry travels along, so a ticket connection still closes 4002 when the token
that bought the ticket expires.
"""

from __future__ import annotations

import asyncio
import secrets
import weakref

import redis
import redis.asyncio as aioredis
from django.conf import settings

from backend.common.redis import redis_from_url

PREFIX = "wsticket:"

_sync_client: redis.Redis | None = None
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
    weakref.WeakKeyDictionary()
)


def _client() -> redis.Redis:
    global _sync_client
    if _sync_client is None:
        _sync_client = redis_from_url(settings.KEYS_REDIS_URL, socket_timeout=5, socket_connect_timeout=3)
    return _sync_client


def keys_client() -> aioredis.Redis:
    """The short-lived-keys Redis (db 2), for the running event loop."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = redis_from_url(settings.KEYS_REDIS_URL, asyncio=True, socket_timeout=5, socket_connect_timeout=3)
        _async_clients[loop] = client
    return client


def ticket_issue(*, user_id: str, access_exp: int) -> str:
    ticket = secrets.token_urlsafe(32)
    _client().set(PREFIX + ticket, f"{user_id}|{access_exp}", ex=settings.WS_TICKET_TTL_SECONDS)
    return ticket


async def ticket_consume(ticket: str) -> tuple[str, int] | None:
    """(user_id, access_exp) for a valid, unused ticket; None otherwise. Never usable twice."""
    if not ticket or len(ticket) > 128:
        return None
    value = await keys_client().getdel(PREFIX + ticket)
    if value is None:
        return None
    user_id, _, exp = value.decode().partition("|")
    return user_id, int(exp)

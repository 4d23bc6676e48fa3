"""Single-use WebSocket tickets: a short random string that stands in for the JWT in the URL.

`POST /api/auth/ws-ticket/` stores `ticket -> user_id|access_exp|stamp` in Redis for 30 s; the
handshake consumes it with GETDEL, so a ticket works once, atomically, even across Daphne processes.
The access token's expiry travels along, so a ticket connection still closes 4002 when the token
that bought the ticket expires; so do its password stamp, unit and role, so a ticket bought before
a password change, a move to another unit or a role change opens nothing after it.
"""

from __future__ import annotations

import secrets

from django.conf import settings

from backend.common.redis import keys_client, keys_client_async

PREFIX = "wsticket:"


def ticket_issue(*, user_id: str, access_exp: int, stamp: str, unit_id: str | None, role: str = "") -> str:
    ticket = secrets.token_urlsafe(32)
    value = f"{user_id}|{access_exp}|{stamp}|{unit_id or ''}|{role}"
    keys_client().set(PREFIX + ticket, value, ex=settings.WS_TICKET_TTL_SECONDS)
    return ticket


async def ticket_consume(ticket: str) -> tuple[str, int, str, str | None, str] | None:
    """(user_id, access_exp, password stamp, unit id, role) for a valid, unused ticket; None
    otherwise. Never usable twice."""
    if not ticket or len(ticket) > 128:
        return None
    value = await keys_client_async().getdel(PREFIX + ticket)
    if value is None:
        return None
    user_id, exp, stamp, unit_id, role = (value.decode().split("|") + ["", "", "", ""])[:5]
    return user_id, int(exp), stamp, unit_id or None, role

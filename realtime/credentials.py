"""An open connection's credentials: when they expire (close 4002 then) and how the client renews
them without reconnecting (`{"type": "refresh", "token": "<access token>"}`, answered `refreshed`).

The consumer (realtime/consumers.py) owns the socket and its close codes; this module owns the
expiry timer and the refresh: the new token is validated as a handshake's would be
(realtime/auth.py `refreshed_identity`), then the connection's identity, and its timer, are
swapped. Refresh frames go through the consumer's client-message limit like any other message.
"""

from __future__ import annotations

import asyncio
import logging
import time

from backend.common.faults import afault_point
from backend.events import schema

from .auth import UNAVAILABLE, AuthFailed, refreshed_identity

logger = logging.getLogger(__name__)


def schedule_expiry(consumer) -> None:
    """(Re)arm the consumer's expiry timer for its identity's `expires_at`."""
    if consumer.expiry_handle is not None:
        consumer.expiry_handle.cancel()
    loop = asyncio.get_running_loop()
    consumer.expiry_handle = loop.call_at(
        loop.time() + max(consumer.identity.expires_at - time.time(), 0), consumer._token_expired
    )


async def refresh(consumer, token) -> AuthFailed | None:
    """Take a new access token on the open socket. Returns why it was refused (the consumer closes:
    4001, or 4003 for a user who lost access since), or None: refreshed and answered, or answered
    with an `error` (no token in the message; the database away: the old expiry still holds)."""
    if not isinstance(token, str) or len(token) > schema.REFRESH_TOKEN_MAX_LENGTH:
        consumer._error("invalid_message", 'A refresh carries a new access token: {"type": "refresh", "token": "..."}.')
        return None
    try:
        await afault_point("credentials.refresh", user=consumer.user_id)
        identity = await refreshed_identity(consumer.identity, token)
    except AuthFailed as refused:
        logger.info("websocket refresh of user %s refused: %s", consumer.user_id, refused.reason)
        return refused
    except UNAVAILABLE as exc:
        logger.warning("a websocket refresh could not be checked: %s", type(exc).__name__)
        consumer._error("refresh_unavailable", "The token could not be checked now; send the refresh again.")
        return None
    if consumer.closing:
        return None
    consumer.identity = consumer.scope["identity"] = identity
    schedule_expiry(consumer)
    consumer.send_message(schema.refreshed(expires_at=identity.expires_at))
    return None

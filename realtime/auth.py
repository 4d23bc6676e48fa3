"""WebSocket handshake authentication: `?token=<JWT access>` or `?ticket=<single-use ticket>`.

The middleware never refuses a connection itself: it records who the user is (or why not) in the
scope, and the consumer accepts and then closes with 4001, so browsers can see the code.
Credentials are never logged here; see backend.common.logging for the access-log side.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

from channels.middleware import BaseMiddleware
from channels.security.websocket import AllowedHostsOriginValidator, OriginValidator
from django.conf import settings
from django.db import Error as DatabaseError
from redis.exceptions import RedisError
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken

from backend.accounts.tickets import ticket_consume
from backend.accounts.tokens import password_matches

from .selectors import user_for_socket

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    user_id: str
    username: str
    unit_id: str
    expires_at: float  # unix time the access token (or the token behind a ticket) expires


class AuthFailed(Exception):
    revoked = False  # the credentials are no good (4001), not the user's access (4003)

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class AccessRevoked(AuthFailed):
    """The credentials are the user's own, but the user was deactivated or moved since (4003)."""

    revoked = True


# The database or Redis away while checking credentials: the client should try again (1013), not
# discard its credentials (4001).
UNAVAILABLE = (DatabaseError, RedisError, OSError)


async def _active_user(user_id: str, unit_claim: str | None, check_claim: bool):
    user = await user_for_socket(user_id)
    if user is None or not user.is_active:
        raise AuthFailed("user_inactive")
    if user.unit_id is None:
        raise AuthFailed("no_unit")
    if check_claim and unit_claim != str(user.unit_id):
        raise AuthFailed("unit_changed")
    return user


async def authenticate(query: dict[str, list[str]]) -> Identity:
    token = (query.get("token") or [""])[0]
    ticket = (query.get("ticket") or [""])[0]
    if ticket:
        consumed = await ticket_consume(ticket)
        if consumed is None:
            raise AuthFailed("ticket_invalid")
        user_id, expires_at, stamp, unit_claim, role_claim = consumed
        user = await _active_user(user_id, unit_claim, check_claim=True)
        if role_claim and role_claim != user.role:
            raise AuthFailed("role_changed")  # bought before a role change
        if not password_matches({api_settings.REVOKE_TOKEN_CLAIM: stamp}, user):
            raise AuthFailed("password_changed")  # bought before a password change
    elif token:
        try:
            # Full SimpleJWT validation: signature with the configured algorithm only (so
            # `alg: none` fails), expiry, and token_type == "access" (a refresh token fails).
            access = AccessToken(token)
        except TokenError:
            raise AuthFailed("token_invalid") from None
        user = await _active_user(str(access["user_id"]), access.get("unit_id"), check_claim=True)
        if not password_matches(access, user):
            raise AuthFailed("password_changed")  # (CHECK_REVOKE_TOKEN, as for the REST API)
        expires_at = float(access["exp"])
    else:
        raise AuthFailed("credentials_missing")
    if expires_at <= time.time():
        raise AuthFailed("token_expired")
    return Identity(str(user.id), user.username, str(user.unit_id), expires_at)


async def refreshed_identity(current: Identity, token: str) -> Identity:
    """The identity of an open connection under a new access token (`refresh` on the socket,
    realtime/credentials.py): the same validation as the handshake's, and the token must name the
    connection's own user and unit. A user deactivated or moved since raises AccessRevoked (4003,
    what the hub's re-validation would close with a moment later); any other token AuthFailed (4001)."""
    try:
        access = AccessToken(token)  # signature, expiry, token_type == "access"
    except TokenError:
        raise AuthFailed("token_invalid") from None
    if str(access.get("user_id")) != current.user_id:
        raise AuthFailed("other_user")
    user = await user_for_socket(current.user_id)
    if user is None or not user.is_active:
        raise AccessRevoked("user_inactive")
    if user.unit_id is None or str(user.unit_id) != current.unit_id:
        raise AccessRevoked("unit_changed")
    if access.get("unit_id") != current.unit_id:
        raise AuthFailed("other_unit")
    if not password_matches(access, user):
        raise AuthFailed("password_changed")
    return Identity(current.user_id, user.username, current.unit_id, float(access["exp"]))


class WebSocketAuthMiddleware(BaseMiddleware):
    """Puts `identity` (or `auth_error`) into the scope of `websocket` connections."""

    async def __call__(self, scope, receive, send):
        scope = dict(scope)
        await identify(scope)
        # Straight to the inner application: BaseMiddleware.__call__ would copy the scope again
        # and keep one more coroutine frame alive for the connection's whole life. This frame
        # lives as long: what it holds besides the scope (the parsed query) is gone by now.
        return await self.inner(scope, receive, send)


async def identify(scope: dict) -> None:
    """Set the scope's `identity` from the credentials in its query string, or its `auth_error`."""
    try:
        scope["identity"] = await authenticate(parse_qs(scope.get("query_string", b"").decode("latin-1")))
    except AuthFailed as failure:
        scope["identity"] = None
        scope["auth_error"] = failure.reason
    except UNAVAILABLE as exc:
        logger.warning("websocket credentials could not be checked: %s", type(exc).__name__)
        scope["identity"] = None
        scope["auth_error"] = "unavailable"


def origin_validator(application):
    """Refuse (HTTP 403) handshakes from browser origins we do not serve: by host name against
    ALLOWED_HOSTS, or exactly (scheme, host and port) against WS_ALLOWED_ORIGINS when that is set."""
    if settings.WS_ALLOWED_ORIGINS:
        return OriginValidator(application, settings.WS_ALLOWED_ORIGINS)
    return AllowedHostsOriginValidator(application)

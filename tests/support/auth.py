"""Credentials for tests: real JWTs, signed and claimed as the API issues them."""

from __future__ import annotations

from backend.accounts.tokens import access_token_for


def access_token(user) -> str:
    """An access token for `user` (no refresh token is recorded, so this may run anywhere, even in a
    coroutine)."""
    return str(access_token_for(user))

"""Credentials for tests: real JWTs, as the API issues them."""

from __future__ import annotations

from backend.accounts.tokens import UnitTokenObtainPairSerializer


def access_token(user) -> str:
    return str(UnitTokenObtainPairSerializer.get_token(user).access_token)

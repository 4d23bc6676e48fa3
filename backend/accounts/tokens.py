"""JWTs: access tokens carry the user's `unit_id` and `role`; refresh tokens rotate.

SimpleJWT does the signing (with JWT_SIGNING_KEY, not SECRET_KEY), expiry, the blacklist app and
CHECK_REVOKE_TOKEN (every token carries a hash of the user's password hash, so a password change
ends it). What it does not do, we do here, at refresh:

- a refresh token works once: it is blacklisted on use, and a second use is refused even when two
  arrive at the same moment (the blacklist row is the lock);
- the user must still be active, have the same password, and belong to the unit the token was
  issued for (a moved user signs in again);
- the new access token, and the new refresh token, carry the user's *current* unit and role, not
  the claims of the token being refreshed.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken
from rest_framework_simplejwt.utils import get_md5_hash_password

from .models import User


def add_claims(token, user: User):
    """The claims every token of ours carries (docs/api.md, "Auth"): the user's unit and role."""
    token["unit_id"] = str(user.unit_id) if user.unit_id else None
    token["role"] = user.role
    return token


def access_token_for(user: User) -> AccessToken:
    """An access token alone (no refresh token is issued or recorded): for trusted callers that act
    as a user, such as tests and benchmarks."""
    return add_claims(AccessToken.for_user(user), user)


class UnitTokenObtainPairSerializer(TokenObtainPairSerializer):
    """Access tokens carry the user's `unit_id` and `role` (docs/api.md, "Auth")."""

    @classmethod
    def get_token(cls, user):
        return add_claims(super().get_token(user), user)


def password_stamp(user: User) -> str:
    """What tokens and tickets carry of the user's password: a hash of its hash (SimpleJWT's claim)."""
    return get_md5_hash_password(user.password)


def password_matches(token, user: User) -> bool:
    """Whether `token` (or a ticket's stamp: a mapping with the same claim) was issued under the
    user's current password."""
    return token.get(api_settings.REVOKE_TOKEN_CLAIM) == get_md5_hash_password(user.password)


class UnitTokenRefreshSerializer(TokenRefreshSerializer):
    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        try:
            refresh = RefreshToken(attrs["refresh"])  # signature, expiry, type, not blacklisted
        except TokenError as exc:
            raise exceptions.AuthenticationFailed(str(exc), "token_not_valid") from None
        user = User.objects.filter(id=refresh.payload.get(api_settings.USER_ID_CLAIM)).first()
        if user is None or not user.is_active:
            raise exceptions.AuthenticationFailed("No active account found for the given token.", "no_active_account")
        if not password_matches(refresh, user):
            raise exceptions.AuthenticationFailed("The password changed; sign in again.", "password_changed")
        if refresh.get("unit_id") != (str(user.unit_id) if user.unit_id else None):
            raise exceptions.AuthenticationFailed("You were moved to another unit; sign in again.", "unit_changed")
        _, first_use = refresh.blacklist()
        if not first_use:
            raise exceptions.AuthenticationFailed("Token is blacklisted", "token_not_valid")
        fresh = UnitTokenObtainPairSerializer.get_token(user)
        return {"access": str(fresh.access_token), "refresh": str(fresh)}

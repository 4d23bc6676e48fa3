"""JWTs: access tokens carry the user's `unit_id` and `role`; refresh tokens rotate.

SimpleJWT does the signing (with JWT_SIGNING_KEY, not SECRET_KEY), expiry, the blacklist app and
CHECK_REVOKE_TOKEN (every token carries a stamp of the user's password, so a password change ends
it). The stamp is ours (`password_stamp`): a hash of the user's id and `password_epoch`, which a new
password changes and a re-hash of the same password (a hasher upgrade) does not; SimpleJWT's own
stamp, a hash of the password hash, would sign the user out of every tab when the hash is upgraded.
What SimpleJWT does not do, we do here, at refresh:

- a refresh token works once: it is blacklisted on use, and a second use is refused even when two
  arrive at the same moment (the blacklist row is the lock);
- the user must still be active, have the same password, and belong to the unit the token was
  issued for (a moved user signs in again);
- the new access token, and the new refresh token, carry the user's *current* unit and role, not
  the claims of the token being refreshed.
"""

from __future__ import annotations

import hashlib
from typing import Any

from rest_framework import exceptions
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from backend.common.trace import trace_stamp

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
    """What tokens and tickets carry of the user's password (SimpleJWT's REVOKE_TOKEN_CLAIM): a hash
    of the user's id and password epoch, which only a new password changes."""
    return hashlib.sha256(f"{user.id}:{user.password_epoch}".encode()).hexdigest()[:32].upper()


def password_matches(token, user: User) -> bool:
    """Whether `token` (or a ticket's stamp: a mapping with the same claim) was issued under the
    user's current password."""
    return token.get(api_settings.REVOKE_TOKEN_CLAIM) == password_stamp(user)


class StampedJWTAuthentication(JWTAuthentication):
    """SimpleJWT's authentication (DEFAULT_AUTHENTICATION_CLASSES) with our password stamp in place
    of its hash of the password hash, and the request trace's `authenticated` stamp once a token has
    been checked and its user loaded."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is not None:
            trace_stamp("authenticated")  # the request -> client trace (backend/common/trace.py)
        return result

    def get_user(self, validated_token):
        try:
            user_id = validated_token[api_settings.USER_ID_CLAIM]
        except KeyError:
            raise InvalidToken("Token contained no recognizable user identification") from None
        user = User.objects.filter(**{api_settings.USER_ID_FIELD: user_id}).first()
        if user is None:
            raise exceptions.AuthenticationFailed("User not found", "user_not_found")
        if api_settings.CHECK_USER_IS_ACTIVE and not user.is_active:
            raise exceptions.AuthenticationFailed("User is inactive", "user_inactive")
        if api_settings.CHECK_REVOKE_TOKEN and not password_matches(validated_token, user):
            raise exceptions.AuthenticationFailed("The user's password has been changed.", "password_changed")
        return user


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

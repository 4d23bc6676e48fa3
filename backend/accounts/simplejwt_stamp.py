"""SimpleJWT's internal we replace (djangorestframework-simplejwt 5.5.1): `Token.for_user`, so every
token it makes for a user carries our password stamp instead of its hash of the password hash.

SimpleJWT's revocation claim (CHECK_REVOKE_TOKEN) hashes the user's password hash, so re-hashing a
password with a new hasher (PBKDF2 -> Argon2id at the next sign-in, docs/security.md) would revoke
every token of the user. Ours is the user's password epoch, which only a new password changes
(backend/accounts/tokens.py checks it). Patched at the class, not in our token serializers, because
tokens are made by other callers too (SimpleJWT's own views, the admin, tests).
"""

from __future__ import annotations

from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import Token

from backend.common.upstream import check_version

from .tokens import password_stamp

LIBRARY = "djangorestframework-simplejwt"
WRITTEN_AGAINST = "5.5.1"
# A hook for the revocation claim's value (a setting naming a function of the user) could be
# proposed upstream (jazzband/djangorestframework-simplejwt); with it this module would go.
UPSTREAM = "not reported yet (docs/architecture.md, \"Replaced internals\")"


def install() -> None:
    """Every token SimpleJWT makes for a user (`AccessToken.for_user`, `RefreshToken.for_user`, by
    whatever caller) carries our password stamp (accounts.tokens.password_stamp: the user's
    password epoch, which a hasher upgrade does not change) instead of SimpleJWT's hash of the
    password hash, which an upgrade would change; StampedJWTAuthentication checks it."""
    check_version(LIBRARY, WRITTEN_AGAINST)
    made = Token.for_user.__func__
    if getattr(made, "stamped", False):
        return

    def for_user(cls, user):
        token = made(cls, user)
        if api_settings.CHECK_REVOKE_TOKEN:
            token[api_settings.REVOKE_TOKEN_CLAIM] = password_stamp(user)
        return token

    for_user.stamped = True
    Token.for_user = classmethod(for_user)

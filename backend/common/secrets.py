"""What production refuses to start with: secrets that are missing, short, or known.

A secret that appears in this repository (an example environment, a default) is known to everyone
who has read it: a SECRET_KEY or JWT_SIGNING_KEY from an example lets anyone forge a session or a
token for any user. Imported by the settings: no Django imports.
"""

from __future__ import annotations

# Values published in this repository's examples and defaults (tests check they are all here).
KNOWN_VALUES = frozenset({
    "dev-only-insecure-secret-key-change-me-0123456789abcdef",
    "change-me-to-a-long-random-string-of-at-least-50-characters-0123456789",
    "change-me-to-another-long-random-string-of-at-least-50-characters-987",
    "flower-pass-2026",
    "change-me-flower-password",
    "demo-pass-2026",
    "change-me-metrics-token",
    "change-me-grafana-password",
})
HOW = "generate one with: python -c \"import secrets; print(secrets.token_urlsafe(64))\""


class UnsafeSecret(ValueError):
    pass


def require_secret(name: str, value: str | None, *, min_length: int = 50) -> str:
    """`value`, if it is fit to be a production secret; else UnsafeSecret naming `name` and how to fix it."""
    if not value:
        raise UnsafeSecret(f"{name} is not set: set it in the environment ({HOW}).")
    if value in KNOWN_VALUES or "change-me" in value.lower() or value.startswith("django-insecure"):
        raise UnsafeSecret(f"{name} is a published example value: set your own ({HOW}).")
    if len(value) < min_length or len(set(value)) < 5:
        raise UnsafeSecret(f"{name} is too short or too simple (at least {min_length} characters): {HOW}.")
    return value


def require_password_in_basic_auth(name: str, value: str | None, *, min_length: int = 16) -> str:
    """A `user:password` pair whose password is fit for production."""
    user, _, password = (value or "").partition(":")
    if not user or not password:
        raise UnsafeSecret(f"{name} must be user:password (it is {'empty' if not value else 'missing the password'}).")
    require_secret(f"the password in {name}", password, min_length=min_length)
    return value

"""Reads of users for the realtime tier's checks: who may hold a socket, and whether they still may."""

from __future__ import annotations

from .models import User


def user_for_socket(user_id: str) -> User | None:
    """The user behind a WebSocket handshake (only what the handshake needs), or None."""
    return User.objects.filter(id=user_id).only("id", "username", "unit_id", "is_active").first()


def users_access(user_ids: list[str]) -> dict[str, tuple[bool, str | None]]:
    """user id -> (is_active, unit id), for re-validating live connections."""
    rows = User.objects.filter(id__in=user_ids).values_list("id", "is_active", "unit_id")
    return {str(uid): (active, str(unit) if unit else None) for uid, active, unit in rows}

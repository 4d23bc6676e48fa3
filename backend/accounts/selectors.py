"""Reads of users for the realtime tier's checks: who may hold a socket, and whether they still may."""

from __future__ import annotations

from axes.helpers import get_cool_off
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from .models import User


def user_for_socket(user_id: str) -> User | None:
    """The user behind a WebSocket handshake (only what the handshake needs), or None."""
    fields = ("id", "username", "unit_id", "is_active", "password_epoch", "role")
    return User.objects.filter(id=user_id).only(*fields).first()


def users_access(user_ids: list[str]) -> dict[str, tuple[bool, str | None]]:
    """user id -> (is_active, unit id), for re-validating live connections."""
    rows = User.objects.filter(id__in=user_ids).values_list("id", "is_active", "unit_id")
    return {str(uid): (active, str(unit) if unit else None) for uid, active, unit in rows}


def presence_profile(user_id: str) -> tuple[str, str, str] | None:
    """(username, full name, role) of a presence-enabled connection's user."""
    row = User.objects.filter(id=user_id).values_list("username", "first_name", "last_name", "role").first()
    if row is None:
        return None
    username, first, last, role = row
    return username, f"{first} {last}".strip(), role


def locked_out_usernames(usernames=None) -> set[str]:
    """Usernames locked out now from at least one address: django-axes counts failures per
    (username, address) pair, and a pair is locked when its records within the cool-off add up to
    AXES_FAILURE_LIMIT (the same sum axes itself checks)."""
    attempts = AccessAttempt.objects.all()
    if usernames is not None:
        attempts = attempts.filter(username__in=list(usernames))
    cool_off = get_cool_off()
    if cool_off is not None:
        attempts = attempts.filter(attempt_time__gt=timezone.now() - cool_off)
    totals = attempts.values("username", "ip_address").annotate(failures=Sum("failures_since_start"))
    return {row["username"] for row in totals if row["failures"] >= settings.AXES_FAILURE_LIMIT}


def unit_recipients(unit_ids, roles) -> dict:
    """unit id -> ids of the unit's active users holding one of `roles` (as named: admins only when
    `roles` names them): who a unit's notifications go to."""
    found: dict = {unit_id: [] for unit_id in unit_ids}
    rows = User.objects.filter(unit_id__in=list(found), role__in=list(roles), is_active=True).order_by("username")
    for unit_id, user_id in rows.values_list("unit_id", "id"):
        found[unit_id].append(user_id)
    return found

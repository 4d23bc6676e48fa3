"""Changes to who may use the system. Each is audited (entity `user`, in the user's unit trail, with
who made it, when and why) and revokes at once what it makes stale:

- a new password, by any path (the admin's form, `manage.py changepassword`, a service, anything that
  calls `set_password` and saves): every refresh token is blacklisted, access tokens and unused
  WebSocket tickets stop working (they carry a stamp of the password hash), and the user's
  sockets close with 4003. Django calls the password validators' `password_changed` hook on every
  such save; `RevokeOnPasswordChange` (AUTH_PASSWORD_VALIDATORS) is how no path escapes it;
- deactivating a user, or moving them to another unit: the same revocation;
- a role change (the next token carries the new role; the old ones are revoked);
- a sign-in lockout (django-axes) and its lifting by a unit admin.

The realtime tier's periodic re-validation (realtime/hub.py) is the net under the socket closes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from backend.audit.services import Entry, journal_write
from backend.common.errors import ValidationFailed
from backend.events.broadcast import user_close_send

from .models import PRINTED_NAME_REQUIRED, Unit, User, printed_name_missing

logger = logging.getLogger(__name__)
CLOSE_ACCESS_REVOKED = 4003


@dataclass(frozen=True)
class Because:
    """Who is changing a user's access, and why (set by the entry point: the admin site, a command)."""

    actor: User | None = None
    reason: str = ""
    creating: bool = False


_because: ContextVar[Because] = ContextVar("access_change", default=Because())  # noqa: B039 - frozen


@contextmanager
def access_change(*, actor: User | None, reason: str, creating: bool = False) -> Iterator[None]:
    """Changes of users made inside are `actor`'s, for `reason` (their audit entries say so)."""
    token = _because.set(Because(actor=actor, reason=(reason or "").strip(), creating=creating))
    try:
        yield
    finally:
        _because.reset(token)


def access_audit(*, user: User, action: str, changes: dict | None = None, reason: str = "", actor=None,
                 unit_id=None) -> None:
    """One `user` entry in the trail of the user's unit (or `unit_id`, e.g. the unit they left). A
    superuser without a unit has no trail to write to: logged instead."""
    because = _because.get()
    unit_id = unit_id or user.unit_id
    reason = (reason or because.reason or action.replace("_", " ")).strip()
    if unit_id is None:
        logger.info("access change of %s (%s) not audited: no unit", user.username, action)
        return
    with transaction.atomic():
        journal_write(actor=actor or because.actor, entries=[Entry(
            unit_id=unit_id, entity="user", record_id=user.id, record_number=user.username, action=action,
            changes=changes or {}, reason=reason,
        )])


def user_revoke_tokens(user: User) -> int:
    """Blacklist every refresh token of `user` that is still valid; returns how many."""
    live = OutstandingToken.objects.filter(user=user, expires_at__gt=timezone.now()).exclude(
        blacklistedtoken__isnull=False
    )
    BlacklistedToken.objects.bulk_create([BlacklistedToken(token=token) for token in live], ignore_conflicts=True)
    return len(live)


def user_revoke_all(user: User) -> None:
    """Refresh tokens blacklisted now; the user's sockets closed (4003) once this commits. Access
    tokens and tickets carry the password stamp and the unit, so they fail their next check."""
    user_revoke_tokens(user)
    transaction.on_commit(lambda: user_close_send(user.id, CLOSE_ACCESS_REVOKED))


@transaction.atomic
def user_create(*, actor: User | None, user: User, reason: str = "") -> User:
    """A new account (already saved by its form or command): audited as `created`. One who signs
    (SIGNING_ROLES) must have a printed name (refused, and the save rolled back, otherwise)."""
    if printed_name_missing(user.role, user.first_name, user.last_name):
        raise ValidationFailed(PRINTED_NAME_REQUIRED, code="printed_name_required")
    access_audit(user=user, action="created", actor=actor, reason=reason or "account created", changes={
        "role": [None, user.role], "unit": [None, user.unit.code if user.unit_id else None],
        "is_active": [None, user.is_active],
    })
    return user


@transaction.atomic
def user_update_access(*, user: User, is_active: bool | None = None, unit: Unit | None = None,
                       role: str | None = None) -> User:
    """Activate/deactivate `user`, move them to `unit` or give them `role`: audited, and revoking."""
    before = User.objects.select_for_update().only("id", "is_active", "unit_id", "role").get(id=user.id)
    fields = []
    if is_active is not None and is_active != before.is_active:
        user.is_active = is_active
        fields.append("is_active")
    if unit is not None and unit.id != before.unit_id:
        user.unit = unit
        fields.append("unit")
    if role is not None and role != before.role:
        if printed_name_missing(role, user.first_name, user.last_name):
            raise ValidationFailed(PRINTED_NAME_REQUIRED, code="printed_name_required")
        user.role = role
        fields.append("role")
    if fields:
        user.save(update_fields=fields)
        user_access_saved(user=user, was_active=before.is_active, was_unit_id=before.unit_id, was_role=before.role)
    return user


def user_access_saved(*, user: User, was_active: bool, was_unit_id, was_role: str) -> bool:
    """After a change of `user` was saved (here, or by the admin site's form): audit what changed
    (deactivated / reactivated, unit, role) and, if it narrows or moves their access, revoke
    everything they hold. Returns whether anything was revoked."""
    codes = dict(Unit.objects.filter(id__in={was_unit_id, user.unit_id} - {None}).values_list("id", "code"))
    if was_active != user.is_active:
        access_audit(user=user, action="reactivated" if user.is_active else "deactivated",
                     changes={"is_active": [was_active, user.is_active]})
    if was_unit_id != user.unit_id:
        moved = {"unit": [codes.get(was_unit_id), codes.get(user.unit_id)]}
        access_audit(user=user, action="unit_changed", changes=moved, unit_id=was_unit_id)  # the unit left
        if user.unit_id:
            access_audit(user=user, action="unit_changed", changes=moved)  # and the unit joined
    if was_role != user.role:
        access_audit(user=user, action="role_changed", changes={"role": [was_role, user.role]})
    lost = (was_active and not user.is_active) or was_unit_id != user.unit_id or was_role != user.role
    if lost:
        user_revoke_all(user)
    return lost


@transaction.atomic
def user_set_password(*, user: User, password: str, actor: User | None = None, reason: str = "") -> User:
    """A new password (the save runs the revocation and the audit entry, as every path's does)."""
    with access_change(actor=actor or _because.get().actor, reason=reason or "password changed"):
        user.set_password(password)
        user.save(update_fields=["password"])
    return user


def password_changed(user: User) -> None:
    """Whatever path saved a new password: audited (unless the account is being created) and
    everything issued under the old one revoked."""
    with transaction.atomic():
        if not _because.get().creating:
            access_audit(user=user, action="password_changed")
        user_revoke_all(user)


class RevokeOnPasswordChange:
    """A password "validator" that validates nothing: Django calls every validator's
    `password_changed` after any save of a new password, which makes this the one place no path
    (admin form, `changepassword`, `set_password` + `save` anywhere) goes around."""

    def validate(self, password, user=None) -> None:
        return None

    def password_changed(self, password, user=None) -> None:
        if user is not None and user.pk is not None:
            password_changed(user)

    def get_help_text(self) -> str:
        return ""


def user_unlock(*, user: User, actor: User | None = None, reason: str = "") -> int:
    """Lift a sign-in lockout (django-axes) before its cool-off ends, audited; returns the attempts
    cleared."""
    from axes.utils import reset

    cleared = reset(username=user.username)
    if cleared:
        access_audit(user=user, action="signin_unlocked", actor=actor, reason=reason or "unlocked by a unit admin",
                     changes={"locked_out": [True, False]})
    return cleared


def signin_locked_out(*, username: str, address: str) -> None:
    """django-axes locked `username` out from `address`: audited when the account exists."""
    user = User.objects.filter(username=username).first()
    if user is not None:
        access_audit(user=user, action="signin_locked", reason=f"too many failed sign-ins from {address}",
                     changes={"locked_out": [False, True]})

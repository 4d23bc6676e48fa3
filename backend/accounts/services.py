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

Creation, (de/re)activation, a move and a role change (superuser and staff too) are audited on every save of a user, whoever
makes it (the admin site, a service, a shell, a script): `access_before_save` / `access_after_save`
(pre_save / post_save of User, connected in apps.py) compare the access fields with the stored row
and write the entry, with the actor and reason of the surrounding `access_change` (the system's,
with no reason given, outside one). `User.save` runs in a transaction, so the change and its entry
commit together. What sends no signal (a queryset `update()`, `bulk_create`, raw SQL, `loaddata`) is
outside the model, like any SQL the database's owner runs.

The realtime tier's periodic re-validation (realtime/hub.py) is the net under the socket closes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from django.conf import settings
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


def user_create_check(user: User) -> None:
    """Before a new account is saved: one who signs (SIGNING_ROLES) must have a printed name. (Its
    `created` entry is the save's: access_after_save.)"""
    if printed_name_missing(user.role, user.first_name, user.last_name):
        raise ValidationFailed(PRINTED_NAME_REQUIRED, code="printed_name_required")


@transaction.atomic
def user_update_access(*, user: User, is_active: bool | None = None, unit: Unit | None = None,
                       role: str | None = None, actor: User | None = None, reason: str = "") -> User:
    """Activate/deactivate `user`, move them to `unit` or give them `role`, as `actor` for `reason`
    (the surrounding access_change's when not given): audited by the save, and revoking."""
    fields = []
    if is_active is not None and is_active != user.is_active:
        user.is_active = is_active
        fields.append("is_active")
    if unit is not None and unit.id != user.unit_id:
        user.unit = unit
        fields.append("unit")
    if role is not None and role != user.role:
        if printed_name_missing(role, user.first_name, user.last_name):
            raise ValidationFailed(PRINTED_NAME_REQUIRED, code="printed_name_required")
        user.role = role
        fields.append("role")
    if fields:
        because = _because.get()
        with access_change(actor=actor or because.actor, reason=reason or because.reason):
            user.save(update_fields=fields)
    return user


# The access fields of a user, by the names a save's `update_fields` may give them.
# Superuser (every role in every unit) and staff (the admin site) are access too: a change of either
# is a `role_changed`, audited and revoking like a change of role.
_ACCESS_FIELDS = {"is_active": "is_active", "unit": "unit_id", "unit_id": "unit_id", "role": "role",
                  "is_superuser": "is_superuser", "is_staff": "is_staff"}
_PRIVILEGES = ("is_superuser", "is_staff")


def access_before_save(sender, instance: User, raw: bool = False, update_fields=None, **kwargs) -> None:
    """pre_save of User: the stored access fields this save may change (locked when in a
    transaction, which User.save always opens), for access_after_save to compare."""
    instance.__dict__.pop("_access_was", None)
    if raw:
        return
    fields = set(_ACCESS_FIELDS.values()) if update_fields is None else {
        _ACCESS_FIELDS[name] for name in update_fields if name in _ACCESS_FIELDS
    }
    if not fields or instance.pk is None:
        return
    rows = User.objects.filter(pk=instance.pk)
    if transaction.get_connection().in_atomic_block:
        rows = rows.select_for_update()
    instance._access_was = (rows.values(*set(_ACCESS_FIELDS.values())).first(), fields)


def access_after_save(sender, instance: User, created: bool, raw: bool = False, **kwargs) -> None:
    """post_save of User: a new account is audited as `created` (its first password with it); a
    change of is_active, unit or role as what it is, and revoking (user_access_saved)."""
    was = instance.__dict__.pop("_access_was", None)
    if raw:
        return
    if created:
        instance._first_password = instance._password is not None  # part of the creation
        access_audit(user=instance, action="created", reason=_because.get().reason or "account created", changes={
            "role": [None, instance.role], "unit": [None, instance.unit.code if instance.unit_id else None],
            "is_active": [None, instance.is_active],
        })
        return
    if was is None or was[0] is None:
        return
    stored, fields = was
    before = {name: stored[name] if name in fields else getattr(instance, name) for name in set(_ACCESS_FIELDS.values())}
    user_access_saved(user=instance, was_active=before["is_active"], was_unit_id=before["unit_id"], was_role=before["role"],
                      was_privileges={name: before[name] for name in _PRIVILEGES})


def user_access_saved(*, user: User, was_active: bool, was_unit_id, was_role: str,
                      was_privileges: dict[str, bool]) -> bool:
    """After a change of `user` was saved (here, or by the admin site's form): audit what changed
    (deactivated / reactivated, unit, role, superuser or staff) and, if it narrows, widens or moves
    their access, revoke everything they hold. Returns whether anything was revoked."""
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
    privileges = {
        name: [was, getattr(user, name)] for name, was in was_privileges.items() if was != getattr(user, name)
    }
    if privileges:
        access_audit(user=user, action="role_changed", changes=privileges)
    lost = (was_active and not user.is_active) or was_unit_id != user.unit_id or was_role != user.role or bool(privileges)
    if lost:
        user_revoke_all(user)
    return lost


def _grant_name(grant) -> str:
    """A group by its name, a permission as `app_label.codename` (how has_perm names it)."""
    if hasattr(grant, "codename"):
        return f"{grant.content_type.app_label}.{grant.codename}"
    return grant.name


def grants_changed(sender, instance, action: str, reverse: bool, model, pk_set, **kwargs) -> None:
    """m2m_changed of User.groups and User.user_permissions, from either side (`user.groups.add(g)`,
    `group.user_set.remove(u)`, the admin's form): what they give beyond the role is access too.
    Each user who gains or loses a group or permission gets one `role_changed` entry naming it,
    `{field: [taken, given]}`, with the surrounding `access_change`'s actor and reason."""
    field = "groups" if sender is User.groups.through else "user_permissions"
    if action == "pre_clear":
        users = list(instance.user_set.all()) if reverse else [instance]
        grants = [instance] if reverse else list(getattr(instance, field).all())
    elif action in ("post_add", "post_remove") and pk_set:
        users = list(User.objects.filter(pk__in=pk_set)) if reverse else [instance]
        grants = [instance] if reverse else list(model.objects.filter(pk__in=pk_set))
    else:
        return
    names = sorted(_grant_name(grant) for grant in grants)
    if names:
        for user in users:
            access_audit(user=user, action="role_changed",
                         changes={field: [[], names] if action == "post_add" else [names, []]})


def group_permissions_changed(sender, instance, action: str, reverse: bool, model, pk_set, **kwargs) -> None:
    """m2m_changed of Group.permissions, from either side (`group.permissions.add(p)`,
    `permission.group_set.remove(g)`, the admin's group form): a permission given to or taken from a
    group is given to or taken from each of its members. Each member gets one `role_changed` entry,
    `{"group_permissions": [taken, given]}`, naming `group: app_label.codename`."""
    if action == "pre_clear":
        pairs = [(group, instance) for group in instance.group_set.all()] if reverse else [
            (instance, permission) for permission in instance.permissions.all()]
    elif action in ("post_add", "post_remove") and pk_set:
        pairs = [(group, instance) for group in model.objects.filter(pk__in=pk_set)] if reverse else [
            (instance, permission) for permission in model.objects.filter(pk__in=pk_set)]
    else:
        return
    by_group: dict = {}
    for group, permission in pairs:
        by_group.setdefault(group, []).append(f"{group.name}: {_grant_name(permission)}")
    for group, names in by_group.items():
        for user in group.user_set.all():
            access_audit(user=user, action="role_changed",
                         changes={"group_permissions": [[], sorted(names)] if action == "post_add" else [sorted(names), []]})


def group_deleted(sender, instance, **kwargs) -> None:
    """pre_delete of Group: deleting a group takes it from its members without an m2m_changed (the
    links go by cascade), so each member gets the `role_changed` entry here, `groups: [[name], []]`."""
    for user in instance.user_set.all():
        access_audit(user=user, action="role_changed", changes={"groups": [[instance.name], []]})


# A unit's settings: what its trail and reports are known by, and the zone their times are shown in.
_UNIT_SETTINGS = ("code", "name", "timezone")


def unit_before_save(sender, instance: Unit, raw: bool = False, **kwargs) -> None:
    """pre_save of Unit: the stored settings, for unit_after_save to compare (none for a new unit)."""
    adding = raw or instance._state.adding
    instance._settings_was = None if adding else Unit.objects.filter(pk=instance.pk).values(*_UNIT_SETTINGS).first()


def unit_after_save(sender, instance: Unit, created: bool, raw: bool = False, **kwargs) -> None:
    """post_save of Unit: a change of its code, name or time zone (the admin site, a shell) is one
    `settings_changed` entry in the unit's own trail, `{field: [before, after]}`, with the actor and
    reason of the surrounding `access_change` (the system's outside one)."""
    was, instance._settings_was = getattr(instance, "_settings_was", None), None
    if created or raw or not was:
        return
    changes = {name: [was[name], getattr(instance, name)] for name in _UNIT_SETTINGS if was[name] != getattr(instance, name)}
    if changes:
        because = _because.get()
        with transaction.atomic():
            journal_write(actor=because.actor, entries=[Entry(
                unit_id=instance.id, entity="unit", record_id=instance.id, record_number=instance.code,
                action="settings_changed", changes=changes, reason=because.reason or "site settings changed",
            )])


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
    first = user.__dict__.pop("_first_password", False)
    with transaction.atomic():
        if not (first or _because.get().creating):
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
    """Lift a sign-in lockout (django-axes) before its cool-off ends, audited (attempt_deleted);
    returns the attempts cleared."""
    from axes.utils import reset

    with transaction.atomic(), access_change(actor=actor, reason=reason or "unlocked by a unit admin"):
        return reset(username=user.username)


def attempt_deleted(sender, instance, **kwargs) -> None:
    """post_delete of django-axes' AccessAttempt: deleting the attempts of a (username, address) pair
    that is locked now lifts its lock, whatever deletes them (the unit admin's unlock, the admin site,
    django-axes' reset commands, a shell): audited `signin_unlocked`, once per pair, with the actor and
    reason of the surrounding `access_change` (the system's outside one). Deleting attempts that lock
    nothing (too few, or a lock already lifted by time: django-axes' own clean-up) writes nothing."""
    from axes.helpers import get_cool_off

    if instance.failures_since_start < settings.AXES_FAILURE_LIMIT:
        return
    cool_off = get_cool_off()
    if cool_off and instance.attempt_time + cool_off <= timezone.now():
        return
    user = User.objects.filter(username=instance.username).first()
    if user is not None:
        reason = _because.get().reason or f"sign-in from {instance.ip_address} unlocked"
        access_audit(user=user, action="signin_unlocked", reason=reason,
                     changes={"locked_out": [True, False]})


def signin_locked_out(*, username: str, address: str) -> None:
    """django-axes locked `username` out from `address`: audited when the account exists, with the
    moment the lock lifts by itself (its last failure, now, plus the cool-off). That lift writes no
    entry of its own: docs/audit.md, "Access changes", says why."""
    from axes.helpers import get_cool_off

    user = User.objects.filter(username=username).first()
    if user is not None:
        cool_off = get_cool_off()
        until = (timezone.now() + cool_off).isoformat(timespec="seconds") if cool_off else None
        access_audit(user=user, action="signin_locked", reason=f"too many failed sign-ins from {address}",
                     changes={"locked_out": [False, True], "locked_until": [None, until]})

"""Changes to who may use the system. Each revokes what the change makes stale, at once:

- deactivating a user, or moving them to another unit: every refresh token is blacklisted and their
  WebSockets are closed with 4003 (after COMMIT);
- a new password: every refresh token is blacklisted, access tokens stop working (they carry a hash
  of the password, SIMPLE_JWT["CHECK_REVOKE_TOKEN"]) and their WebSockets are closed with 4002 (the
  client's refresh then fails and it signs out);
- unlocking a user locked out by failed sign-ins (django-axes).

The Django admin and the unit admins' API call these; nothing else changes users' access. The
realtime tier's periodic re-validation (realtime/hub.py) is the net under them.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from backend.events.broadcast import user_close_send

from .models import Unit, User

CLOSE_ACCESS_REVOKED = 4003
CLOSE_TOKEN_EXPIRED = 4002


def user_revoke_tokens(user: User) -> int:
    """Blacklist every refresh token of `user` that is still valid; returns how many."""
    live = OutstandingToken.objects.filter(user=user, expires_at__gt=timezone.now()).exclude(
        blacklistedtoken__isnull=False
    )
    BlacklistedToken.objects.bulk_create([BlacklistedToken(token=token) for token in live], ignore_conflicts=True)
    return len(live)


def _close_sockets_after_commit(user: User, code: int) -> None:
    transaction.on_commit(lambda: user_close_send(user.id, code))


@transaction.atomic
def user_update_access(*, user: User, is_active: bool | None = None, unit: Unit | None = None) -> User:
    """Activate/deactivate `user` or move them to `unit`. Losing access (deactivated, or moved out of
    the unit their tokens and sockets are for) revokes their refresh tokens and closes their sockets."""
    before = User.objects.select_for_update().only("id", "is_active", "unit_id").get(id=user.id)
    fields = []
    if is_active is not None and is_active != before.is_active:
        user.is_active = is_active
        fields.append("is_active")
    if unit is not None and unit.id != before.unit_id:
        user.unit = unit
        fields.append("unit")
    if fields:
        user.save(update_fields=fields)
        user_access_saved(user=user, was_active=before.is_active, was_unit_id=before.unit_id)
    return user


def user_access_saved(*, user: User, was_active: bool, was_unit_id) -> bool:
    """After a change of `user` was saved (here, or by the admin site's form): if they lost access,
    revoke their refresh tokens and close their sockets (4003). Returns whether they lost it."""
    lost = (was_active and not user.is_active) or (was_unit_id != user.unit_id)
    if lost:
        user_revoke_tokens(user)
        _close_sockets_after_commit(user, CLOSE_ACCESS_REVOKED)
    return lost


@transaction.atomic
def user_set_password(*, user: User, password: str) -> User:
    """A new password: revokes every token issued under the old one and closes the user's sockets."""
    user.set_password(password)
    user.save(update_fields=["password"])
    user_revoke_tokens(user)
    _close_sockets_after_commit(user, CLOSE_TOKEN_EXPIRED)
    return user


def user_unlock(*, user: User) -> int:
    """Lift a sign-in lockout (django-axes) before its cool-off ends; returns the attempts cleared."""
    from axes.utils import reset

    return reset(username=user.username)

"""Electronic signatures (21 CFR Part 11 §11.50, §11.100, §11.200; EU GMP Annex 11 §14).

A decision (approve, reject, send back; single or bulk) is signed by the user who makes it: they
give their password again and the meaning fixed for the action. `signature_sign` re-authenticates
them and records the Signature (never the password); the decision's job then applies it to each
record it decides (`backend.audit.services.signature_apply`), bound to the record's content.

Wrong passwords are audited (entity `user`, action `signature_failed`); SIGNATURE_MAX_FAILURES of
them within SIGNATURE_FAILURE_WINDOW_MINUTES lock the user's signing (`signature_locked`, 423) until
a unit admin unlocks it (`signature_unlocked`). The failure is counted under the user's row lock, so
concurrent attempts are counted one after the other.

The password is checked with Argon2id in the process's bounded pool (accounts/hashing.py). A hash
made by an earlier hasher (PBKDF2) or with other Argon2 parameters is re-hashed and saved here, as
Django does at sign-in: a re-hash is not a new password, so it ends no token (tokens carry the
user's `password_epoch`, accounts/tokens.py), is not audited as a password change, and revokes
nothing.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.hashers import check_password, make_password
from django.db import transaction
from django.utils import timezone

from backend.audit.context import current_origin
from backend.audit.models import AuditEntry, Signature
from backend.audit.services import Entry, journal_write
from backend.common.errors import RoleRequired, SignatureInvalid, SignatureLocked, SignatureRequired, ValidationFailed
from backend.notifications.services import Draft, Kind, notify

from .models import PRINTED_NAME_REQUIRED, Role, User


def _user_entry(user: User, unit_id: uuid.UUID, action: str, reason: str, changes: dict | None = None) -> Entry:
    return Entry(
        unit_id=unit_id, entity="user", record_id=user.id, record_number=user.username,
        action=action, reason=reason, changes=changes or {},
    )


def _recent_failures(user: User, now) -> int:
    since = now - timedelta(minutes=settings.SIGNATURE_FAILURE_WINDOW_MINUTES)
    if user.signing_unlocked_at and user.signing_unlocked_at > since:
        since = user.signing_unlocked_at
    return AuditEntry.objects.filter(
        entity="user", record_id=user.id, action="signature_failed", at__gt=since
    ).count()


def signature_sign(
    *, user: User, password: str | None, meaning: str | None, expected: str, action: str, entity: str,
    unit_id: uuid.UUID,
) -> Signature:
    """Re-authenticate `user` for `action` and record the signature. `expected` is the meaning fixed
    for the action (Part 11 §11.50(a)(3): the records' lifecycle table names it), so a signature
    cannot be given one meaning and used for another action. Raises SignatureRequired (no password,
    or another meaning), SignatureLocked, or SignatureInvalid (the failure is audited and committed,
    and may lock signing)."""
    if not password or not isinstance(password, str):
        raise SignatureRequired(
            f"Sign this decision: give your password and the meaning {expected!r}.",
            details={"meaning": expected},
        )
    if meaning != expected:
        raise SignatureRequired(
            f"The meaning of a signature on {action.replace('_', ' ')} is {expected!r}, not {meaning!r}.",
            details={"meaning": expected},
        )
    failure: Exception | None = None
    # The password is checked before the transaction, outside the user's row lock and without a
    # database connection (accounts/hashing.py: the check waits for the bounded pool); what it
    # decides is recorded under the lock, after the state is read again.
    signer = User.objects.only("id", "is_active", "signing_locked_at", "password", "first_name", "last_name").get(id=user.id)
    _refuse_if_unable(signer)
    checked, upgraded = signer.password, []
    matches = check_password(password, checked, setter=lambda raw: upgraded.append(make_password(raw)))
    with transaction.atomic():
        signer = User.objects.select_for_update().get(id=user.id)
        _refuse_if_unable(signer)
        if signer.password != checked:  # a new password (or a re-hash) meanwhile: check the current one
            upgraded = []
            matches = check_password(password, signer.password, setter=lambda raw: upgraded.append(make_password(raw)))
        now = timezone.now()
        if matches:
            if upgraded:  # an outdated hash (PBKDF2), re-hashed: the same password, the epoch kept
                User.objects.filter(id=signer.id).update(password=upgraded[-1])
            origin = current_origin()
            return Signature.objects.create(
                unit_id=unit_id, signer_id=signer.id, signer_username=signer.username,
                signer_full_name=(signer.get_full_name() or "").strip(), meaning=expected, action=action,
                entity=entity, signed_at=now, client_ip=origin.client_ip, user_agent=origin.user_agent,
            )
        journal_write(actor=signer, entries=[
            _user_entry(signer, unit_id, "signature_failed", f"wrong password signing {expected!r} ({entity} {action})")
        ])
        failures = _recent_failures(signer, now)
        if failures >= settings.SIGNATURE_MAX_FAILURES:
            User.objects.filter(id=signer.id).update(signing_locked_at=now)
            journal_write(actor=signer, entries=[_user_entry(
                signer, unit_id, "signature_locked",
                f"{failures} wrong passwords within {settings.SIGNATURE_FAILURE_WINDOW_MINUTES} minutes",
                {"signing_locked": [False, True]},
            )])
            _locked_notify(signer, unit_id, failures)
            failure = SignatureLocked(
                f"Wrong password. Signing is now locked after {failures} wrong passwords: ask a unit admin to unlock it.",
                details={"locked_at": now.isoformat()},
            )
        else:
            left = settings.SIGNATURE_MAX_FAILURES - failures
            failure = SignatureInvalid(
                f"Wrong password: the decision was not signed ({left} more wrong and signing locks).",
                details={"attempts_left": left},
            )
    raise failure


def _refuse_if_unable(signer: User) -> None:
    if not signer.is_active:
        raise RoleRequired("This account is inactive.")
    if not (signer.get_full_name() or "").strip():
        # A signature manifests the signer's printed name (Part 11 §11.50(a)(1)): none, no signature.
        raise ValidationFailed(PRINTED_NAME_REQUIRED, code="printed_name_required")
    if signer.signing_locked_at is not None:
        raise SignatureLocked(
            "Signing is locked after too many wrong passwords: ask a unit admin to unlock it.",
            details={"locked_at": signer.signing_locked_at.isoformat()},
        )


def _locked_notify(signer: User, unit_id: uuid.UUID, failures: int) -> None:
    """`signature_locked` to the admins of the unit the signature was for (in the lock's transaction)."""
    admins = User.objects.filter(unit_id=unit_id, role=Role.ADMIN, is_active=True).values_list("id", flat=True)
    notify(
        Draft(
            user_id=admin_id, kind=Kind.SIGNATURE_LOCKED, title=f"Signing locked: {signer.username}",
            body=f"{signer.username}'s signing was locked after {failures} wrong passwords within "
            f"{settings.SIGNATURE_FAILURE_WINDOW_MINUTES} minutes. Unlock it in the users list when it is safe.",
            link_entity="user", link_id=signer.id, unit_id=unit_id,
        )
        for admin_id in admins
    )


@transaction.atomic
def signing_unlock(*, actor: User, user: User, reason: str = "") -> User:
    """A unit admin lifts `user`'s signing lock (audited, with the admin as actor)."""
    if not (actor.is_superuser or (actor.role == Role.ADMIN and actor.unit_id == user.unit_id)):
        raise RoleRequired("Only an admin of the user's unit can unlock signing.")
    target = User.objects.select_for_update().get(id=user.id)
    if target.signing_locked_at is None:
        return target
    now = timezone.now()
    User.objects.filter(id=target.id).update(signing_locked_at=None, signing_unlocked_at=now)
    target.signing_locked_at, target.signing_unlocked_at = None, now
    unit_id = target.unit_id or actor.unit_id
    journal_write(actor=actor, entries=[_user_entry(
        target, unit_id, "signature_unlocked", (reason or "").strip() or "signing unlocked by a unit admin",
        {"signing_locked": [True, False]},
    )])
    return target

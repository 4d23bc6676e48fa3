"""Audit-trail reviews as a use case (EU GMP Annex 11 §9): sign and record a review, and tell a
unit's QA and admins when its review is overdue. Here, above accounts and notifications, because
the audit app (which owns the reviews: backend.audit.reviews) sits below both.

- `review_sign_off`: QA or a unit admin signs (meaning `reviewed`) the unit's unreviewed entries up
  to a moment, with a comment; their own entries stay unreviewed (four eyes).
- `reviews_due_notify` (beat, hourly): a unit whose oldest unreviewed entry is older than
  AUDIT_REVIEW_DAYS gets `audit_review_due` to its QA and admins when it falls overdue, and a
  reminder every AUDIT_REVIEW_DAYS (at most daily) until a review catches up.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backend.accounts.models import Role, Unit, User
from backend.accounts.selectors import unit_recipients
from backend.audit.models import AuditReview, Signature
from backend.audit.reviews import review_check, review_due, review_write
from backend.common.errors import ValidationFailed
from backend.notifications.models import Notification
from backend.notifications.services import Draft, Kind, notify

from .checks import require_role

REVIEW_ROLES = (Role.QA,)  # and unit admins, who hold every role
REVIEW_DUE_ROLES = (Role.QA, Role.ADMIN)


def review_precheck(*, actor: User, comment: str, through: datetime | None = None) -> None:
    """What refuses a review before the reviewer's password is checked (with `through`: nothing
    to review, too)."""
    require_role(actor, *REVIEW_ROLES)
    if actor.unit_id is None:
        raise ValidationFailed("Only users of a unit review its trail.", code="unit_required")
    if not (comment or "").strip():
        raise ValidationFailed("A review needs a comment: what was looked at, and what was found.",
                               code="comment_required")
    if through is not None:
        review_check(reviewer=actor, unit_id=actor.unit_id, through=through)


@transaction.atomic
def review_sign_off(*, actor: User, through: datetime, comment: str, signature: Signature) -> AuditReview:
    review_precheck(actor=actor, comment=comment)
    if (signature.signer_id, signature.meaning) != (actor.id, "reviewed"):
        raise ValidationFailed("This review carries no signature of its reviewer.", code="signature_required")
    return review_write(reviewer=actor, unit_id=actor.unit_id, through=through, comment=comment.strip(),
                        signature=signature)


def reviews_due_notify(now: datetime | None = None) -> int:
    """`audit_review_due` to the QA and admins of each unit whose review is overdue (once per
    overdue period). Returns how many notifications it wrote."""
    now = now or timezone.now()
    written = 0
    for unit in Unit.objects.order_by("code"):
        due = review_due(unit.id)
        if not due.overdue(now):
            continue
        # Once when it falls overdue, then a reminder every AUDIT_REVIEW_DAYS (at most daily) until reviewed.
        since = max(due.due_at, now - timedelta(days=max(settings.AUDIT_REVIEW_DAYS, 1)))
        told = Notification.objects.filter(kind=Kind.AUDIT_REVIEW_DUE, link_id=unit.id, created_at__gte=since)
        if told.exists():
            continue
        users = unit_recipients([unit.id], REVIEW_DUE_ROLES)[unit.id]
        days = (now - due.oldest_unreviewed_at).days
        with transaction.atomic():
            written += len(notify(
                Draft(
                    user_id=user_id, kind=Kind.AUDIT_REVIEW_DUE, title=f"Audit-trail review of {unit.code} overdue",
                    body=f"The oldest unreviewed entry of {unit.code}'s audit trail is {days} days old "
                         f"(due for review by {due.due_at:%Y-%m-%d %H:%M} UTC). Review the trail (console: Review).",
                    link_entity="unit", link_id=unit.id, unit_id=unit.id,
                )
                for user_id in users
            ))
    return written

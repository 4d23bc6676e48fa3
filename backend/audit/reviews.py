"""Reviews of the audit trail (EU GMP Annex 11 §9): which entries are reviewed, and the one writer
of a review.

An entry is reviewed when a review of its unit covers its position and was signed by someone other
than the entry's actor (four eyes: nobody reviews their own entries). Entries are never changed, so
`reviewed` is derived, never stored: `with_reviewed` annotates any query of entries with it.

A review signs off the unit's entries up to a moment, from the lowest position still unreviewed
(`AuditReview.next_unreviewed` of the unit's last review): the entries its reviewer made stay
unreviewed and the next review, by someone else, starts there. Each review's scan covers only the
positions since that watermark, so a review costs what it reviews, not the whole trail.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet, UUIDField, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from backend.common.errors import ValidationFailed
from backend.events.services import Change, units_lock

from .models import AuditEntry, AuditReview, Signature
from .services import Binding, Entry, journal_write, signature_apply

ENTITY = "audit_review"
_NOBODY = uuid.UUID(int=0)  # what a system entry's (null) actor is compared as: nobody reviews as it


def _covering(unit=OuterRef("unit_id"), position=OuterRef("position"), actor=OuterRef("actor_id")) -> QuerySet:
    return AuditReview.objects.filter(unit_id=unit, from_position__lte=position, through_position__gte=position).filter(
        ~Q(reviewer_id=Coalesce(actor, Value(_NOBODY), output_field=UUIDField()))
    )


def with_reviewed(entries: QuerySet[AuditEntry]) -> QuerySet[AuditEntry]:
    """`entries`, each annotated `reviewed` (bool)."""
    return entries.annotate(reviewed=Exists(_covering()))


def last_review(unit_id: uuid.UUID) -> AuditReview | None:
    return AuditReview.objects.filter(unit_id=unit_id).order_by("-signed_at", "-through_position").first()


def first_unreviewed(unit_id: uuid.UUID) -> AuditEntry | None:
    """The unit's oldest entry nobody (else) has reviewed, or None."""
    last = last_review(unit_id)
    start = last.next_unreviewed if last else 0
    return (
        with_reviewed(AuditEntry.objects.filter(unit_id=unit_id, position__gte=start))
        .filter(reviewed=False).order_by("position").first()
    )


@dataclass(frozen=True)
class ReviewDue:
    """When the unit's next review is due: AUDIT_REVIEW_DAYS after its oldest unreviewed entry."""

    unit_id: uuid.UUID
    oldest_unreviewed_at: datetime | None
    due_at: datetime | None

    def overdue(self, now: datetime | None = None) -> bool:
        return self.due_at is not None and self.due_at < (now or timezone.now())


def review_due(unit_id: uuid.UUID) -> ReviewDue:
    oldest = first_unreviewed(unit_id)
    if oldest is None:
        return ReviewDue(unit_id, None, None)
    return ReviewDue(unit_id, oldest.at, oldest.at + timedelta(days=settings.AUDIT_REVIEW_DAYS))


def review_content(review: AuditReview) -> dict:
    """What the reviewer's signature binds: the range, the chain head it ends at, the comment."""
    return {
        "unit": str(review.unit_id), "from_position": review.from_position,
        "through_position": review.through_position, "through_hash": review.through_hash,
        "comment": review.comment,
    }


def _waiting(unit_id: uuid.UUID, through: datetime):
    """(where the unit's next review starts, its head at `through`, the entries waiting up to it)."""
    last = last_review(unit_id)
    start = last.next_unreviewed if last else 0
    head = (
        AuditEntry.objects.filter(unit_id=unit_id, at__lte=through).order_by("-position")
        .values_list("position", "hash", "at").first()
    )
    if head is None:
        return start, None, AuditEntry.objects.none()
    waiting = with_reviewed(AuditEntry.objects.filter(unit_id=unit_id, position__gte=start, position__lte=head[0]))
    return start, head, waiting.filter(reviewed=False)


def _nothing() -> ValidationFailed:
    return ValidationFailed(
        "Nothing to review up to then: every entry is reviewed, or is yours (someone else reviews those).",
        code="nothing_to_review",
    )


def review_check(*, reviewer, unit_id: uuid.UUID, through: datetime) -> int:
    """How many entries a review up to `through` would sign off (refusing as `review_write` would,
    before a signature is asked for)."""
    if through > timezone.now():
        raise ValidationFailed("A review cannot sign off entries still to come: `through` is in the future.",
                               code="invalid")
    count = _waiting(unit_id, through)[2].exclude(actor_id=reviewer.id).count()
    if not count:
        raise _nothing()
    return count


def review_write(*, reviewer, unit_id: uuid.UUID, through: datetime, comment: str, signature: Signature) -> AuditReview:
    """Sign off the unit's unreviewed entries up to `through` (call in a transaction, with the
    reviewer's signature, meaning `reviewed`, already given). Audited (entity `audit_review`) and
    broadcast to the unit. Raises ValidationFailed `nothing_to_review` when no entry of someone
    else's is waiting."""
    if through > timezone.now():
        raise ValidationFailed("A review cannot sign off entries still to come: `through` is in the future.",
                               code="invalid")
    units_lock([unit_id])  # one review of a unit at a time, and none while its chain grows
    start, head, waiting = _waiting(unit_id, through)
    first = waiting.order_by("position").values_list("position", flat=True).first()
    signed_off = waiting.exclude(actor_id=reviewer.id).count()  # (a system entry's null actor included)
    if not signed_off:
        raise _nothing()
    own = waiting.filter(actor_id=reviewer.id).order_by("position").values_list("position", flat=True).first()
    now = timezone.now()
    review = AuditReview(
        unit_id=unit_id, from_position=first, through_position=head[0], through_at=through,
        through_hash=head[1], next_unreviewed=own if own is not None else head[0] + 1, entries=signed_off,
        reviewer_id=reviewer.id, reviewer_username=reviewer.username,
        reviewer_full_name=(reviewer.get_full_name() or "").strip(), signature=signature, signed_at=now,
        comment=comment,
    )
    review.save(force_insert=True)
    signature_apply(signature, [Binding(ENTITY, review.id, _number(review), 1, review_content(review))])
    change = Change(unit_id, ENTITY, "created", {"id": str(review.id), "status": "reviewed", "actor": reviewer.username})
    journal_write(actor=reviewer, changes=[change], entries=[Entry(
        unit_id=unit_id, entity=ENTITY, record_id=review.id, record_number=_number(review), action="reviewed",
        changes={"reviewed": [None, [review.from_position, review.through_position]], "entries": [None, signed_off]},
        reason=comment, version=1, change=change, signature_id=signature.id,
    )])
    return review


def _number(review: AuditReview) -> str:
    return f"#{review.from_position}-#{review.through_position}"


def reviews_visible_to(user) -> QuerySet[AuditReview]:
    reviews = AuditReview.objects.order_by("-signed_at", "-through_position")
    if getattr(user, "is_superuser", False):
        return reviews
    return reviews.filter(unit_id=getattr(user, "unit_id", None))

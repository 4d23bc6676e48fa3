"""Selectors: the read side. Every query a user can trigger is scoped to what that user may see."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from backend.accounts.models import User

from .models import BaseRequest, Crate, SendBackRecord, TransferRequest
from .services import request_kind


def _unit_id(user: User):
    """The user's unit; none for an anonymous user (e.g. drf-spectacular's schema generation): sees nothing."""
    return getattr(user, "unit_id", None)


def crates_visible_to(user: User) -> QuerySet[Crate]:
    crates = Crate.objects.all()
    return crates if user.is_superuser else crates.filter(unit_id=_unit_id(user))


def requests_visible_to(user: User, entity: str) -> QuerySet[BaseRequest]:
    """A unit's own requests; a transfer is also visible to the unit it is addressed to."""
    model = request_kind(entity).model
    requests = model.objects.prefetch_related("crates")
    if user.is_superuser:
        return requests
    scope = Q(unit_id=_unit_id(user))
    if model is TransferRequest:
        scope |= Q(destination_unit_id=_unit_id(user))
    return requests.filter(scope)


def sendback_records_visible_to(user: User) -> QuerySet[SendBackRecord]:
    records = SendBackRecord.objects.all()
    return records if user.is_superuser else records.filter(unit_id=_unit_id(user))

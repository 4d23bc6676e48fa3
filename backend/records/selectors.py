"""Selectors: the read side. Every query a user can trigger is scoped to what that user may see."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from backend.accounts.models import User

from .models import BaseRequest, Crate, SendBackRecord, TransferRequest
from .services import request_kind


def crates_visible_to(user: User) -> QuerySet[Crate]:
    crates = Crate.objects.all()
    return crates if user.is_superuser else crates.filter(unit_id=user.unit_id)


def requests_visible_to(user: User, entity: str) -> QuerySet[BaseRequest]:
    """A unit's own requests; a transfer is also visible to the unit it is addressed to."""
    model = request_kind(entity).model
    requests = model.objects.prefetch_related("crates")
    if user.is_superuser:
        return requests
    scope = Q(unit_id=user.unit_id)
    if model is TransferRequest:
        scope |= Q(destination_unit_id=user.unit_id)
    return requests.filter(scope)


def sendback_records_visible_to(user: User) -> QuerySet[SendBackRecord]:
    records = SendBackRecord.objects.all()
    return records if user.is_superuser else records.filter(unit_id=user.unit_id)

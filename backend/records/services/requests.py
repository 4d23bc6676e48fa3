"""Requests: file, edit and delete. Each call is one transaction that locks the request and its
crates, checks role, scope, version and status, and writes its outbox events and audit entries."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from backend.accounts.models import Role, Unit, User
from backend.common.errors import CrateUnavailable, InvalidTransition, NotFound, ValidationFailed
from backend.events.services import Change

from ..lifecycle import EDITABLE_STATUSES, RequestKind, request_kind
from ..models import BaseRequest, Crate, CrateStatus, TransferRequest
from ..selectors import open_request_crate_ids
from .changes import crate_change, request_changes
from .checks import HELD_AGAINST, check_request_scope, check_version, refuse_held, require_role
from .crates import bump, new_crates, require_reason
from .journal import crate_entry, crate_state, diff, journal_write, request_entry, request_state, unit_codes
from .notices import incoming_notify
from .numbers import next_number, reserve_numbers


def request_for_update(kind: RequestKind, actor: User, request_id: uuid.UUID) -> BaseRequest:
    """The request, locked; a deleted request does not exist."""
    request = kind.model.objects.select_for_update().filter(id=request_id, deleted_at__isnull=True).first()
    if request is None:
        raise NotFound(f"No such {kind.entity} request.")
    check_request_scope(kind, actor, request)
    return request


def _lock_crates(unit_id: uuid.UUID, crate_ids: Iterable[uuid.UUID]) -> list[Crate]:
    ids = sorted(set(crate_ids), key=str)
    crates = list(Crate.objects.select_for_update().filter(id__in=ids, deleted_at__isnull=True).order_by("id"))
    if len(crates) != len(ids) or any(c.unit_id != unit_id for c in crates):
        raise ValidationFailed("Unknown crate in the request.", code="unknown_crate")
    return crates


def _check_crates_available(crates: list[Crate], exclude: BaseRequest | None = None, kind: RequestKind | None = None) -> None:
    if kind is not None and kind.model in HELD_AGAINST:
        refuse_held(crates, f"no {kind.entity} request may name")
    unavailable = [c.crate_number for c in crates if c.status != CrateStatus.IN_STORAGE]
    if unavailable:
        raise CrateUnavailable(
            f"Not in storage: {', '.join(unavailable)}.", details={"crates": unavailable}
        )
    busy = open_request_crate_ids([c.id for c in crates], exclude=exclude)
    if busy:
        numbers = sorted(c.crate_number for c in crates if c.id in busy)
        raise CrateUnavailable(
            f"Already in an open request: {', '.join(numbers)}.", details={"crates": numbers}
        )


def _destination(kind: RequestKind, source_unit_id: uuid.UUID, destination_unit_id: uuid.UUID | None) -> Unit | None:
    if kind.model is not TransferRequest:
        return None
    destination = Unit.objects.filter(id=destination_unit_id).first() if destination_unit_id else None
    if destination is None:
        raise ValidationFailed("A transfer needs an existing destination unit.", code="destination_required")
    if destination.id == source_unit_id:
        raise ValidationFailed("A transfer cannot go to its own unit.", code="destination_same_unit")
    return destination


@transaction.atomic
def request_create(
    *,
    entity: str,
    actor: User,
    crate_ids: list[uuid.UUID],
    reason: str = "",
    destination_unit_id: uuid.UUID | None = None,
) -> BaseRequest:
    kind = request_kind(entity)
    require_role(actor, Role.REQUESTER)
    if actor.unit_id is None:
        raise ValidationFailed("Only users of a unit can file requests.", code="unit_required")
    if not crate_ids:
        raise ValidationFailed("A request needs at least one crate.", code="crates_required")
    destination = _destination(kind, actor.unit_id, destination_unit_id)
    crates = _lock_crates(actor.unit_id, crate_ids)
    _check_crates_available(crates, kind=kind)
    fields = {"destination_unit": destination} if destination else {}
    request = kind.model.objects.create(
        request_number=next_number(str(actor.unit_id), kind.prefix),
        unit_id=actor.unit_id,
        reason=reason,
        created_by=actor,
        **fields,
    )
    request.crates.set(crates)
    codes = unit_codes([request.unit_id, getattr(request, "destination_unit_id", request.unit_id)])
    changes = request_changes(kind, request, "created", actor=actor)
    entry = request_entry(
        kind, request, "created", diff({}, request_state(request, [c.crate_number for c in crates], codes)), change=changes[0]
    )
    journal_write(actor=actor, changes=changes, entries=[entry])
    incoming_notify([request], actor, "filed")
    return request


@transaction.atomic
def requests_create_bulk(*, entity: str, actor: User, count: int, reason: str = "") -> list[BaseRequest]:
    """File `count` pending requests, each for one new crate, in one transaction (demo and
    benchmark data at scale): two number blocks, one outbox write."""
    kind = request_kind(entity)
    require_role(actor, Role.REQUESTER)
    if actor.unit_id is None:
        raise ValidationFailed("Only users of a unit can file requests.", code="unit_required")
    destination = None
    if kind.model is TransferRequest:
        destination = Unit.objects.exclude(id=actor.unit_id).order_by("code").first()
        if destination is None:
            raise ValidationFailed("A transfer needs another unit.", code="destination_required")
    crates = new_crates(actor.unit, count)
    year, first = reserve_numbers(str(actor.unit_id), kind.prefix, count)
    extra = {"destination_unit": destination} if destination else {}
    requests = kind.model.objects.bulk_create(
        kind.model(
            request_number=f"{kind.prefix}-{year}-{first + i:04d}", unit_id=actor.unit_id,
            reason=reason, created_by=actor, **extra,
        )
        for i in range(count)
    )
    through = kind.model.crates.through
    field = f"{kind.model._meta.model_name}_id"
    through.objects.bulk_create(through(crate_id=c.id, **{field: r.id}) for c, r in zip(crates, requests, strict=True))
    codes = unit_codes([actor.unit_id, *([destination.id] if destination else [])])
    changes, entries = [], []
    for crate in crates:
        change = crate_change(crate, "created", actor=actor)
        changes.append(change)
        entries.append(crate_entry(crate, "created", diff({}, crate_state(crate, codes)), change=change))
    for crate, request in zip(crates, requests, strict=True):
        request_events = request_changes(kind, request, "created", actor=actor)
        changes += request_events
        state = request_state(request, [crate.crate_number], codes)
        entries.append(request_entry(kind, request, "created", diff({}, state), change=request_events[0]))
    journal_write(actor=actor, changes=changes, entries=entries)
    return requests


@transaction.atomic
def request_update(
    *,
    entity: str,
    actor: User,
    request_id: uuid.UUID,
    expected_version: int | None,
    crate_ids: list[uuid.UUID] | None = None,
    reason: str | None = None,
    destination_unit_id: uuid.UUID | None = None,
    change_reason: str = "",
) -> BaseRequest:
    """Edit a submitted request: GMP wants to know why (`change_reason`, required), and the audit
    entry keeps the fields' old and new values."""
    kind = request_kind(entity)
    require_role(actor, Role.REQUESTER)
    request = request_for_update(kind, actor, request_id)
    change_reason = require_reason(change_reason, "edit a submitted request (change_reason)")
    check_version(request, expected_version)
    if request.status not in EDITABLE_STATUSES:
        raise InvalidTransition(f"{request} is {request.status} and can no longer be edited.")
    changed: list[str] = []
    codes = unit_codes([request.unit_id, getattr(request, "destination_unit_id", request.unit_id)])
    state_before = request_state(request, list(request.crates.values_list("crate_number", flat=True)), codes)
    before = request_changes(kind, request, "updated", actor=actor)  # a transfer may change destination
    if reason is not None:
        request.reason = reason
        changed.append("reason")
    if destination_unit_id is not None and isinstance(request, TransferRequest):
        # The request's own unit, not the actor's: a superuser has none.
        request.destination_unit = _destination(kind, request.unit_id, destination_unit_id)
        changed.append("destination_unit")
    if crate_ids is not None:
        if not crate_ids:
            raise ValidationFailed("A request needs at least one crate.", code="crates_required")
        crates = _lock_crates(request.unit_id, crate_ids)
        _check_crates_available(crates, exclude=request, kind=kind)
        request.crates.set(crates)
    bump(request, changed)
    units_before = {c.unit_id for c in before}
    after = [
        # A new destination learns the request entered its view (as a transfer's crates do).
        c if c.unit_id in units_before else Change(c.unit_id, c.entity, "created", c.data)
        for c in request_changes(kind, request, "updated", actor=actor)
    ]
    units_after = {c.unit_id for c in after}
    # A destination that was dropped learns the request left its view.
    gone = [Change(c.unit_id, c.entity, "deleted", c.data) for c in before if c.unit_id not in units_after]
    codes.update(unit_codes([getattr(request, "destination_unit_id", request.unit_id)]))
    state_after = request_state(request, list(request.crates.values_list("crate_number", flat=True)), codes)
    entry = request_entry(kind, request, "updated", diff(state_before, state_after), change=after[0], reason=change_reason)
    journal_write(actor=actor, changes=[*after, *gone], entries=[entry])
    if gone:  # redirected to another unit: its approvers learn of it as if it were filed to them
        incoming_notify([request], actor, "redirected")
    return request


@transaction.atomic
def request_delete(
    *, entity: str, actor: User, request_id: uuid.UUID, expected_version: int | None, reason: str
) -> BaseRequest:
    """Soft delete: the request is kept, hidden from lists, with who, when and why; its crates are
    free for another request."""
    kind = request_kind(entity)
    require_role(actor, Role.REQUESTER)
    request = request_for_update(kind, actor, request_id)
    reason = require_reason(reason, "delete a request")
    check_version(request, expected_version)
    if request.status not in EDITABLE_STATUSES:
        raise InvalidTransition(f"{request} is {request.status} and can no longer be deleted.")
    request.deleted_at, request.deleted_by, request.delete_reason = timezone.now(), actor, reason
    bump(request, ["deleted_at", "deleted_by", "delete_reason"])
    changes = request_changes(kind, request, "deleted", actor=actor)
    entry = request_entry(kind, request, "deleted", {"deleted": [False, True]}, change=changes[0], reason=reason)
    journal_write(actor=actor, changes=changes, entries=[entry])
    return request

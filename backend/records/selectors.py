"""Selectors: the read side. Every query a user can trigger is scoped to what that user may see."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from django.db.models import Q, QuerySet

from backend.accounts.models import Role, User
from backend.audit.models import AuditEntry

from .lifecycle import EDITABLE_STATUSES, REQUEST_KINDS, request_kind
from .models import BaseRequest, Crate, CrateStatus, LegalHold, SendBackRecord, TransferRequest


def _unit_id(user: User):
    """The user's unit; none for an anonymous user (e.g. drf-spectacular's schema generation): sees nothing."""
    return getattr(user, "unit_id", None)


def may_see_deleted(user: User) -> bool:
    """Deleted records are kept and shown on request (`?include_deleted=1`) to unit admins."""
    return bool(getattr(user, "is_superuser", False) or getattr(user, "role", None) == Role.ADMIN)


def crates_visible_to(user: User, include_deleted: bool = False) -> QuerySet[Crate]:
    crates = Crate.objects.all()
    if not (include_deleted and may_see_deleted(user)):
        crates = crates.filter(deleted_at__isnull=True)
    return crates if user.is_superuser else crates.filter(unit_id=_unit_id(user))


def requests_visible_to(user: User, entity: str, include_deleted: bool = False) -> QuerySet[BaseRequest]:
    """A unit's own requests; a transfer is also visible to the unit it is addressed to."""
    model = request_kind(entity).model
    requests = model.objects.prefetch_related("crates")
    if not (include_deleted and may_see_deleted(user)):
        requests = requests.filter(deleted_at__isnull=True)
    if user.is_superuser:
        return requests
    scope = Q(unit_id=_unit_id(user))
    if model is TransferRequest:
        scope |= Q(destination_unit_id=_unit_id(user))
    return requests.filter(scope)


def sendback_records_visible_to(user: User) -> QuerySet[SendBackRecord]:
    records = SendBackRecord.objects.all()
    return records if user.is_superuser else records.filter(unit_id=_unit_id(user))


def open_request_crate_ids(crate_ids: Iterable[uuid.UUID], exclude: BaseRequest | None = None) -> set:
    """Which of these crates are in a request that is still open (pending or sent back), other than
    `exclude`: a crate can be in one open request at a time."""
    busy: set = set()
    for kind in REQUEST_KINDS.values():
        through = kind.model.crates.through
        name = kind.model._meta.model_name
        rows = through.objects.filter(
            crate_id__in=list(crate_ids),
            **{f"{name}__status__in": list(EDITABLE_STATUSES), f"{name}__deleted_at__isnull": True},
        )
        if exclude is not None and isinstance(exclude, kind.model):
            rows = rows.exclude(**{f"{kind.model._meta.model_name}_id": exclude.id})
        busy.update(rows.values_list("crate_id", flat=True))
    return busy


def _open_holdings(kind) -> QuerySet:
    """The (crate, request) rows of open (pending or sent back, not deleted) requests of a kind."""
    name = kind.model._meta.model_name
    return kind.model.crates.through.objects.filter(
        **{f"{name}__status__in": list(EDITABLE_STATUSES), f"{name}__deleted_at__isnull": True}
    )


def reserved_crates() -> Q:
    """Crates named in an open request: a condition for a crate query. Each kind's holdings are one
    uncorrelated subquery, which PostgreSQL reads once and hashes (not a lookup per crate row)."""
    condition = Q()
    for kind in REQUEST_KINDS.values():
        condition |= Q(id__in=_open_holdings(kind).values("crate_id"))
    return condition


def crates_reserved_by(crate_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    """{crate id: the number of the open request that names it} for those of `crate_ids` that are
    reserved (a crate is in one open request at a time): one query per request kind."""
    ids = list(crate_ids)
    found: dict[uuid.UUID, str] = {}
    if not ids:
        return found
    for kind in REQUEST_KINDS.values():
        name = kind.model._meta.model_name
        found.update(_open_holdings(kind).filter(crate_id__in=ids).values_list("crate_id", f"{name}__request_number"))
    return found


def free_crates_in_storage(unit_id) -> QuerySet[Crate]:
    """A unit's crates in storage that no open request holds, by number."""
    crates = Crate.objects.filter(unit_id=unit_id, status=CrateStatus.IN_STORAGE, deleted_at__isnull=True)
    busy = open_request_crate_ids(crates.values_list("id", flat=True))
    return crates.exclude(id__in=busy).order_by("crate_number")


# The audit actions that give a request its content: filing it, and every edit of it.
CONTENT_ACTIONS = ("created", "updated")


def request_contributors(entity: str, requests: Iterable[BaseRequest]) -> dict[uuid.UUID, set[uuid.UUID]]:
    """{request id: who gave it its current content}: whoever filed it and whoever edited it (its
    crates, destination or reason), read from the audit trail, which nobody can rewrite. Four eyes
    keeps all of them from deciding on it."""
    requests = list(requests)
    found: dict[uuid.UUID, set[uuid.UUID]] = {r.id: {r.created_by_id} for r in requests}
    if not requests:
        return found
    rows = AuditEntry.objects.filter(
        entity=entity, record_id__in=list(found), action__in=CONTENT_ACTIONS, actor_id__isnull=False
    ).values_list("record_id", "actor_id")
    for record_id, actor_id in rows.distinct():
        found[record_id].add(actor_id)
    return found


def mine_request_ids(user_id: str, unit_id: str, limit: int) -> set[str]:
    """Ids of the unit's requests the user created or last decided, and of those they sent back
    (a resubmit clears `decided_by`; the send-back record keeps who): a `mine` filter's start. At
    most `limit` ids in all: each query reads only what the ones before it left of the budget."""
    ids: set[str] = set()
    mine = Q(created_by_id=user_id) | Q(decided_by_id=user_id)
    for kind in REQUEST_KINDS.values():
        if len(ids) >= limit:
            return ids
        in_unit = Q(unit_id=unit_id)
        if kind.model is TransferRequest:
            in_unit |= Q(destination_unit_id=unit_id)
        rows = kind.model.objects.filter(mine & in_unit).order_by("-created_at").values_list("id", flat=True)
        ids.update(str(pk) for pk in rows[: limit - len(ids)])
    if len(ids) < limit:
        sent_back = (
            SendBackRecord.objects.filter(created_by_id=user_id, unit_id=unit_id)
            .order_by("-created_at").values_list("request_id", flat=True)
        )
        ids.update(str(pk) for pk in sent_back[: limit - len(ids)])
    return ids


def holds_visible_to(user: User) -> QuerySet[LegalHold]:
    """A unit's legal holds (every unit's, for a superuser), newest first, with their crates."""
    holds = LegalHold.objects.prefetch_related("crates").order_by("-placed_at", "id")
    return holds if getattr(user, "is_superuser", False) else holds.filter(unit_id=_unit_id(user))

"""A bulk action named the way people name requests (their numbers), and checked before it is signed.

`resolve_numbers` turns request numbers (`WR-2026-0042`, any case) into the ids of the decider's
unit's requests. `bulk_preview` says, for every request a bulk action names, what the job would do
with it if it ran now: go ahead, or its refusal (`not_found`, `four_eyes`, `invalid_transition`,
`stale_version`, `duplicate`) with the same code and message the job's outcome would carry. It reads
only: nothing is queued, signed or written, so a console can show the exact list in its signing
dialog and refuse a mistyped number before it asks for a password. The job re-checks everything
under lock (a request can still change between the preview and the signature).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Q

from backend.accounts.models import User
from backend.common.errors import DomainError, ValidationFailed

from .lifecycle import request_kind
from .selectors import request_contributors
from .services import request_transition_check, transition_precheck

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


def normal_number(number: str) -> str:
    """How request numbers are compared: trimmed, upper case (`wr-2026-0042` is `WR-2026-0042`)."""
    return (number or "").strip().upper()


def _as_uuid(ref: str) -> uuid.UUID | None:
    return uuid.UUID(ref) if _UUID.match(ref or "") else None


def _unit_requests(entity: str, actor: User):
    """The decider's unit's own requests of the kind, deleted ones left out (they do not exist)."""
    return request_kind(entity).model.objects.filter(unit_id=actor.unit_id, deleted_at__isnull=True)


def resolve_numbers(*, actor: User, entity: str, numbers: list[str]) -> tuple[dict[str, str], list[str]]:
    """({number as given: request id}, [numbers that name no request of the decider's unit])."""
    wanted = {normal_number(n) for n in numbers if normal_number(n)}
    found = dict(
        _unit_requests(entity, actor).filter(request_number__in=wanted).values_list("request_number", "id")
    ) if wanted and actor.unit_id is not None else {}
    resolved, unknown = {}, []
    for number in numbers:
        key = normal_number(number)
        if key in found:
            resolved[number] = str(found[key])
        elif number not in unknown:
            unknown.append(number)
    return resolved, unknown


@dataclass
class PreviewItem:
    ref: str  # as the caller named it: a request number or an id
    ok: bool
    code: str | None = None
    message: str = ""
    id: str | None = None
    request_number: str | None = None
    status: str | None = None
    version: int | None = None


def bulk_preview(
    *, actor: User, entity: str, action: str, reason: str = "", refs: list[str], versions: dict[str, int] | None = None
) -> list[PreviewItem]:
    """What a bulk `action` on `refs` (request numbers or ids, in the caller's order) would do now.

    Raises what refuses the whole action, as POST /api/bulk-actions/ would: no unit, the role, a
    missing reason, no or too many requests. `versions` ({id: version}) are the versions the decider
    saw: a request changed since is `stale_version` here, as it would be in the job."""
    if actor.unit_id is None:
        raise ValidationFailed("Bulk actions run within a unit; use a unit account.", code="unit_required")
    transition = transition_precheck(entity=entity, action=action, actor=actor, reason=reason)
    if not refs:
        raise ValidationFailed("No requests named: give request numbers or ids.", code="ids_required")
    if len(refs) > settings.BULK_MAX_IDS:
        raise ValidationFailed(f"At most {settings.BULK_MAX_IDS} requests per bulk action.", code="too_many_ids")
    versions = versions or {}
    ids = {ref: _as_uuid(ref) for ref in refs}
    numbers = {normal_number(ref) for ref, pk in ids.items() if pk is None}
    wanted = [pk for pk in ids.values() if pk is not None]
    rows = list(_unit_requests(entity, actor).filter(Q(id__in=wanted) | Q(request_number__in=numbers)))
    by_id = {r.id: r for r in rows}
    by_number = {r.request_number: r for r in rows}
    contributors = request_contributors(entity, rows) if transition.action.decision else {}
    items, seen = [], set()
    for ref in refs:
        pk = ids[ref]
        request = by_id.get(pk) if pk is not None else by_number.get(normal_number(ref))
        if request is None:
            items.append(PreviewItem(ref, False, "not_found", f"No {entity} request {ref} in your unit."))
            continue
        found = {"id": str(request.id), "request_number": request.request_number, "status": request.status,
                 "version": request.version}
        if request.id in seen:
            items.append(PreviewItem(ref, False, "duplicate", f"{request} is named twice.", **found))
            continue
        seen.add(request.id)
        try:
            request_transition_check(
                entity=entity, action=transition.action.name, actor=actor, request=request, reason=reason,
                expected_version=versions.get(str(request.id)), contributors=contributors.get(request.id),
            )
        except DomainError as refusal:
            items.append(PreviewItem(ref, False, refusal.code, refusal.message, **found))
            continue
        items.append(PreviewItem(ref, True, **found))
    return items

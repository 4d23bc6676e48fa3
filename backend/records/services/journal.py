"""What the audit trail records of crates and requests: the fields an inspector compares, and the
entries of each kind of change. Every service here writes through `journal_write` (the change, its
outbox events and its audit entries, together)."""

from __future__ import annotations

import uuid
from typing import Any

from backend.accounts.models import Unit
from backend.audit.services import Binding, Entry, diff, journal_write
from backend.events.services import Change

from ..lifecycle import RequestKind
from ..models import BaseRequest, Crate, TransferRequest

__all__ = [
    "Binding", "Entry", "crate_entry", "crate_state", "diff", "journal_write", "request_entry", "request_state",
    "signed_binding", "signed_content", "unit_codes",
]


def unit_codes(unit_ids) -> dict[uuid.UUID, str]:
    return dict(Unit.objects.filter(id__in=set(unit_ids)).values_list("id", "code"))


def crate_state(crate: Crate, codes: dict[uuid.UUID, str] | None = None) -> dict[str, Any]:
    unit = (codes or {}).get(crate.unit_id, str(crate.unit_id))
    return {
        "crate_number": crate.crate_number, "unit": unit, "status": crate.status,
        "location": crate.location, "destruction_due": crate.destruction_due,
    }


def request_state(request: BaseRequest, crate_numbers: list[str], codes: dict[uuid.UUID, str] | None = None) -> dict[str, Any]:
    state = {"status": request.status, "reason": request.reason, "crates": sorted(crate_numbers)}
    if isinstance(request, TransferRequest):
        state["destination_unit"] = (codes or {}).get(request.destination_unit_id, str(request.destination_unit_id))
    return state


def crate_entry(crate: Crate, action: str, changes: dict, *, change: Change | None, reason: str = "", unit_id=None) -> Entry:
    return Entry(
        unit_id=unit_id or crate.unit_id, entity="crate", record_id=crate.id, record_number=crate.crate_number,
        action=action, changes=changes, reason=reason, version=crate.version, change=change,
    )


def request_entry(
    kind: RequestKind, request: BaseRequest, action: str, changes: dict, *, change: Change | None, reason: str = ""
) -> Entry:
    return Entry(
        unit_id=request.unit_id, entity=kind.entity, record_id=request.id, record_number=request.request_number,
        action=action, changes=changes, reason=reason, version=request.version, change=change,
    )


def signed_content(request: BaseRequest, crate_ids) -> dict[str, Any]:
    """What a signature on a request is bound to: the request as its decision left it. The same
    function computes it when signing and when checking (the record's `signatures`), so an edit of
    any of these fields, or of its crates, breaks the binding."""
    content = {
        "request_number": request.request_number, "unit": str(request.unit_id), "status": request.status,
        "reason": request.reason, "crates": sorted(str(c) for c in crate_ids),
        "decided_by": str(request.decided_by_id) if request.decided_by_id else None,
        "decision_reason": request.decision_reason,
        "deleted": request.deleted_at is not None,
    }
    if isinstance(request, TransferRequest):
        content["destination_unit"] = str(request.destination_unit_id)
    return content


def signed_binding(kind: RequestKind, request: BaseRequest, crate_ids) -> Binding:
    return Binding(
        entity=kind.entity, record_id=request.id, record_number=request.request_number,
        version=request.version, content=signed_content(request, crate_ids),
    )

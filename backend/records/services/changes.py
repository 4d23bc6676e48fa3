"""What each records change tells the unit's clients: the event payloads (identifiers, status and
who made the change, never document contents), as `backend.events` Changes."""

from __future__ import annotations

import uuid

from backend.accounts.models import User
from backend.events.services import Change

from ..lifecycle import RequestKind
from ..models import BaseRequest, Crate, SendBackRecord, TransferRequest


def _by(data: dict, actor: User | None) -> dict:
    if actor is not None:
        data["actor"] = actor.username
    return data


def crate_change(crate: Crate, action: str, unit_id: uuid.UUID | None = None, actor: User | None = None) -> Change:
    data = {"id": str(crate.id), "status": crate.status, "crate_number": crate.crate_number}
    return Change(unit_id or crate.unit_id, "crate", action, _by(data, actor))


def request_changes(kind: RequestKind, request: BaseRequest, action: str, actor: User | None = None) -> list[Change]:
    """A request's event for its unit and, for transfers, the destination unit too."""
    data = {"id": str(request.id), "status": request.status, "request_number": request.request_number}
    units = [request.unit_id]
    if isinstance(request, TransferRequest) and request.destination_unit_id != request.unit_id:
        units.append(request.destination_unit_id)
    return [Change(unit_id, kind.entity, action, _by(dict(data), actor)) for unit_id in units]


def sendback_change(kind: RequestKind, record: SendBackRecord, request: BaseRequest, actor: User | None = None) -> Change:
    data = {
        "id": str(record.id), "status": request.status, "request_id": str(request.id),
        "request_number": request.request_number, "request_entity": kind.entity,
    }
    return Change(request.unit_id, "sendback", "created", _by(data, actor))

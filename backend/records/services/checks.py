"""The checks every records service makes before it writes: role, unit scope and version."""

from __future__ import annotations

import uuid

from backend.accounts.models import User
from backend.common.errors import LegalHold, NotFound, RoleRequired, StaleVersion

from ..lifecycle import RequestKind
from ..models import BaseRequest, Crate, DestructionRequest, TransferRequest


def require_role(actor: User, *roles: str) -> None:
    if actor.is_superuser or actor.has_role(*roles):
        return
    raise RoleRequired(f"This needs the {' or '.join(roles)} role.")


def in_scope(actor: User, unit_id: uuid.UUID) -> bool:
    return actor.is_superuser or actor.unit_id == unit_id


def check_version(obj: Crate | BaseRequest, expected_version: int | None) -> None:
    if expected_version is not None and obj.version != expected_version:
        raise StaleVersion(
            f"{obj} was changed by someone else (version {obj.version}, you sent {expected_version}). "
            "Reload it and try again.",
            details={"current_version": obj.version},
        )


def check_request_scope(kind: RequestKind, actor: User, request: BaseRequest) -> None:
    """Only the requesting unit changes a request. A transfer's destination unit can read it, so it
    is told no (403) rather than "not found", which would contradict what it can see; to every
    other unit the request does not exist (404)."""
    if in_scope(actor, request.unit_id):
        return
    if isinstance(request, TransferRequest) and actor.unit_id == request.destination_unit_id:
        raise RoleRequired("Only the unit that filed this transfer can change it.")
    raise NotFound(f"No such {kind.entity} request.")


# The requests a legal hold stops: destroying a crate, and transferring it out of the unit that
# holds it (a withdrawal, for use, is not stopped: the crate stays in the unit's custody).
HELD_AGAINST = (DestructionRequest, TransferRequest)


def refuse_held(crates, what: str) -> None:
    """409 `legal_hold` naming the held crates among `crates` (read under their row locks)."""
    held = sorted(c.crate_number for c in crates if c.on_hold)
    if held:
        raise LegalHold(f"Under legal hold, {what}: {', '.join(held)}.", details={"crates": held})

"""The request lifecycle: which transitions exist, from which statuses, for which roles.

One table, identical for the three kinds today (a kind may be given its own). Services enforce it,
the job kinds are declared from it, and the API and the console name its actions. How each action
is spelled (URL, audit trail, signature meaning, notification) is its `Action` (actions.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.accounts.models import Role
from backend.common.errors import ValidationFailed

from .actions import APPROVE, REJECT, RESUBMIT, SEND_BACK, Action, action_named
from .models import BaseRequest, DestructionRequest, RequestStatus, TransferRequest, WithdrawalRequest


@dataclass(frozen=True)
class Transition:
    action: Action
    sources: frozenset[str]
    target: str
    roles: tuple[str, ...]
    needs_reason: bool = False


def _transitions(*transitions: Transition) -> dict[str, Transition]:
    return {t.action.name: t for t in transitions}


PENDING = frozenset({RequestStatus.PENDING})
REQUEST_TRANSITIONS: dict[str, Transition] = _transitions(
    Transition(APPROVE, PENDING, RequestStatus.APPROVED, (Role.APPROVER,)),
    Transition(REJECT, PENDING, RequestStatus.REJECTED, (Role.APPROVER,), needs_reason=True),
    Transition(SEND_BACK, PENDING, RequestStatus.SENT_BACK, (Role.APPROVER,), needs_reason=True),
    Transition(RESUBMIT, frozenset({RequestStatus.SENT_BACK}), RequestStatus.PENDING, (Role.REQUESTER,)),
)
EDITABLE_STATUSES = frozenset({RequestStatus.PENDING, RequestStatus.SENT_BACK})


@dataclass(frozen=True)
class RequestKind:
    entity: str  # the event entity name: withdrawal | destruction | transfer
    model: type[BaseRequest]
    prefix: str
    transitions: dict[str, Transition]


REQUEST_KINDS: dict[str, RequestKind] = {
    "withdrawal": RequestKind("withdrawal", WithdrawalRequest, "WR", REQUEST_TRANSITIONS),
    "destruction": RequestKind("destruction", DestructionRequest, "DR", REQUEST_TRANSITIONS),
    "transfer": RequestKind("transfer", TransferRequest, "TR", REQUEST_TRANSITIONS),
}
REQUEST_ACTIONS = tuple(REQUEST_TRANSITIONS)


def request_kind(entity: str) -> RequestKind:
    try:
        return REQUEST_KINDS[entity]
    except KeyError:
        raise ValidationFailed(f"Unknown request kind {entity!r}.", code="unknown_entity") from None


def transition_of(entity: str, action: str) -> Transition:
    """The transition `action` names (either spelling: `send_back` or `send-back`) for `entity`."""
    named = action_named(action)
    transition = request_kind(entity).transitions.get(named.name) if named else None
    if transition is None:
        raise ValidationFailed(f"Unknown action {action!r}.", code="unknown_action")
    return transition

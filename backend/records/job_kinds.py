"""The job kinds of records, each declared once and registered when Django starts (apps.py).

- `<entity>.<action>` (`withdrawal.approve`, ...): one request transition, queue `default`;
- `bulk.<entity>.<action>`: the same transition for many requests, in chunks, queue `bulk`;
- `crate.relocate`: move one crate, queue `default`.

A transition kind and its bulk kind share one `apply` (the set-based `requests_transition`) and one
precheck (`transition_precheck`: role and reason), so the single and the bulk path refuse and
report alike, with the same error codes.
"""

from __future__ import annotations

import uuid
from typing import Any

from backend.accounts.models import User
from backend.common.errors import DomainError
from backend.jobs.registry import JobKind, Outcome

from .lifecycle import REQUEST_ACTIONS, REQUEST_KINDS
from .services import crate_relocate, crates_relocate_batch, requests_transition, transition_precheck


def _transition_apply(entity: str, action: str):
    def apply(actor: User, targets: list[str], params: dict[str, Any]) -> dict[str, Outcome]:
        # The version each target is pinned to (the one its decider saw or signed for); a job queued
        # before versions were pinned for every target carries one `expected_version`.
        expected, versions = params.get("expected_version"), params.get("versions") or {}
        outcomes = requests_transition(
            entity=entity, action=action, actor=actor, request_ids=[uuid.UUID(t) for t in targets],
            reason=params.get("reason", ""),
            expected_versions={uuid.UUID(t): versions.get(t, expected) for t in targets},
            signature_id=params.get("signature_id"), unit_id=params.get("unit_id"),
        )
        return {
            str(request_id): outcome if isinstance(outcome, DomainError)
            else {"id": str(outcome.id), "status": outcome.status, "version": outcome.version}
            for request_id, outcome in outcomes.items()
        }

    return apply


def _transition_precheck(entity: str, action: str):
    def precheck(actor: User, params: dict[str, Any]) -> None:
        transition_precheck(entity=entity, action=action, actor=actor, reason=params.get("reason", ""))

    return precheck


def _relocate_apply(actor: User, targets: list[str], params: dict[str, Any]) -> dict[str, Outcome]:
    (crate_id,) = targets
    try:
        # A refused relocation leaves nothing behind: crate_relocate's atomic block is a savepoint
        # inside the job's transaction, rolled back when it raises (no second savepoint around it).
        crate = crate_relocate(
            actor=actor, crate_id=uuid.UUID(crate_id), location=params.get("location", ""),
            expected_version=params.get("expected_version"), reason=params.get("reason", ""),
        )
    except DomainError as exc:
        return {crate_id: exc}
    return {crate_id: {"id": str(crate.id), "location": crate.location, "version": crate.version}}


TRANSITION_KINDS: dict[tuple[str, str], JobKind] = {}
BULK_KINDS: dict[tuple[str, str], JobKind] = {}
for _entity in REQUEST_KINDS:
    for _action in REQUEST_ACTIONS:
        _apply, _check = _transition_apply(_entity, _action), _transition_precheck(_entity, _action)
        TRANSITION_KINDS[_entity, _action] = JobKind(f"{_entity}.{_action}", _apply, _check)
        BULK_KINDS[_entity, _action] = JobKind(f"bulk.{_entity}.{_action}", _apply, _check, queue="bulk", bulk=True)
# A relocation's queued jobs are applied several at a time by the worker (issue 30; set-based:
# crates_relocate_batch); `_relocate_apply` stays the path of one job alone.
RELOCATE = JobKind("crate.relocate", _relocate_apply, apply_batch=crates_relocate_batch)

KINDS = (*TRANSITION_KINDS.values(), *BULK_KINDS.values(), RELOCATE)

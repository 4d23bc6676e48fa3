"""The one use case that queues a request transition, for one request and for many: every path
(the REST action, the bulk API, the batch CLI, the console) comes through here.

In order: the role and reason (the lifecycle table); for one request, what it shows now (scope,
four eyes, version, status); the version each target is pinned to; for a decision, the decider's
signature (re-authentication, counted and audited when wrong); then the job. The job re-checks
everything under lock and decides nothing on a request that changed after the version it was
pinned to (backend.records.services.transitions).

A decision is pinned on every path: to the version the decider sent, or, where they sent none, to
the version current before their signature was checked. An edit that lands after that point (a
queued job, a later bulk chunk) makes the request `stale_version` instead of decided.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from backend.accounts.models import User
from backend.accounts.signatures import signature_sign
from backend.common.errors import ValidationFailed
from backend.jobs.models import Job
from backend.jobs.services import bulk_check, job_submit

from .job_kinds import BULK_KINDS, TRANSITION_KINDS
from .lifecycle import REQUEST_KINDS, Transition, request_kind
from .models import BaseRequest
from .services import request_transition_check, transition_precheck


@dataclass
class Decision:
    """What an entry point read from its caller."""

    entity: str
    action: str  # either spelling: `send_back` or `send-back`
    actor: User
    reason: str = ""
    # The versions the decider saw, by request id (None or absent: not sent).
    versions: dict[str, int | None] = field(default_factory=dict)
    password: str | None = None
    meaning: str | None = None
    # Runs before a password is checked (the API's per-user signature rate); raises to refuse.
    before_signing: Callable[[], None] | None = None


def decide_one(decision: Decision, request: BaseRequest) -> Job:
    """Queue `decision` on one request (the REST action). Raises what the request shows now: 403
    role or four eyes, 404, 409 stale version or status, and the signature's 400/403/423."""
    transition = _transition(decision)
    sent = decision.versions.get(str(request.id))
    request_transition_check(
        entity=decision.entity, action=transition.action.name, actor=decision.actor, request=request,
        reason=decision.reason, expected_version=sent,
    )
    pinned = sent if sent is not None else (request.version if transition.action.decision else None)
    params = _params(decision, transition, {str(request.id): pinned}, unit_id=request.unit_id)
    return job_submit(
        actor=decision.actor, kind=TRANSITION_KINDS[decision.entity, transition.action.name],
        targets=[request.id], params=params, unit_id=request.unit_id,
        description=f"{transition.action.label} {request.unit.code} {request.request_number} "
        f"by {decision.actor.username}",
    )


def decide_many(decision: Decision, ids: list[str]) -> Job:
    """Queue `decision` on many requests of the decider's unit as one bulk job (the bulk API and the
    CLI). Refuses up front what holds whatever the ids (role, reason, no unit, no or too many ids);
    each request's own refusal (four eyes, version, status, not found) is its outcome."""
    transition = _transition(decision)
    kind = BULK_KINDS[decision.entity, transition.action.name]
    params = {"reason": decision.reason}
    unique = bulk_check(actor=decision.actor, kind=kind, ids=ids, params=params)
    versions = {i: decision.versions.get(i) for i in unique}
    if transition.action.decision:
        current = _current_versions(decision.entity, decision.actor, [i for i, v in versions.items() if v is None])
        versions.update({i: v for i, v in current.items() if versions[i] is None})
    params = _params(decision, transition, versions, unit_id=decision.actor.unit_id)
    params["unit_id"] = str(decision.actor.unit_id)  # another unit's request is not_found, even to a superuser
    unit = decision.actor.unit.code
    return job_submit(
        actor=decision.actor, kind=kind, targets=unique, params=params,
        description=f"bulk {transition.action.label} of {len(unique)} {unit} {decision.entity} requests "
        f"by {decision.actor.username}",
    )


def _transition(decision: Decision) -> Transition:
    if decision.entity not in REQUEST_KINDS:
        raise ValidationFailed(f"Unknown request kind {decision.entity!r}.", code="unknown_entity")
    decision.reason = (decision.reason or "").strip()
    return transition_precheck(
        entity=decision.entity, action=decision.action, actor=decision.actor, reason=decision.reason
    )


def _current_versions(entity: str, actor: User, ids: list[str]) -> dict[str, int]:
    """The versions of those of `ids` that are the decider's unit's requests, as they are now."""
    if not ids:
        return {}
    rows = request_kind(entity).model.objects.filter(
        id__in=[uuid.UUID(i) for i in ids], unit_id=actor.unit_id, deleted_at__isnull=True
    ).values_list("id", "version")
    return {str(pk): version for pk, version in rows}


def _params(decision: Decision, transition: Transition, versions: dict[str, int | None], *, unit_id) -> dict:
    """The job's parameters: the reason, the pinned versions and, for a decision, the signature
    (signed last: a request refused up front costs the decider no signature attempt)."""
    params: dict = {"reason": decision.reason}
    pinned = {target: version for target, version in versions.items() if version is not None}
    if pinned:
        params["versions"] = pinned
    if transition.action.decision:
        if decision.before_signing is not None:
            decision.before_signing()
        signature = signature_sign(
            user=decision.actor, password=decision.password, meaning=decision.meaning,
            expected=transition.action.meaning, action=transition.action.name, entity=decision.entity,
            unit_id=unit_id,
        )
        params["signature_id"] = str(signature.id)
    return params


"""Request transitions (approve, reject, send back, resubmit), single or many at once, set-based.

`transition_precheck` is what can be refused before anything is looked up (role, reason): the single
and the bulk path both start with it. `request_transition_check` adds what one request shows
(scope, version, status) and is what a view runs before it queues a job. `requests_transition` is
what the job runs, under lock, for one id or a chunk of thousands.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from itertools import groupby

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from backend.accounts.models import User
from backend.audit.services import signature_apply, signature_for
from backend.common.errors import (
    CrateUnavailable,
    DomainError,
    FourEyes,
    InvalidTransition,
    LegalHold,
    NotFound,
    StaleVersion,
    ValidationFailed,
)
from backend.events.services import Change

from ..actions import SEND_BACK
from ..lifecycle import RequestKind, Transition, request_kind, transition_of
from ..models import BaseRequest, Crate, CrateStatus, SendBackRecord, TransferRequest, WithdrawalRequest
from ..selectors import request_contributors
from .changes import crate_change, request_changes, sendback_change
from .checks import HELD_AGAINST, check_request_scope, check_version, require_role
from .journal import Entry, crate_entry, journal_write, request_entry, signed_binding, unit_codes
from .notices import decided_notify, incoming_notify


def transition_precheck(*, entity: str, action: str, actor: User, reason: str = "") -> Transition:
    """What refuses a transition whatever the request: an unknown action, the role, a missing reason."""
    transition = transition_of(entity, action)
    require_role(actor, *transition.roles)
    if transition.needs_reason and not (reason or "").strip():
        raise ValidationFailed(f"A reason is required to {transition.action.label}.", code="reason_required")
    return transition


def request_transition_check(
    *, entity: str, action: str, actor: User, request: BaseRequest, reason: str = "",
    expected_version: int | None = None, contributors: set[uuid.UUID] | None = None,
) -> Transition:
    """What can be seen before queueing a job: role, reason, four eyes, version and the current
    status. The job re-checks everything under lock; this only refuses early what is already
    certain. `contributors`: who filed or edited the request (read here when not given)."""
    transition = transition_of(entity, action)
    if request.deleted_at is not None:
        raise NotFound(f"No such {entity} request.")
    check_request_scope(request_kind(entity), actor, request)
    transition_precheck(entity=entity, action=action, actor=actor, reason=reason)
    if transition.action.decision:
        if contributors is None:
            contributors = request_contributors(entity, [request])[request.id]
        if actor.id in contributors:
            raise FourEyes(
                f"You filed or changed {request}: someone else must decide on it (four eyes).",
                details={"contributors": "you filed it" if request.created_by_id == actor.id else "you changed it"},
            )
    if request.status not in transition.sources:  # (before the version: "already approved" says more)
        raise InvalidTransition(
            f"{request} is {request.status}; it cannot be {transition.target.replace('_', ' ')} "
            f"(allowed from: {', '.join(sorted(transition.sources))}).",
            details={"status": request.status},
        )
    check_version(request, expected_version)
    return transition


@transaction.atomic
def request_transition(
    *,
    entity: str,
    action: str,
    actor: User,
    request_id: uuid.UUID,
    reason: str = "",
    expected_version: int | None = None,
    signature_id: uuid.UUID | None = None,
) -> BaseRequest:
    """approve / reject / send_back / resubmit one request, with all its effects, atomically."""
    outcome = requests_transition(
        entity=entity, action=action, actor=actor, request_ids=[request_id], reason=reason,
        expected_versions={request_id: expected_version}, signature_id=signature_id,
    )[request_id]
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


@transaction.atomic
def requests_transition(
    *,
    entity: str,
    action: str,
    actor: User,
    request_ids: Iterable[uuid.UUID],
    reason: str = "",
    expected_versions: dict[uuid.UUID, int | None] | None = None,
    signature_id: uuid.UUID | None = None,
    unit_id: uuid.UUID | str | None = None,
) -> dict[uuid.UUID, BaseRequest | DomainError]:
    """Apply one transition to many requests in one transaction, set-based.

    Every request is checked under lock exactly as a single transition would be; a refused one gets
    its DomainError in the result and nothing written. The accepted ones are changed with a handful
    of statements whatever their number (one UPDATE for the requests, one per crate effect, one
    INSERT of send-back records, one outbox write), which is what makes a 10,000-item bulk cheap.
    A decision carries the signature its decider gave when submitting it (`signature_id`, see
    backend.accounts.signatures) and, for every request, the version that signature was given for
    (`expected_versions`): without them nothing is decided. A request that changed since is
    refused (`stale_version`), and so is one its decider filed or edited (`four_eyes`); the
    signature is then recorded as not applied to it (an audit entry `signature_not_applied`).
    Each decided request is bound to the signature and its audit entry references it. `unit_id` (a
    bulk's: the decider's unit) makes every request of another unit `not_found`, whoever decides.
    Locks are taken requests first, then crates, each in id order, then the unit counters: the same
    order everywhere, so concurrent transitions queue instead of deadlocking.
    """
    kind = request_kind(entity)
    transition = transition_of(entity, action)
    action, decision = transition.action, transition.action.decision
    ids = sorted(set(request_ids), key=str)
    expected_versions = expected_versions or {}
    signature = (
        signature_for(signature_id, signer_id=actor.id, action=action.name, entity=kind.entity) if decision else None
    )
    locked = {r.id: r for r in kind.model.objects.select_for_update().filter(id__in=ids).order_by("id")}
    contributors = request_contributors(kind.entity, locked.values()) if decision else {}
    outcomes: dict[uuid.UUID, BaseRequest | DomainError] = {}
    accepted: list[BaseRequest] = []
    for request_id in ids:
        request = locked.get(request_id)
        try:
            if request is None or (unit_id is not None and str(request.unit_id) != str(unit_id)):
                raise NotFound(f"No such {kind.entity} request.")
            pinned = expected_versions.get(request_id)
            request_transition_check(
                entity=entity, action=action.name, actor=actor, request=request, reason=reason,
                expected_version=pinned, contributors=contributors.get(request_id),
            )
            if decision and pinned is None:  # a signature covers one version, never "whatever is there"
                raise StaleVersion(
                    f"{request}: the decision names no version, so it decides nothing.",
                    details={"current_version": request.version},
                )
            accepted.append(request)
        except DomainError as exc:
            outcomes[request_id] = exc
    if signature is not None:
        _signature_not_applied(kind, signature, actor, locked, outcomes)

    crate_journal: dict[uuid.UUID, tuple[list[Change], list[Entry]]] = {}
    # The crates of each request: what an approval moves, and part of what a signature binds.
    crate_ids = _crate_ids(kind, accepted) if accepted and decision else {}
    if action.name == "approve" and accepted:
        refused_before = set(outcomes)
        accepted, crate_journal = _approve_crates(kind, accepted, outcomes, actor, crate_ids)
        if signature is not None:  # refused for its crates (not in storage, under legal hold)
            refused = {i: o for i, o in outcomes.items() if i not in refused_before}
            _signature_not_applied(kind, signature, actor, {i: locked[i] for i in refused}, refused)
    if not accepted:
        return outcomes

    now = timezone.now()
    reason = (reason or "").strip()
    fields = {"status": transition.target, "version": F("version") + 1, "updated_at": now}
    if decision:
        fields.update(decided_by=actor, decided_at=now, decision_reason=reason)
    else:  # a resubmitted request is undecided again (the audit trail keeps the earlier decision)
        fields.update(decided_by=None, decided_at=None, decision_reason="")
    kind.model.objects.filter(id__in=[r.id for r in accepted]).update(**fields)

    changes: list[Change] = []
    entries: list[Entry] = []
    records: list[SendBackRecord] = []
    for request in accepted:
        old_status = request.status
        request.status, request.version, request.updated_at = transition.target, request.version + 1, now
        request.decided_by, request.decided_at, request.decision_reason = (
            (actor, now, reason) if decision else (None, None, "")
        )
        request_events = request_changes(kind, request, "updated", actor=actor)
        changes += request_events
        entry = request_entry(
            kind, request, action.past, {"status": [old_status, request.status]}, change=request_events[0], reason=reason,
        )
        entry.signature_id = signature.id if signature else None
        entries.append(entry)
        crate_events, crate_entries = crate_journal.get(request.id, ([], []))
        changes += crate_events
        entries += crate_entries
        if action is SEND_BACK:
            record = SendBackRecord(
                unit_id=request.unit_id, entity=kind.entity, request_id=request.id, reason=reason,
                created_by=actor, created_at=now,
            )
            records.append(record)
            changes.append(sendback_change(kind, record, request, actor=actor))
        outcomes[request.id] = request
    SendBackRecord.objects.bulk_create(records)
    if signature is not None:
        signature_apply(signature, [signed_binding(kind, r, crate_ids.get(r.id, [])) for r in accepted])
    journal_write(actor=actor, changes=changes, entries=entries)
    if decision:
        decided_notify(kind, accepted, action, actor, reason)
    elif kind.model is TransferRequest:
        incoming_notify(accepted, actor, action.past)
    return outcomes


def _signature_not_applied(kind: RequestKind, signature, actor: User, locked: dict, outcomes: dict) -> None:
    """The requests of the decider's unit a signed decision was refused on: each one's trail says
    the signature was not applied to it, and why (a changed request, four eyes, its status)."""
    entries = [
        Entry(
            unit_id=request.unit_id, entity=kind.entity, record_id=request.id, record_number=request.request_number,
            action="signature_not_applied", version=request.version, signature_id=signature.id,
            reason=f"{outcomes[request.id].code}: {outcomes[request.id].message}",
        )
        for request in locked.values()
        if request.id in outcomes and request.unit_id == signature.unit_id
    ]
    if entries:
        journal_write(actor=actor, entries=entries)


def _crate_ids(kind: RequestKind, requests: list[BaseRequest]) -> dict[uuid.UUID, list[uuid.UUID]]:
    """{request id: its crate ids}, in one query."""
    through = kind.model.crates.through
    link = f"{kind.model._meta.model_name}_id"
    found: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for request_id, crate_id in through.objects.filter(**{f"{link}__in": [r.id for r in requests]}).values_list(
        link, "crate_id"
    ):
        found[request_id].append(crate_id)
    return found


def _approve_crates(
    kind: RequestKind, accepted: list[BaseRequest], outcomes: dict, actor: User,
    by_request: dict[uuid.UUID, list[uuid.UUID]],
) -> tuple[list[BaseRequest], dict[uuid.UUID, tuple[list[Change], list[Entry]]]]:
    """Lock the crates of the requests being approved; refuse a request whose crates are not all in
    storage in its unit (CrateUnavailable, nothing applied); apply the effect to the others:
    withdrawn, destroyed, or moved to the transfer's destination unit. Returns the approved
    requests and, per request, its crates' events and audit entries."""
    all_ids = sorted({c for ids in by_request.values() for c in ids}, key=str)
    crates = {c.id: c for c in Crate.objects.select_for_update().filter(id__in=all_ids).order_by("id")}

    approved: list[BaseRequest] = []
    for request in accepted:
        mine = [crates[c] for c in by_request[request.id] if c in crates]
        unavailable = sorted(
            c.crate_number for c in mine
            if c.status != CrateStatus.IN_STORAGE or c.unit_id != request.unit_id or c.deleted_at is not None
        )
        held = sorted(c.crate_number for c in mine if c.on_hold) if kind.model in HELD_AGAINST else []
        if unavailable or len(mine) != len(by_request[request.id]):
            outcomes[request.id] = CrateUnavailable(
                f"{request} cannot be approved: not in storage: {', '.join(unavailable)}.",
                details={"crates": unavailable},
            )
        elif held:  # (a hold placed after the request was filed, even while its approval waited)
            outcomes[request.id] = LegalHold(
                f"{request} cannot be approved: under legal hold: {', '.join(held)}.", details={"crates": held},
            )
        else:
            approved.append(request)

    now = timezone.now()
    journal: dict[uuid.UUID, tuple[list[Change], list[Entry]]] = defaultdict(lambda: ([], []))
    moved = [crates[c] for r in approved for c in sorted(by_request[r.id], key=str)]
    if kind.model is TransferRequest:
        for destination, group in groupby(
            sorted(approved, key=lambda r: str(r.destination_unit_id)), key=lambda r: r.destination_unit_id
        ):
            group_ids = [c for r in group for c in by_request[r.id]]
            Crate.objects.filter(id__in=group_ids).update(unit_id=destination, version=F("version") + 1, updated_at=now)
        codes = unit_codes([r.unit_id for r in approved] + [r.destination_unit_id for r in approved])
        for request in approved:
            events, entries = journal[request.id]
            why = f"transfer request {request.request_number} approved"
            for crate_id in sorted(by_request[request.id], key=str):
                crate = crates[crate_id]
                source = crate.unit_id
                crate.unit_id, crate.version, crate.updated_at = request.destination_unit_id, crate.version + 1, now
                # The crate leaves the source unit's view and enters the destination's; each unit's
                # trail records its side of the move.
                left = crate_change(crate, "deleted", unit_id=source, actor=actor)
                arrived = crate_change(crate, "created", actor=actor)
                moved_unit = {"unit": [codes.get(source), codes.get(crate.unit_id)]}
                events += [left, arrived]
                entries += [
                    crate_entry(crate, "transferred", moved_unit, change=left, reason=why, unit_id=source),
                    crate_entry(crate, "received", moved_unit, change=arrived, reason=why),
                ]
    else:
        status = CrateStatus.WITHDRAWN if kind.model is WithdrawalRequest else CrateStatus.DESTROYED
        Crate.objects.filter(id__in=[c.id for c in moved]).update(status=status, version=F("version") + 1, updated_at=now)
        for request in approved:
            events, entries = journal[request.id]
            why = f"{kind.entity} request {request.request_number} approved"
            for crate_id in sorted(by_request[request.id], key=str):
                crate = crates[crate_id]
                old_status = crate.status
                crate.status, crate.version, crate.updated_at = status, crate.version + 1, now
                change = crate_change(crate, "updated", actor=actor)
                events.append(change)
                entries.append(crate_entry(crate, status, {"status": [old_status, status]}, change=change, reason=why))
    return approved, dict(journal)

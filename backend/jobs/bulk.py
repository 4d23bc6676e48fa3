"""Bulk status changes: one job, many ids, processed in chunks.

Each chunk is one transaction: one set-based service call
(records.services.requests_transition) checks every id under lock, applies the accepted ones and
writes their outbox events once; the same transaction records every id's outcome and the
progress on the job row. The job row is the ledger: a redelivered task skips the ids
whose outcome is already committed, so every id is applied exactly once however often the task
runs. Ids are processed in sorted order, so two bulks over overlapping ids lock rows in the same
order (and take unit counters last): they queue, never deadlock; the later one reports
`invalid_transition` for the ids the earlier one already moved.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backend.accounts.models import User
from backend.common.errors import (
    CrateUnavailable,
    DomainError,
    InvalidTransition,
    NotFound,
    RoleRequired,
    StaleVersion,
    ValidationFailed,
)
from backend.records import services as records

from .models import TERMINAL_STATUSES, Job, JobStatus
from .services import _push, job_start, job_submit

logger = logging.getLogger(__name__)

BULK_ENTITIES = tuple(records.REQUEST_KINDS)
BULK_ACTIONS = records.REQUEST_ACTIONS
OUTCOME_CODES: list[tuple[type[DomainError], str]] = [
    (NotFound, "not_found"),
    (InvalidTransition, "invalid_transition"),
    (StaleVersion, "conflict"),
    (CrateUnavailable, "crate_unavailable"),
    (RoleRequired, "permission_denied"),
    (ValidationFailed, "invalid"),
]


def bulk_normalise_action(action: str) -> str:
    """The contract's URLs say `send-back`; the services say `send_back`. Accept both."""
    return action.replace("-", "_")


def bulk_submit(*, actor: User, entity: str, action: str, ids: list[uuid.UUID], reason: str = "") -> Job:
    """Validate what can be known now and queue the bulk job. Duplicated ids are collapsed."""
    action = bulk_normalise_action(action)
    if entity not in BULK_ENTITIES:
        raise ValidationFailed(f"Unknown entity {entity!r}; one of {', '.join(BULK_ENTITIES)}.", code="unknown_entity")
    transition = records.REQUEST_KINDS[entity].transitions.get(action)
    if transition is None:
        raise ValidationFailed(f"Unknown action {action!r}; one of {', '.join(BULK_ACTIONS)}.", code="unknown_action")
    if actor.unit_id is None:
        raise ValidationFailed("Bulk actions run within a unit; use a unit account.", code="unit_required")
    records.require_role(actor, *transition.roles)
    if transition.needs_reason and not reason.strip():
        raise ValidationFailed(f"A reason is required to {action.replace('_', ' ')}.", code="reason_required")
    unique = sorted({str(i) for i in ids})
    if not unique:
        raise ValidationFailed("No ids given.", code="ids_required")
    if len(unique) > settings.BULK_MAX_IDS:
        raise ValidationFailed(f"At most {settings.BULK_MAX_IDS} ids per bulk action.", code="too_many_ids")
    return job_submit(
        actor=actor,
        kind=f"bulk.{entity}.{action}",
        targets=unique,
        params={"reason": reason.strip()},
        description=f"bulk {action.replace('_', ' ')} of {len(unique)} {entity} requests by {actor.username}",
    )


def _outcome(exc: DomainError) -> dict[str, str]:
    code = next((c for cls, c in OUTCOME_CODES if isinstance(exc, cls)), exc.code)
    return {"status": "failed", "code": code, "message": exc.message}


def bulk_run(*, job_id: str, on_progress: Callable[[dict[str, Any]], None] | None = None) -> Job | None:
    """Apply a bulk job chunk by chunk; resumable after a crash at any point."""
    job = job_start(job_id=job_id)
    if job is None or job.status in TERMINAL_STATUSES:
        return job
    _, entity, action = job.kind.split(".", 2)
    actor, reason = job.requested_by, job.params.get("reason", "")
    chunk_size = settings.BULK_CHUNK_SIZE
    last_push = 0.0

    while True:
        with transaction.atomic():
            locked = Job.objects.select_for_update().get(id=job.id)
            if locked.status in TERMINAL_STATUSES:
                return locked
            outcomes: dict[str, dict] = (locked.result or {}).get("outcomes", {})
            todo = [i for i in locked.targets if i not in outcomes][:chunk_size]
            if not todo:
                break
            if actor.is_active:
                applied = records.requests_transition(
                    entity=entity, action=action, actor=actor, request_ids=[uuid.UUID(t) for t in todo], reason=reason
                )
            else:
                gone = RoleRequired("The user who started this job is no longer active.")
                applied = {uuid.UUID(t): gone for t in todo}
            for request_id, outcome in applied.items():
                outcomes[str(request_id)] = _outcome(outcome) if isinstance(outcome, DomainError) else {"status": "succeeded"}
            failed = sum(1 for o in outcomes.values() if o["status"] == "failed")
            locked.result = {"outcomes": outcomes}
            locked.progress = {"total": len(locked.targets), "done": len(outcomes), "failed": failed}
            locked.save(update_fields=["result", "progress"])
            job = locked
        if on_progress is not None:
            on_progress(job.progress)
        if settings.BULK_TEST_PAUSE_SECONDS:  # test hook only: widens the window for kill drills
            time.sleep(settings.BULK_TEST_PAUSE_SECONDS)
        if time.monotonic() - last_push >= settings.BULK_PROGRESS_INTERVAL_SECONDS:
            last_push = time.monotonic()
            _push(job)

    with transaction.atomic():
        locked = Job.objects.select_for_update().get(id=job.id)
        if locked.status not in TERMINAL_STATUSES:
            locked.status = JobStatus.SUCCEEDED
            locked.finished_at = timezone.now()
            locked.save(update_fields=["status", "finished_at"])
        job = locked
    _push(job)
    return job

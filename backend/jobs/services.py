"""Jobs: submit (HTTP side) and run (worker side). A job's change and its completion commit together,
which is what makes a redelivered task a no-op instead of a second transition."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from backend.accounts.models import User
from backend.common.errors import DomainError, RoleRequired, ServiceUnavailable
from backend.records import services as records

from .models import TERMINAL_STATUSES, Job, JobStatus

logger = logging.getLogger(__name__)


def job_task_name(kind: str) -> str:
    """The Celery task that runs a job kind: `requests.approve`, `crates.relocate`, `bulk.apply`."""
    if kind.startswith("bulk."):
        return "bulk.apply"
    entity, action = kind.split(".", 1)
    return f"crates.{action}" if entity == "crate" else f"requests.{action}"


def job_as_message(job: Job) -> dict[str, Any]:
    """The `job` object of a `job_update` message (CONTRACT: WebSocket)."""
    body = {"id": str(job.id), "kind": job.kind, "status": job.status, "progress": job.progress}
    if job.error:
        body["error"] = job.error
    return body


def _push(job: Job) -> None:
    from realtime.broadcast import job_update_send

    job_update_send(job.requested_by_id, job_as_message(job))


def job_submit(
    *,
    actor: User,
    kind: str,
    targets: list[str],
    params: dict[str, Any] | None = None,
    description: str = "",
    unit_id: uuid.UUID | None = None,
) -> Job:
    """Create a queued job and enqueue its task once the job row has committed.

    The job belongs to `unit_id`, the unit of what it changes (default: the actor's unit; a
    superuser has none, so its jobs must name the unit).
    If the broker cannot take the task, the job row is removed again and ServiceUnavailable is
    raised: the client gets a 503 and nothing is left half-created.
    """
    job = Job(
        kind=kind,
        unit_id=unit_id or actor.unit_id,
        requested_by=actor,
        targets=[str(t) for t in targets],
        params=params or {},
        progress={"total": len(targets), "done": 0, "failed": 0},
    )
    with transaction.atomic():
        job.save()
        transaction.on_commit(lambda: _enqueue(job, description))
    return job


def _enqueue(job: Job, description: str) -> None:
    from kombu.exceptions import OperationalError

    from workers.celery import app

    try:
        app.send_task(
            job_task_name(job.kind),
            kwargs={"job_id": str(job.id)},
            task_id=str(job.id),
            # Flower shows this instead of a bare uuid: what is being done to what, by whom.
            kwargsrepr=repr({"job_id": str(job.id), "what": description or job.kind}),
            retry=True,
            retry_policy={
                "max_retries": 2,
                "interval_start": 0,
                "interval_step": 0.2,
                "interval_max": 0.5,
            },
        )
    except (OperationalError, OSError, TimeoutError) as exc:
        logger.error("job %s not enqueued, broker unavailable: %s", job.id, exc)
        Job.objects.filter(id=job.id, status=JobStatus.QUEUED).delete()
        raise ServiceUnavailable(
            "The job queue is unavailable; nothing was changed. Try again shortly."
        ) from exc


# --- worker side ------------------------------------------------------------------------------


def _run_request_transition(job: Job, actor: User) -> dict[str, Any]:
    entity, action = job.kind.split(".", 1)
    request = records.request_transition(
        entity=entity,
        action=action,
        actor=actor,
        request_id=uuid.UUID(job.targets[0]),
        reason=job.params.get("reason", ""),
        expected_version=job.params.get("expected_version"),
    )
    return {"id": str(request.id), "status": request.status, "version": request.version}


def _run_crate_relocate(job: Job, actor: User) -> dict[str, Any]:
    crate = records.crate_relocate(
        actor=actor,
        crate_id=uuid.UUID(job.targets[0]),
        location=job.params.get("location", ""),
        expected_version=job.params.get("expected_version"),
    )
    return {"id": str(crate.id), "location": crate.location, "version": crate.version}


def job_handler(kind: str) -> Callable[[Job, User], dict[str, Any]]:
    entity, _, action = kind.partition(".")
    if entity == "crate" and action == "relocate":
        return _run_crate_relocate
    if entity in records.REQUEST_KINDS and action in records.REQUEST_ACTIONS:
        return _run_request_transition
    raise ValueError(f"no handler for job kind {kind!r}")


def job_start(*, job_id: str) -> Job | None:
    """A delivery of a job's task begins: count the attempt and mark the job running (once).

    Returns None for a job that does not exist (its enqueue was compensated) and the job as it is
    for one already finished (a duplicate delivery: the caller does nothing)."""
    job = Job.objects.select_related("requested_by").filter(id=job_id).first()
    if job is None:
        logger.warning("job %s does not exist (enqueue compensated?); nothing to do", job_id)
        return None
    if job.status in TERMINAL_STATUSES:
        logger.info("job %s already %s; duplicate delivery ignored", job.id, job.status)
        return job
    # One statement; F(): two deliveries of one job may both get here and each must count.
    Job.objects.filter(id=job.id).update(
        status=Case(When(status=JobStatus.QUEUED, then=Value(JobStatus.RUNNING)), default=F("status")),
        started_at=Coalesce(F("started_at"), Value(timezone.now())),
        attempts=F("attempts") + 1,
    )
    job.refresh_from_db(fields=["status", "started_at", "attempts"])
    return job


def job_run(*, job_id: str) -> Job | None:
    """Carry out a job exactly once, however many times its task is delivered.

    The job row is locked and re-checked in the transaction that applies the change; the change,
    its outbox events and the job's terminal status commit together.
    """
    job = job_start(job_id=job_id)
    if job is None or job.status in TERMINAL_STATUSES:
        return job
    _push(job)

    handler = job_handler(job.kind)
    try:
        with transaction.atomic():
            locked = Job.objects.select_for_update().get(id=job.id)
            if locked.status in TERMINAL_STATUSES:
                return locked
            actor = job.requested_by
            if not actor.is_active:
                raise RoleRequired("The user who started this job is no longer active.", code="actor_inactive")
            result = handler(job, actor)
            _test_pause_before_commit(job)
            locked.status = JobStatus.SUCCEEDED
            locked.result = result
            locked.progress = {"total": len(job.targets), "done": len(job.targets), "failed": 0}
            locked.finished_at = timezone.now()
            locked.save(update_fields=["status", "result", "progress", "finished_at"])
            job = locked
    except DomainError as exc:
        # A refused change is an outcome, not a crash: nothing was applied (the transaction
        # rolled back); the job says why.
        job = job_fail(job_id=job.id, error=exc.as_dict())
        return job
    transaction.on_commit(lambda: _push(job))  # runs at once outside an atomic block
    return job


def _test_pause_before_commit(job: Job) -> None:
    """Test hook: hold the transaction open after the change is written, so an integration test can
    SIGKILL the worker "in the middle" deterministically. Only the test settings define
    JOB_TEST_PAUSE_SECONDS (from the environment of the worker under test); elsewhere it is off."""
    seconds = getattr(settings, "JOB_TEST_PAUSE_SECONDS", 0)
    if seconds:
        logger.warning("JOB_TEST_PAUSE_SECONDS: job %s written, pausing %ss before COMMIT", job.id, seconds)
        time.sleep(seconds)


def job_fail(*, job_id: uuid.UUID | str, error: dict[str, Any]) -> Job:
    with transaction.atomic():
        job = Job.objects.select_for_update().get(id=job_id)
        if job.status in TERMINAL_STATUSES:
            return job
        job.status = JobStatus.FAILED
        job.error = error
        # `done` counts processed targets, `failed` the processed ones that failed (as in bulk jobs):
        # a job that fails as a whole has processed everything, and failed all not yet succeeded.
        total = job.progress.get("total", 0)
        succeeded = job.progress.get("done", 0) - job.progress.get("failed", 0)
        job.progress = {"total": total, "done": total, "failed": total - succeeded}
        job.finished_at = timezone.now()
        job.save(update_fields=["status", "error", "progress", "finished_at"])
    _push(job)
    return job

"""Jobs: submit (HTTP side) and run (worker side), one lifecycle for every kind.

A job's change and its bookkeeping commit together, which is what makes a redelivered task a no-op
instead of a second transition: the job row is locked in the transaction that applies the change,
and a job found finished is left alone. A bulk job runs as a series of such transactions (chunks)
over its sorted targets; each chunk writes its targets' outcomes (JobOutcome rows, O(chunk)) and
advances `progress.done`, so a redelivery resumes right after the last committed chunk.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from backend.accounts.models import User
from backend.audit.checkpoints import checkpoints_write
from backend.audit.context import current_origin, origin
from backend.common.errors import DomainError, RoleRequired, ValidationFailed
from backend.common.faults import fault_point
from backend.common.trace import trace_stamp
from backend.events.broadcast import job_update_send
from backend.notifications.services import Draft, Kind, notify

from . import queue, registry
from .heartbeats import live_workers
from .models import TERMINAL_STATUSES, Job, JobOutcome, JobStatus
from .registry import JobKind, Outcome

logger = logging.getLogger(__name__)


def job_as_message(job: Job) -> dict[str, Any]:
    """The `job` object of a `job_update` message."""
    body = {"id": str(job.id), "kind": job.kind, "status": job.status, "progress": job.progress}
    if job.error:
        body["error"] = job.error
    return body


def job_notice(job: Job) -> Draft:
    """The notification of a job that ended (`job_finished` / `job_failed`), for who started it:
    one for the job, however many targets a bulk job had."""
    what = job.description or job.kind.replace(".", " ").replace("_", " ")
    suffix = f" by {getattr(job.requested_by, 'username', '')}" if job.requested_by_id else ""
    if suffix and what.endswith(suffix):
        what = what[: -len(suffix)]
    progress = job.progress or {}
    total, failed = progress.get("total", 0), progress.get("failed", 0)
    if job.status == JobStatus.FAILED:
        kind, title = Kind.JOB_FAILED, f"Failed: {what}"
        body = (job.error or {}).get("message", "") if isinstance(job.error, dict) else str(job.error or "")
    else:
        kind, title = Kind.JOB_FINISHED, f"Done: {what}"
        body = f"{total - failed} of {total} succeeded, {failed} refused." if total != 1 or failed else "Succeeded."
    return Draft(
        user_id=job.requested_by_id, kind=kind, title=title, body=body, link_entity="job", link_id=job.id,
        unit_id=job.unit_id,
    )


def job_push(job: Job) -> None:
    """Tell the connections of the job's user how it stands (best effort: the row is the truth)."""
    job_update_send(job.requested_by_id, job_as_message(job), job.unit_id)


# --- HTTP side --------------------------------------------------------------------------------


def job_submit(
    *,
    actor: User,
    kind: JobKind,
    targets: list[str],
    params: dict[str, Any] | None = None,
    description: str = "",
    unit_id: uuid.UUID | None = None,
) -> Job:
    """Create a queued job and enqueue its task once the job row has committed.

    The job belongs to `unit_id`, the unit of what it changes (default: the actor's unit; a
    superuser has none, so its jobs must name the unit). If the broker cannot take the task, the
    job row is removed again and the caller gets BrokerUnavailable (503).
    """
    client = current_origin()
    job = Job(
        kind=kind.name,
        unit_id=unit_id or actor.unit_id,
        requested_by=actor,
        targets=[str(t) for t in targets],
        params=params or {},
        progress={"total": len(targets), "done": 0, "failed": 0},
        description=description[:300],
        enqueued_at=timezone.now(),
        client_ip=client.client_ip,
        user_agent=client.user_agent,
    )
    with transaction.atomic():
        job.save()
        transaction.on_commit(lambda: queue.enqueue(job))
    return job


def bulk_submit(*, actor: User, kind: JobKind, ids: list[Any], params: dict[str, Any], description: str) -> Job:
    """Validate what can be known now and queue a bulk job. Duplicated ids are collapsed; ids that
    do not exist or belong to another unit are not an error here (that would reveal which ids exist
    elsewhere): they get a `not_found` outcome."""
    unique = bulk_check(actor=actor, kind=kind, ids=ids, params=params)
    return job_submit(actor=actor, kind=kind, targets=unique, params=params, description=description)


def bulk_check(*, actor: User, kind: JobKind, ids: list[Any], params: dict[str, Any]) -> list[str]:
    """What refuses a bulk action before anything is queued (or signed): no unit, the kind's own
    precheck (role, reason), no ids, too many. Returns the ids, unique and sorted."""
    if actor.unit_id is None:
        raise ValidationFailed("Bulk actions run within a unit; use a unit account.", code="unit_required")
    kind.precheck(actor, params)
    unique = sorted({str(i) for i in ids})
    if not unique:
        raise ValidationFailed("No ids given.", code="ids_required")
    if len(unique) > settings.BULK_MAX_IDS:
        raise ValidationFailed(f"At most {settings.BULK_MAX_IDS} ids per bulk action.", code="too_many_ids")
    return unique


# --- worker side ------------------------------------------------------------------------------


def job_start(*, job_id: str, worker: str = "") -> Job | None:
    """A delivery of a job's task begins: count the attempt, mark the job running (once) and note
    the worker that holds it (the sweeper of stranded jobs watches that worker's heartbeat).

    Returns None for a job that does not exist (its enqueue was compensated) and the job as it is
    for one already finished (a duplicate delivery: the caller does nothing)."""
    job = Job.objects.select_related("requested_by").filter(id=job_id).first()
    if delivery_ignored(job, job_id):
        return job
    # One statement; F(): two deliveries of one job may both get here and each must count (so the
    # UPDATE does not exclude finished jobs: a delivery that got past the check above while the
    # other's transaction was still open is counted even though that one has committed since).
    now = timezone.now()
    Job.objects.filter(id=job.id).update(
        status=Case(When(status=JobStatus.QUEUED, then=Value(JobStatus.RUNNING)), default=F("status")),
        started_at=Coalesce(F("started_at"), Value(now)),
        attempts=F("attempts") + 1,
        worker=worker,
        touched_at=now,
    )
    job.refresh_from_db(fields=["status", "started_at", "attempts", "worker", "touched_at"])
    return job


def delivery_ignored(job: Job | None, job_id: str) -> bool:
    """Whether a delivered job is not to run: it does not exist (its enqueue was compensated) or it
    already finished (a duplicate delivery). Logged; the caller returns the job as it is."""
    if job is None:
        logger.warning("job %s does not exist (enqueue compensated?); nothing to do", job_id)
        return True
    if job.status in TERMINAL_STATUSES:
        logger.info("job %s already %s; duplicate delivery ignored", job.id, job.status)
        return True
    return False


def job_execute(
    *, job_id: str, on_progress: Callable[[dict[str, int]], None] | None = None, worker: str = ""
) -> Job | None:
    """Carry out a job exactly once, however many times its task is delivered.

    Each round locks the job row, takes the next targets without an outcome (all of a single job's,
    a chunk of a bulk job's), applies its kind to them and records their outcomes and the progress
    in the same transaction; the round that records the last outcome also ends the job.
    """
    job = job_start(job_id=job_id, worker=worker)
    trace_stamp("started")  # the request trace (issue 33): the job is marked running
    if job is None or job.status in TERMINAL_STATUSES:
        return job
    kind = registry.get(job.kind)
    job_push(job)
    # Targets and params never change: read once, not with every chunk's lock.
    actor, targets, params = job.requested_by, job.targets, job.params
    chunk_size = settings.BULK_CHUNK_SIZE if kind.bulk else len(targets)
    last_push = time.monotonic()
    # The job's changes are audited as coming from the request that queued it, and from this job.
    client = {"client_ip": job.client_ip, "user_agent": job.user_agent, "job_id": job.id}
    while True:
        with origin(**client):
            job = _round_with_retries(kind, job.id, actor, targets, params, chunk_size)
        if job.status in TERMINAL_STATUSES:
            break
        if on_progress is not None:
            on_progress(job.progress)
        fault_point("job.after_chunk", job=job.id, done=job.progress["done"])
        if time.monotonic() - last_push >= settings.BULK_PROGRESS_INTERVAL_SECONDS:
            last_push = time.monotonic()
            job_push(job)
    if kind.bulk:
        _checkpoint_after(job)
    if kind.bulk and on_progress is not None:
        on_progress(job.progress)
    transaction.on_commit(lambda: job_push(job))  # runs at once outside an atomic block
    return job


def _checkpoint_after(job: Job) -> None:
    """A bulk job's changes are signed as soon as it ends (backend.audit.checkpoints), not only at
    the next scheduled checkpoint. Best effort: the job is done; the schedule catches up."""
    try:
        checkpoints_write()
    except Exception:  # noqa: BLE001 - a sink or key problem must not fail a finished job
        logger.exception("job %s: audit checkpoint after the bulk job not written", job.id)


# A round that fails on the database connection (a restart, a failover) is retried here, in the
# same delivery, after these pauses: the task's broker message stays unacknowledged meanwhile, so
# nothing depends on the broker being up to retry. Past them the error goes to Celery's retry.
ROUND_RETRY_DELAYS = (0.5, 1, 2, 4, 8, 15)
TRANSIENT_DATABASE_ERRORS = (OperationalError, InterfaceError)


def _round_with_retries(
    kind: JobKind, job_id, actor: User, targets: list[str], params: dict[str, Any], chunk_size: int
) -> Job:
    for delay in (*ROUND_RETRY_DELAYS, None):
        try:
            return _round(kind, job_id, actor, targets, params, chunk_size)
        except TRANSIENT_DATABASE_ERRORS:
            if delay is None:
                raise
            logger.warning("job %s: database unavailable; retrying the round in %ss", job_id, delay, exc_info=True)
            connection.close()  # the next query opens a new connection
            time.sleep(delay)
            close_old_connections()
    raise AssertionError("unreachable")


def _round(kind: JobKind, job_id, actor: User, targets: list[str], params: dict[str, Any], chunk_size: int) -> Job:
    """One transaction: lock the job, apply its kind to its next targets, record the outcomes."""
    with transaction.atomic():
        locked = Job.objects.select_for_update().defer("targets", "params").get(id=job_id)
        if locked.status in TERMINAL_STATUSES:
            return locked
        done = locked.progress["done"]
        todo = targets[done : done + chunk_size]
        applied = _apply(kind, actor, todo, params)
        _record(kind, locked, todo, applied)
        locked.touched_at = timezone.now()
        if locked.status in TERMINAL_STATUSES:  # the round that ends the job tells its requester
            locked.requested_by = actor
            notify([job_notice(locked)])
        fault_point("job.before_commit", job=job_id)
        locked.save(update_fields=["status", "result", "error", "progress", "finished_at", "touched_at"])
        return locked


def _apply(kind: JobKind, actor: User, targets: list[str], params: dict[str, Any]) -> dict[str, Outcome]:
    if not actor.is_active:
        refused = RoleRequired("The user who started this job is no longer active.", code="actor_inactive")
        return {target: refused for target in targets}
    try:
        return kind.apply(actor, targets, params)
    except DomainError as refused:  # the round as a whole is refused (a decision without its signature)
        return {target: refused for target in targets}


def _record(kind: JobKind, job: Job, todo: list[str], applied: dict[str, Outcome]) -> None:
    """Write the outcomes of one round on the (locked) job; end the job after its last target.

    A single job ends with its target's outcome: `succeeded` with the result, or `failed` with the
    DomainError's code and message. A bulk job writes a JobOutcome per target, with the same codes,
    and ends `succeeded` once every target has one."""
    now = timezone.now()
    if set(applied) != set(todo):
        raise RuntimeError(f"job kind {kind.name} answered for {len(applied)} of {len(todo)} targets")
    if kind.bulk:
        rows = [
            JobOutcome(job_id=job.id, target=target, succeeded=True)
            if not isinstance(applied[target], DomainError)
            else JobOutcome(
                job_id=job.id, target=target, succeeded=False, code=applied[target].code, message=applied[target].message
            )
            for target in todo
        ]
        JobOutcome.objects.bulk_create(rows)
        progress = job.progress
        job.progress = {
            "total": progress["total"],
            "done": progress["done"] + len(rows),
            "failed": progress["failed"] + sum(1 for row in rows if not row.succeeded),
        }
        if job.progress["done"] >= job.progress["total"]:
            job.status, job.finished_at = JobStatus.SUCCEEDED, now
        return
    (outcome,) = applied.values()
    if isinstance(outcome, DomainError):
        # A refused change is an outcome, not a crash: nothing of it was written.
        job.status, job.error = JobStatus.FAILED, outcome.as_dict()
        job.progress = {"total": 1, "done": 1, "failed": 1}
    else:
        job.status, job.result = JobStatus.SUCCEEDED, outcome
        job.progress = {"total": 1, "done": 1, "failed": 0}
    job.finished_at = now


def jobs_rescue() -> list[str]:
    """Re-enqueue the jobs whose task no worker will run (the sweeper calls this every
    JOB_RESCUE_SECONDS); returns their ids.

    A job is looked at once it has waited JOB_RESCUE_AFTER_SECONDS since its task was last sent
    (queued) or since it last made progress (running), or at once when the worker holding it stopped
    sending heartbeats. It is re-enqueued when its task is in none of the broker's queues and, if
    delivered, held by no live worker: the message was lost (a crash between COMMIT and send, Redis
    losing its data, a worker that cancelled the task when its broker connection dropped) or its
    worker died (without waiting for the visibility timeout). Re-sending is safe: a job's change and
    its completion commit together, so a duplicate delivery is a no-op.
    """
    now = timezone.now()
    stale = now - timedelta(seconds=settings.JOB_RESCUE_AFTER_SECONDS)
    unfinished = list(
        Job.objects.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING])
        .only("id", "status", "worker", "enqueued_at", "touched_at", "created_at")
        .order_by("created_at")[: settings.JOB_RESCUE_BATCH]
    )
    if not unfinished:
        return []
    running_workers = {job.worker for job in unfinished if job.status == JobStatus.RUNNING and job.worker}
    alive = live_workers(running_workers)

    def looks_stranded(job: Job) -> bool:
        if job.status == JobStatus.RUNNING and job.worker and job.worker not in alive:
            return True
        last = (job.touched_at if job.status == JobStatus.RUNNING else job.enqueued_at) or job.created_at
        return last < stale

    suspects = [job for job in unfinished if looks_stranded(job)]
    if not suspects:
        return []
    waiting, delivered = queue.broker_task_ids()
    rescued = []
    for job in suspects:
        task = str(job.id)
        if task in waiting:
            continue  # in its queue: it will run
        if task in delivered and job.worker in alive:
            continue  # its live worker holds it
        with transaction.atomic():
            locked = (
                Job.objects.select_for_update(skip_locked=True)
                .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=stale), id=job.id)
                .exclude(status__in=TERMINAL_STATUSES)
                .first()
            )
            if locked is None:
                continue  # finished meanwhile, being rescued by another sweeper, or sent again lately
            try:
                queue.send(locked)
            except queue.BROKER_ERRORS:
                logger.warning("job %s looks stranded but the broker is unavailable; next sweep", job.id)
                return rescued
            locked.enqueued_at = timezone.now()
            locked.save(update_fields=["enqueued_at"])
        logger.warning("job %s (%s, worker %r) was stranded; its task was sent again", job.id, job.status, job.worker)
        rescued.append(task)
    return rescued


def jobs_prune() -> int:
    """Delete jobs that finished more than JOB_RETENTION_DAYS ago, with their outcomes. A queued or
    running job is never touched, however old."""
    cutoff = timezone.now() - timedelta(days=settings.JOB_RETENTION_DAYS)
    old = Job.objects.filter(status__in=TERMINAL_STATUSES, finished_at__lt=cutoff)
    deleted = 0
    # In batches: one job may hold 20,000 outcome rows.
    while ids := list(old.values_list("id", flat=True)[:500]):
        deleted += Job.objects.filter(id__in=ids).delete()[1].get("jobs.Job", 0)
    return deleted


def job_fail(*, job_id: uuid.UUID | str, error: dict[str, Any]) -> Job:
    """End a job `failed` from outside its run (its task failed for good: retries exhausted, time
    limit, a bug). A finished job is left as it is."""
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
        notify([job_notice(job)])
    job_push(job)
    return job

"""The set-based job path (docs/pipeline.md, "Batches"): a worker applies the delivered single job
together with other queued jobs of its kind and unit, in one transaction, each keeping its own
outcome, audit entry, notification and `job_update`. Kinds declare it with `apply_batch`
(backend/jobs/registry.py); the one-job lifecycle it falls back to is backend/jobs/services.py."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from backend.common.errors import DomainError, RoleRequired
from backend.common.faults import fault_point
from backend.common.trace import trace_stamp
from backend.notifications.services import notify

from . import registry
from .models import TERMINAL_STATUSES, Job, JobStatus
from .registry import JobKind, Outcome
from .services import delivery_ignored, job_execute, job_notice, job_push

logger = logging.getLogger(__name__)

BATCH_FIELDS = ["status", "result", "error", "progress", "attempts", "started_at", "finished_at", "worker", "touched_at"]


def job_execute_batch(*, kind: JobKind, job_id: str, worker: str = "") -> Job | None:
    """Carry out the delivered single job together with other queued jobs of its kind and unit, up to
    JOB_BATCH_MAX, in one transaction (docs/pipeline.md, "Batches"): one lock of the jobs, the kind's
    `apply_batch` (for a relocation: one crate lock, one UPDATE, one journal write: one counter lock,
    one chain extension, one outbox insert), one notification insert and one job-completion UPDATE.
    Each job keeps its own outcome, audit entry (its actor, client and job), notification and
    `job_update`.

    Exactly once, as `job_execute`: the jobs are locked in the transaction that applies them and a
    finished one is left alone, so the claimed jobs' own task messages, delivered later, are no-ops,
    and a worker killed before COMMIT leaves every job of the batch as it was (the delivered one
    running, held by the dead worker, the others queued, their messages still in the broker; the
    delivered one's is redelivered or re-enqueued by the sweeper). If the batch raises (a poisoned job, a
    bug, the database away), it is rolled back and its jobs run one by one through `job_execute`:
    the neighbours first, each in its own transaction (one that fails again is left to its own task
    message and retry policy), then the delivered job, whose error goes to its task as before.
    Kinds without `apply_batch` (and bulk kinds) take `job_execute`."""
    if kind.apply_batch is None or kind.bulk or settings.JOB_BATCH_MAX <= 1:
        return job_execute(job_id=job_id, worker=worker)
    # The delivered job is marked running by this worker first, as on the one-job path: its client
    # sees it start, and the sweeper of stranded jobs knows whose heartbeat to watch while the batch
    # runs. Most deliveries of a batched kind find their job already applied by a batch: the same
    # read answers them (the locking read below decides for the others).
    started = _start_delivered(job_id, worker)
    if started is None or started.status in TERMINAL_STATUSES:
        return started
    job_push(started)
    claimed: list[uuid.UUID] = []
    try:
        jobs = _batch(kind, job_id, worker, claimed)
    except Exception:  # noqa: BLE001 - the batch is rolled back; each job gets its own run below
        logger.warning("job %s: the batch of %d jobs failed; running them one by one", job_id, len(claimed) + 1,
                       exc_info=True)
        close_old_connections()
        for other in claimed:
            try:
                job_execute(job_id=str(other), worker=worker)
            except Exception:  # noqa: BLE001 - its own task message runs it again, with its retries
                logger.warning("job %s failed on its own as well; left to its task", other, exc_info=True)
        return job_execute(job_id=job_id, worker=worker)
    if not isinstance(jobs, list):
        return jobs  # no such job, or a duplicate delivery of a finished one
    for job in jobs:
        job_push(job)
    return jobs[0]


def _start_delivered(job_id: str, worker: str) -> Job | None:
    """The delivered job marked running by this worker, its attempt counted, unless it is finished
    or gone. Unlike `job_start` (whose every delivery counts), a delivery that raced a batch which
    applied its job counts nothing: the UPDATE waits for that batch's lock, then finds the job
    finished. A redelivery after a worker died (the job still `running`) counts its attempt."""
    now = timezone.now()
    Job.objects.filter(id=job_id, status__in=(JobStatus.QUEUED, JobStatus.RUNNING)).update(
        status=JobStatus.RUNNING, started_at=Coalesce(F("started_at"), Value(now)),
        attempts=F("attempts") + 1, worker=worker, touched_at=now,
    )
    job = Job.objects.select_related("requested_by").filter(id=job_id).first()
    if job is not None and job.status in TERMINAL_STATUSES:
        logger.info("job %s already %s (in a batch); delivery ignored", job.id, job.status)
    elif job is None:
        logger.warning("job %s does not exist (enqueue compensated?); nothing to do", job_id)
    return job


def _batch(kind: JobKind, job_id: str, worker: str, claimed: list) -> list[Job] | Job | None:
    with transaction.atomic():
        locking = Job.objects.select_for_update(of=("self",)).select_related("requested_by")
        job = locking.filter(id=job_id).first()  # waits for a batch that holds it
        if delivery_ignored(job, job_id):
            return job
        others = list(
            Job.objects.select_for_update(of=("self",), skip_locked=True).select_related("requested_by")
            .filter(kind=kind.name, unit_id=job.unit_id, status=JobStatus.QUEUED).exclude(id=job.id)
            .order_by("created_at")[: settings.JOB_BATCH_MAX - 1]
        )
        claimed[:] = [other.id for other in others]
        trace_stamp("started")  # the request trace: the delivered job (its message carries the trace) starts
        jobs = [job, *others]
        outcomes: dict[Any, Outcome] = {}
        works = []
        for each in jobs:
            if not each.requested_by.is_active:
                outcomes[each.id] = RoleRequired("The user who started this job is no longer active.", code="actor_inactive")
            else:
                works.append(registry.Work(
                    job_id=each.id, actor=each.requested_by, target=each.targets[0], params=each.params,
                    client_ip=each.client_ip, user_agent=each.user_agent,
                ))
        if works:
            applied = kind.apply_batch(works)
            if set(applied) != {work.job_id for work in works}:
                raise RuntimeError(f"job kind {kind.name} answered for {len(applied)} of {len(works)} jobs")
            outcomes.update(applied)
        now = timezone.now()
        for each in jobs:
            outcome = outcomes[each.id]
            if isinstance(outcome, DomainError):
                each.status, each.error = JobStatus.FAILED, outcome.as_dict()
                each.progress = {"total": 1, "done": 1, "failed": 1}
            elif isinstance(outcome, Exception):
                raise outcome
            else:
                each.status, each.result = JobStatus.SUCCEEDED, outcome
                each.progress = {"total": 1, "done": 1, "failed": 0}
            if each is not job:  # (the delivered job's attempt was counted as it started)
                each.attempts += 1
            each.started_at = each.started_at or now
            each.finished_at = each.touched_at = now
            each.worker = worker
        notify([job_notice(each) for each in jobs])
        fault_point("job.batch_before_commit", job=job.id, jobs=len(jobs))
        Job.objects.bulk_update(jobs, BATCH_FIELDS)
    return jobs

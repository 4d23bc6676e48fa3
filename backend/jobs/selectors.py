"""Reads of jobs for the realtime tier: what a reconnecting client is owed."""

from __future__ import annotations

from typing import Any

from .models import Job, JobStatus
from .services import job_as_message

# A reconnecting client hears about at most this many of its user's unfinished jobs (newest first).
OWED_JOBS_LIMIT = 50


def user_unfinished_jobs(user_id, unit_id, limit: int = OWED_JOBS_LIMIT) -> list[dict[str, Any]]:
    """The `job` objects of the user's queued and running jobs of `unit_id` (the unit the user is in:
    a moved user's jobs of the old unit stay behind, as the jobs API shows), oldest first."""
    rows = list(
        Job.objects.filter(requested_by_id=user_id, unit_id=unit_id, status__in=[JobStatus.QUEUED, JobStatus.RUNNING])
        .order_by("-created_at")
        .only("id", "kind", "status", "progress", "error")[:limit]
    )
    return [job_as_message(job) for job in reversed(rows)]

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from backend.accounts.models import Unit


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED})


def empty_progress() -> dict:
    return {"total": 0, "done": 0, "failed": 0}


class Job(models.Model):
    """A state change requested over HTTP and carried out by a Celery task.

    `id` is the Celery task id, so Flower and the API name the same thing.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=48)  # e.g. withdrawal.approve, crate.relocate, bulk
    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="+")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    targets = models.JSONField(default=list)  # ids the job acts on
    params = models.JSONField(default=dict)  # reason, location, expected_version, ...
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    progress = models.JSONField(default=empty_progress)
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)  # {"code": ..., "message": ...}
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # What the job does to what, by whom, in words: the `what` Flower shows with the task.
    description = models.CharField(max_length=300, blank=True)
    # For the sweeper that finds stranded jobs (services.jobs_rescue): when the task was last sent,
    # which worker last started it, and when the job last made progress.
    enqueued_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    touched_at = models.DateTimeField(null=True, blank=True)
    # Where the request that queued the job came from: the job's audit entries record it.
    client_ip = models.CharField(max_length=45, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["unit", "status"]),
            models.Index(fields=["kind", "status"]),
            models.Index(fields=["requested_by", "status"], name="job_user_status_idx"),
            models.Index(fields=["finished_at"], name="job_finished_idx"),
            models.Index(
                fields=["status", "enqueued_at"], name="job_unfinished_idx",
                condition=models.Q(status__in=["queued", "running"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.id}"


class JobOutcome(models.Model):
    """One target's outcome in a bulk job, written in the transaction of the chunk that applied it.

    These rows are the bulk job's ledger: a chunk writes only its own outcomes (O(chunk), whatever
    the job's size), and a redelivered task resumes after the last committed chunk."""

    id = models.BigAutoField(primary_key=True)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="outcomes")
    target = models.CharField(max_length=64)
    succeeded = models.BooleanField()
    code = models.CharField(max_length=48, blank=True)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["job", "target"]
        constraints = [models.UniqueConstraint(fields=["job", "target"], name="job_outcome_unique")]
        indexes = [models.Index(fields=["job", "succeeded", "target"], name="job_outcome_status_idx")]

    def __str__(self) -> str:
        return f"{self.job_id} {self.target}: {'succeeded' if self.succeeded else self.code}"

    def as_outcome(self) -> dict[str, str]:
        """The outcome as the API shows it: {"status": "succeeded"} or {"status": "failed", code, message}."""
        if self.succeeded:
            return {"status": "succeeded"}
        return {"status": "failed", "code": self.code, "message": self.message}

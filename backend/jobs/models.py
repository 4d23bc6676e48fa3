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

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["unit", "status"]), models.Index(fields=["kind", "status"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.id}"

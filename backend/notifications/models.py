import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone


class Kind(models.TextChoices):
    REQUEST_DECIDED = "request_decided", "Your request was decided"
    TRANSFER_INCOMING = "transfer_incoming", "A transfer to your unit"
    JOB_FINISHED = "job_finished", "Your job finished"
    JOB_FAILED = "job_failed", "Your job failed"
    DESTRUCTION_DUE = "destruction_due", "A crate is due for destruction"
    SIGNATURE_LOCKED = "signature_locked", "A user's signing was locked"
    AUDIT_CHAIN_BROKEN = "audit_chain_broken", "The audit trail failed verification"
    AUDIT_REVIEW_DUE = "audit_review_due", "The unit's audit-trail review is overdue"


class Notification(models.Model):
    """One message for one user, written in the transaction of the change that causes it and sent
    to the user's sockets after COMMIT (backend.notifications.services)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # (By name, not import: notifications sits below accounts, which writes through it.)
    user = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="+")
    # The unit it is about: a user lists and counts only their current unit's (None: a superuser's).
    unit = models.ForeignKey("accounts.Unit", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    # What it is about: `link: {entity, id}` (a request, crate, job or user).
    link_entity = models.CharField(max_length=16)
    link_id = models.UUIDField()
    # destruction_due only: the NOTIFY_DESTRUCTION_DUE_DAYS threshold it was sent for.
    threshold = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="notification_user_idx"),
            models.Index(fields=["user"], condition=Q(read_at__isnull=True), name="notification_unread_idx"),
        ]
        constraints = [
            # Once per crate, threshold and user, whoever runs the alert and however often (two beat
            # instances at once included): inserts ignore conflicts on this constraint.
            models.UniqueConstraint(
                fields=["link_id", "threshold", "user"], condition=Q(kind="destruction_due"),
                name="notification_destruction_due_once",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} for {self.user_id}: {self.title}"

    @property
    def read(self) -> bool:
        return self.read_at is not None

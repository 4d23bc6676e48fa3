import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from backend.accounts.models import Unit


class CrateStatus(models.TextChoices):
    IN_STORAGE = "in_storage", "In storage"
    WITHDRAWN = "withdrawn", "Withdrawn"
    IN_TRANSIT = "in_transit", "In transit"
    DESTROYED = "destroyed", "Destroyed"


class RequestStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    SENT_BACK = "sent_back", "Sent back"


class NumberCounter(models.Model):
    """Last number handed out per (scope, prefix, year). Locked FOR UPDATE; numbers are never reused.

    Request numbers are scoped to their unit (`WR-2026-0001` exists once per unit); crate numbers
    are scoped to the whole archive, so a crate keeps a unique number when it is transferred.
    """

    scope = models.CharField(max_length=40)  # a unit id, or "archive"
    prefix = models.CharField(max_length=4)
    year = models.PositiveSmallIntegerField()
    last = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scope", "prefix", "year"], name="number_counter_unique")
        ]

    def __str__(self) -> str:
        return f"{self.scope}/{self.prefix}-{self.year}: {self.last}"


class Crate(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    crate_number = models.CharField(max_length=32)
    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="crates")
    status = models.CharField(max_length=16, choices=CrateStatus.choices, default=CrateStatus.IN_STORAGE)
    location = models.CharField(max_length=120, blank=True)
    destruction_due = models.DateField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)
    # Soft delete: a deleted crate is kept (hidden from lists), with who, when and why.
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    delete_reason = models.TextField(blank=True)
    # Under at least one legal hold that is not released (LegalHold): never destroyed, transferred
    # or deleted while so. Kept with the crate, under its row lock, by the hold services.
    on_hold = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at", "id"]
        constraints = [
            # Numbers are per unit of issue; a crate keeps its number when transferred.
            models.UniqueConstraint(fields=["crate_number"], name="crate_number_unique"),
        ]
        indexes = [models.Index(fields=["unit", "status"])]

    def __str__(self) -> str:
        return self.crate_number


class BaseRequest(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    request_number = models.CharField(max_length=32)
    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=16, choices=RequestStatus.choices, default=RequestStatus.PENDING)
    reason = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)
    version = models.PositiveIntegerField(default=1)
    # The last decision (approve, reject, send back): who, when and why; cleared by a resubmit (the
    # audit trail keeps every decision, send-backs also keep a SendBackRecord each).
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True)
    # Soft delete: a deleted request is kept (hidden from lists), with who, when and why.
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    delete_reason = models.TextField(blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at", "id"]

    def __str__(self) -> str:
        return self.request_number


def _unique_number(model_name: str) -> models.UniqueConstraint:
    return models.UniqueConstraint(fields=["unit", "request_number"], name=f"{model_name.lower()}_number_unique")


class WithdrawalRequest(BaseRequest):
    crates = models.ManyToManyField(Crate, related_name="withdrawal_requests")

    class Meta(BaseRequest.Meta):
        indexes = [models.Index(fields=["unit", "status"])]
        constraints = [_unique_number("WithdrawalRequest")]


class DestructionRequest(BaseRequest):
    crates = models.ManyToManyField(Crate, related_name="destruction_requests")

    class Meta(BaseRequest.Meta):
        indexes = [models.Index(fields=["unit", "status"])]
        constraints = [_unique_number("DestructionRequest")]


class TransferRequest(BaseRequest):
    crates = models.ManyToManyField(Crate, related_name="transfer_requests")
    destination_unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="+")

    class Meta(BaseRequest.Meta):
        indexes = [models.Index(fields=["unit", "status"]), models.Index(fields=["destination_unit"])]
        constraints = [_unique_number("TransferRequest")]


class SendBackRecord(models.Model):
    """Why a request went back to its requester. Written by the send-back service, never edited."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="+")
    entity = models.CharField(max_length=16)  # withdrawal | destruction | transfer
    request_id = models.UUIDField()
    reason = models.TextField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at", "id"]
        indexes = [models.Index(fields=["entity", "request_id"])]

    def __str__(self) -> str:
        return f"{self.entity} {self.request_id} sent back"


class LegalHold(models.Model):
    """Litigation (or an inspection) freezes destruction: crates under a hold that is not released
    are not destroyed, transferred or deleted. Placed and released by QA or a unit admin, each with a
    reason and an electronic signature (meanings `hold` and `released`); kept forever."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    hold_number = models.CharField(max_length=32)  # LH-2026-0001, per unit
    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="+")
    crates = models.ManyToManyField(Crate, related_name="legal_holds")
    reason = models.TextField()
    placed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    placed_at = models.DateTimeField(default=timezone.now)
    placed_signature = models.ForeignKey("audit.Signature", on_delete=models.PROTECT, related_name="+")
    released_at = models.DateTimeField(null=True, blank=True)
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    release_reason = models.TextField(blank=True)
    released_signature = models.ForeignKey(
        "audit.Signature", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    version = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["-placed_at", "id"]
        constraints = [models.UniqueConstraint(fields=["unit", "hold_number"], name="legal_hold_number_unique")]

    def __str__(self) -> str:
        return self.hold_number

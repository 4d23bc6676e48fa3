import secrets

from django.db import models
from django.utils import timezone


def new_epoch() -> str:
    """A fresh stream epoch: random, so a restored or reset stream never reuses an earlier one."""
    return secrets.token_hex(8)


class UnitSequence(models.Model):
    """The per-unit counter behind `seq`.

    Locked FOR UPDATE by the committing transaction, so seqs are handed out in commit order and
    a rolled-back transaction gives its numbers back. An auto-increment id cannot do this: ids are
    taken at INSERT time and rows commit out of id order, which would let a client see seq 7
    before seq 6 exists and wrongly conclude that 6 was lost.
    """

    # (By name, not import: events sits below accounts, which publishes through it.)
    unit = models.OneToOneField("accounts.Unit", primary_key=True, on_delete=models.CASCADE, related_name="sequence")
    last_seq = models.BigIntegerField(default=0)
    # The stream's epoch: which numbering `last_seq` belongs to. Renewed when the seqs can no longer
    # continue what clients saw (a reset outbox, a restored database): see backend/events/epochs.py.
    epoch = models.CharField(max_length=32, default=new_epoch)

    def __str__(self) -> str:
        return f"{self.unit_id}@{self.epoch}:{self.last_seq}"


class OutboxEvent(models.Model):
    """One update a unit's clients can see, written in the transaction that made the change.

    `frame` is the exact JSON text sent to WebSocket clients (serialized once, here).
    `published_at` is set once the event has been handed to the channel layer; the sweeper
    publishes whatever committed but stayed unpublished.
    """

    id = models.BigAutoField(primary_key=True)
    unit = models.ForeignKey("accounts.Unit", on_delete=models.CASCADE, related_name="+")
    seq = models.BigIntegerField()
    entity = models.CharField(max_length=16)
    action = models.CharField(max_length=16)
    object_id = models.UUIDField()
    frame = models.TextField()
    # The `activity` frames (one per line) of the audit entries that describe this update, for
    # clients of the activity feed; empty when no person's action is behind it.
    activity = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["unit", "seq"], name="outbox_unit_seq_unique")]
        indexes = [
            models.Index(
                fields=["created_at"],
                name="outbox_unpublished_idx",
                condition=models.Q(published_at__isnull=True),
            ),
        ]
        ordering = ["unit", "seq"]

    def __str__(self) -> str:
        return f"{self.unit_id}#{self.seq} {self.entity}.{self.action}"

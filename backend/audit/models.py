"""The audit trail: one entry per change to a record, as an inspector reads it.

Entries are appended by `services.journal_write` only, in the transaction of the change and its
outbox events, and are never changed: the database itself refuses UPDATE, DELETE and TRUNCATE on
these tables (triggers, `db.py`, installed by migration 0002). Each unit's entries form a hash
chain (`chain.py`): `position` counts them 1, 2, 3, ... and `hash` covers the entry and the
previous entry's hash, so an edit, a deletion or an insertion shows in `verify`.

Who did it is copied into the entry (username, full name, role), not referenced: an entry must
read the same after the user is renamed, moved or deactivated. Jobs and signatures are referenced
by id alone for the same reason (jobs are pruned after JOB_RETENTION_DAYS).
"""

from __future__ import annotations

import uuid

from django.db import models


class AuditEntry(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # (By name, not import: audit sits below accounts, which records its lockouts here.)
    unit = models.ForeignKey("accounts.Unit", on_delete=models.PROTECT, related_name="+", db_index=False)
    position = models.BigIntegerField()  # 1, 2, 3, ... within the unit's chain
    at = models.DateTimeField()  # server time (UTC), taken under the unit's lock
    actor_id = models.UUIDField(null=True, blank=True)
    actor_username = models.CharField(max_length=150)
    actor_full_name = models.CharField(max_length=300, blank=True)
    actor_role = models.CharField(max_length=16, blank=True)
    entity = models.CharField(max_length=16)  # crate | withdrawal | destruction | transfer | user
    record_id = models.UUIDField()
    record_number = models.CharField(max_length=150, blank=True)  # CR-…, WR-…, or a username
    action = models.CharField(max_length=24)
    version = models.PositiveIntegerField(null=True, blank=True)  # the record's version after the change
    changes = models.JSONField(default=dict, blank=True)  # {field: [old, new]}
    reason = models.TextField(blank=True)
    # The electronic signature under which a decision was made (its meaning and time show with it).
    signature = models.ForeignKey("Signature", on_delete=models.PROTECT, null=True, blank=True, related_name="entries")
    # The signature as it was when the entry was written, and its binding to the entry's record
    # (chain.signature_digest; inside `hash`): verify compares it with the rows. None before 0008.
    signature_digest = models.CharField(max_length=64, null=True, blank=True)
    job_id = models.UUIDField(null=True, blank=True)
    client_ip = models.CharField(max_length=45, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    seq = models.BigIntegerField(null=True, blank=True)  # the unit's seq of the update this entry describes
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        verbose_name_plural = "audit entries"
        ordering = ["unit", "position"]
        constraints = [models.UniqueConstraint(fields=["unit", "position"], name="audit_unit_position_unique")]
        indexes = [
            # The unit's trail, newest first (`at`, then the chain's order for one moment), whole or
            # filtered by what people filter by; chosen by EXPLAIN on a million entries
            # (docs/performance.md, "Audit trail").
            models.Index(fields=["unit", "at", "position"], name="audit_unit_at_idx"),
            models.Index(fields=["unit", "entity", "at"], name="audit_unit_entity_idx"),
            models.Index(fields=["unit", "actor_username", "at"], name="audit_unit_actor_idx"),
            models.Index(fields=["unit", "action", "at"], name="audit_unit_action_idx"),
            # A record's history (and the 409's "what changed since your version").
            models.Index(fields=["record_id", "at"], name="audit_record_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.unit_id}#{self.position} {self.actor_username} {self.action} {self.record_number}"


class AuditPurge(models.Model):
    """The record of a retention purge: the unit's entries up to `through_position` (all older than
    `before`, and older than AUDIT_RETENTION_YEARS) were deleted. The unit's chain continues from
    `through_hash`, so `verify` checks the kept entries against it. As immutable as the entries."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    unit = models.ForeignKey("accounts.Unit", on_delete=models.PROTECT, related_name="+")
    through_position = models.BigIntegerField()
    through_hash = models.CharField(max_length=64)
    entries = models.BigIntegerField()
    before = models.DateTimeField()
    purged_by = models.CharField(max_length=150)
    reason = models.TextField()
    at = models.DateTimeField()

    class Meta:
        ordering = ["unit", "through_position"]

    def __str__(self) -> str:
        return f"{self.unit_id}: purged through #{self.through_position}"


class Signature(models.Model):
    """An electronic signature (21 CFR Part 11 §11.50, §11.200): the signer re-authenticated with
    their password at `signed_at` and declared `meaning` (approved, rejected, returned). What it was
    applied to is in `SignedRecord` (one row per record; a bulk decision is one signature over many)
    and in the decision's audit entries (`signature_id`). The password is never stored: only the
    fact that it was checked. Append-only, like the entries (db.py)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    unit = models.ForeignKey("accounts.Unit", on_delete=models.PROTECT, related_name="+")
    signer_id = models.UUIDField()
    signer_username = models.CharField(max_length=150)
    signer_full_name = models.CharField(max_length=300, blank=True)
    meaning = models.CharField(max_length=16)
    action = models.CharField(max_length=16)  # approve | reject | send_back
    entity = models.CharField(max_length=16)  # withdrawal | destruction | transfer
    signed_at = models.DateTimeField()
    client_ip = models.CharField(max_length=45, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["signed_at"]

    def __str__(self) -> str:
        return f"{self.signer_username} {self.meaning} at {self.signed_at:%Y-%m-%d %H:%M:%S}"


class SignedRecord(models.Model):
    """A signature applied to one record at one version: `binding` is SHA-256 over the signature
    (signer, meaning, time) and the record's content as the decision left it (chain.binding_hash).
    Recomputed from the record as it is now, it matches only while the record is unchanged: a
    signature cannot be copied to another record or survive an edit unnoticed."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    signature = models.ForeignKey(Signature, on_delete=models.PROTECT, related_name="records")
    entity = models.CharField(max_length=16)
    record_id = models.UUIDField()
    record_number = models.CharField(max_length=150, blank=True)
    version = models.PositiveIntegerField()
    binding = models.CharField(max_length=64)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["signature", "record_id"], name="signed_record_once")]
        indexes = [models.Index(fields=["record_id"], name="signed_record_idx")]

    def __str__(self) -> str:
        return f"{self.record_number} v{self.version} signed ({self.signature_id})"


class AuditCheckpoint(models.Model):
    """A unit's chain head as it was at `at`, signed with a key the database does not hold
    (keys.py): Ed25519 over `checkpoints.payload` (id, unit, position, hash, purged_through, at).
    `purged_through` is how far the unit's purges reached then: a purge record no checkpoint
    covers was not made by the purge service. Written to an append-only sink outside the database
    too (sinks.py). As immutable as the entries (db.py)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No foreign key: a checkpoint must outlive its unit's row, so that a wiped unit still shows.
    unit_id = models.UUIDField()
    unit_code = models.CharField(max_length=32)
    position = models.BigIntegerField()
    hash = models.CharField(max_length=64)
    purged_through = models.BigIntegerField(default=0)
    at = models.DateTimeField()
    key_id = models.CharField(max_length=64)
    signature = models.CharField(max_length=128)  # base64 of the 64-byte Ed25519 signature

    class Meta:
        ordering = ["unit_id", "position", "at"]
        indexes = [models.Index(fields=["unit_id", "position", "at"], name="audit_checkpoint_unit_idx")]

    def __str__(self) -> str:
        return f"{self.unit_code}#{self.position} at {self.at:%Y-%m-%d %H:%M:%S} ({self.key_id})"


class AuditVerification(models.Model):
    """The scheduled verification's state of one unit: whether its chain held, how far it was
    checked (the checkpoint the next, incremental, run starts from) and when. Operational state,
    not evidence: a run starts from a checkpoint whose signature it checks again, so an edited row
    costs at most a full run (the next one also checks everything once a day)."""

    unit_id = models.UUIDField(primary_key=True)
    unit_code = models.CharField(max_length=32)
    ok = models.BooleanField()
    first_bad = models.JSONField(null=True, blank=True)
    through_checkpoint = models.UUIDField(null=True, blank=True)
    entries = models.BigIntegerField(default=0)  # entries read by the last run
    checked_at = models.DateTimeField()
    full_at = models.DateTimeField(null=True, blank=True)  # the last run that read the whole chain
    notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["unit_code"]

    def __str__(self) -> str:
        return f"{self.unit_code}: {'ok' if self.ok else 'BROKEN'} at {self.checked_at:%Y-%m-%d %H:%M:%S}"


class AuditReview(models.Model):
    """A review of a unit's audit trail (EU GMP Annex 11 §9: audit trails "regularly reviewed"):
    `reviewer` signed (meaning `reviewed`) that they read the unit's entries from `from_position`
    through `through_position` (the last entry at or before `through_at`). Entries in that range
    are reviewed, except the reviewer's own (four eyes: someone else must review those; they stay
    unreviewed, and the next review starts at the first of them). `next_unreviewed` is the
    lowest position left unreviewed after this review (where the next one starts). As immutable
    as the entries (db.py)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    unit = models.ForeignKey("accounts.Unit", on_delete=models.PROTECT, related_name="+")
    from_position = models.BigIntegerField()
    through_position = models.BigIntegerField()
    through_at = models.DateTimeField()
    through_hash = models.CharField(max_length=64)  # the chain head the review signed off
    next_unreviewed = models.BigIntegerField()
    entries = models.BigIntegerField(default=0)  # how many entries this review signed off
    reviewer_id = models.UUIDField()
    reviewer_username = models.CharField(max_length=150)
    reviewer_full_name = models.CharField(max_length=300)
    signature = models.ForeignKey(Signature, on_delete=models.PROTECT, related_name="+")
    signed_at = models.DateTimeField()
    comment = models.TextField()

    class Meta:
        ordering = ["unit", "-signed_at"]
        indexes = [models.Index(fields=["unit", "from_position", "through_position"], name="audit_review_range_idx")]

    def __str__(self) -> str:
        return f"{self.unit_id} #{self.from_position}..#{self.through_position} reviewed by {self.reviewer_username}"

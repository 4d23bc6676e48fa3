from django.contrib import admin

from backend.common.admin import ReadOnlyAdmin

from .models import AuditCheckpoint, AuditEntry, AuditPurge, AuditReview, AuditVerification, Signature, SignedRecord


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ["at", "unit", "position", "actor_username", "action", "entity", "record_number", "reason"]
    list_filter = ["unit", "entity", "action"]
    search_fields = ["record_number", "actor_username", "reason"]
    date_hierarchy = "at"


@admin.register(AuditPurge)
class AuditPurgeAdmin(ReadOnlyAdmin):
    list_display = ["at", "unit", "through_position", "entries", "before", "purged_by"]


@admin.register(Signature)
class SignatureAdmin(ReadOnlyAdmin):
    list_display = ["signed_at", "unit", "signer_username", "meaning", "entity", "action"]
    list_filter = ["unit", "meaning"]
    search_fields = ["signer_username"]


@admin.register(SignedRecord)
class SignedRecordAdmin(ReadOnlyAdmin):
    list_display = ["record_number", "entity", "version", "signature"]
    search_fields = ["record_number"]


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(ReadOnlyAdmin):
    list_display = ["at", "unit_code", "position", "purged_through", "key_id"]
    list_filter = ["unit_code", "key_id"]


@admin.register(AuditVerification)
class AuditVerificationAdmin(ReadOnlyAdmin):
    list_display = ["unit_code", "ok", "checked_at", "full_at", "entries"]


@admin.register(AuditReview)
class AuditReviewAdmin(ReadOnlyAdmin):
    list_display = ["signed_at", "unit", "from_position", "through_position", "entries", "reviewer_username"]
    list_filter = ["unit"]

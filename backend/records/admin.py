from django.contrib import admin

from backend.common.admin import ReadOnlyAdmin

from .models import (
    Crate,
    DestructionRequest,
    LegalHold,
    NumberCounter,
    SendBackRecord,
    TransferRequest,
    WithdrawalRequest,
)


@admin.register(Crate)
class CrateAdmin(ReadOnlyAdmin):
    list_display = ["crate_number", "unit", "status", "location", "destruction_due", "version"]
    list_filter = ["unit", "status"]
    search_fields = ["crate_number", "location"]
    # State changes go through services (and their events); the admin is for looking.
    readonly_fields = [f.name for f in Crate._meta.fields]


class RequestAdmin(ReadOnlyAdmin):
    list_display = ["request_number", "unit", "status", "created_by", "created_at", "version"]
    list_filter = ["unit", "status"]
    search_fields = ["request_number", "reason"]
    filter_horizontal = ["crates"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields] + ["crates"]


admin.site.register(WithdrawalRequest, RequestAdmin)
admin.site.register(DestructionRequest, RequestAdmin)
admin.site.register(TransferRequest, RequestAdmin)


@admin.register(SendBackRecord)
class SendBackRecordAdmin(ReadOnlyAdmin):
    list_display = ["entity", "request_id", "unit", "created_by", "created_at"]
    list_filter = ["unit", "entity"]
    readonly_fields = [f.name for f in SendBackRecord._meta.fields]


@admin.register(NumberCounter)
class NumberCounterAdmin(ReadOnlyAdmin):
    list_display = ["scope", "prefix", "year", "last"]
    readonly_fields = ["scope", "prefix", "year", "last"]


@admin.register(LegalHold)
class LegalHoldAdmin(ReadOnlyAdmin):
    """Placed and released through the API (signed, audited); the admin is for looking."""

    list_display = ["hold_number", "unit", "placed_by", "placed_at", "released_at"]
    list_filter = ["unit"]
    search_fields = ["hold_number", "reason"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in LegalHold._meta.fields] + ["crates"]

from django.contrib import admin

from backend.common.admin import ReadOnlyAdmin

from .models import Job


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "unit", "status", "requested_by", "created_at", "finished_at"]
    list_filter = ["status", "kind", "unit"]
    readonly_fields = [f.name for f in Job._meta.fields]

from django.contrib import admin

from backend.common.admin import ReadOnlyAdmin

from .models import OutboxEvent, UnitSequence


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyAdmin):
    list_display = ["unit", "seq", "entity", "action", "object_id", "created_at", "published_at"]
    list_filter = ["unit", "entity", "action"]
    search_fields = ["object_id"]
    readonly_fields = [f.name for f in OutboxEvent._meta.fields]


@admin.register(UnitSequence)
class UnitSequenceAdmin(ReadOnlyAdmin):
    list_display = ["unit", "last_seq"]
    readonly_fields = ["unit", "last_seq"]

"""The admin site looks at domain records; it never adds, edits or deletes them (services do, with
their events and audit entries). `delete_selected` is removed site-wide (backend/config/apps)."""

from __future__ import annotations

from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    """View only: no add, no change, no delete, whatever the user's permissions."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
